import pytest

from data_schedule.samplers import InferenceSampler, TrainingSampler
from data_schedule.samplers.frame_samplers import centered


def take(it, n):
    return [next(it) for _ in range(n)]


def test_centered_clip_keeps_reference_at_centre_and_clamps_at_ends():
    s = centered()
    assert s(20, 50, 7) == ([17, 18, 19, 20, 21, 22, 23], 3)
    assert s(1, 50, 11) == ([0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6], 5)
    assert s(49, 50, 11) == ([44, 45, 46, 47, 48, 49, 49, 49, 49, 49, 49], 5)
    assert centered(stride=2)(10, 50, 3) == ([8, 10, 12], 1)


def test_training_stream_covers_each_epoch_once_and_is_seeded():
    s = TrainingSampler(10, seed=3)
    items = take(iter(s), 20)
    assert [p for p, _ in items] == list(range(20))
    assert sorted(i for _, i in items[:10]) == list(range(10))
    assert sorted(i for _, i in items[10:]) == list(range(10))
    assert items[:10] != items[10:]  # a new permutation each epoch
    assert take(iter(TrainingSampler(10, seed=3)), 20) == items
    assert take(iter(TrainingSampler(10, seed=4)), 10) != items[:10]


def test_training_stream_resumes_at_start_position():
    full = take(iter(TrainingSampler(7, seed=0)), 30)
    assert take(iter(TrainingSampler(7, seed=0, start=13)), 17) == full[13:]


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_partition_the_single_process_stream(world):
    single = take(iter(TrainingSampler(9, seed=1)), 6 * world)
    merged = []
    for r in range(world):
        merged += take(iter(TrainingSampler(9, seed=1, rank=r, world_size=world)), 6)
    assert sorted(merged) == sorted(single)


def test_inference_sampler_shards_every_index_exactly_once():
    for size, world in [(10, 3), (5, 2), (2, 4), (0, 2)]:
        got = [i for r in range(world) for i in InferenceSampler(size, r, world)]
        assert got == list(range(size))
