"""core.structures: collate stacks every tensor field of equal shape (dicts of tensors per key), keeps the rest
as lists, refuses samples with different fields; to_device reaches tensors inside dicts, lists and tuples."""
import pytest
import torch

from core.structures import collate, to_device


def _sample(i: int, h: int = 4) -> dict:
    return dict(video=torch.full((3, 3, h, h), float(i)), masks=torch.zeros(3, 2, h, h, dtype=torch.bool),
                scored=torch.tensor([False, True, False]), spacing=torch.tensor([0.3, 0.3]),
                new_field=torch.arange(5) + i,  # a field no list of keys knows about
                gt_full=torch.zeros(1, 10 + i, 12, dtype=torch.long),  # native sizes differ between videos
                views={"global": torch.ones(2, 3, 8, 8) * i, "frame_idx": {"global": torch.arange(6).view(2, 3)}},
                meta=dict(video_id=f"v{i}", sample_id=i, frame_idx=7))


def test_collate_stacks_every_equal_shape_tensor_and_keeps_the_rest_as_lists():
    batch = collate([_sample(0), _sample(1)])
    assert batch["video"].shape == (2, 3, 3, 4, 4) and batch["video"][1].eq(1).all()
    assert batch["masks"].shape == (2, 3, 2, 4, 4) and batch["scored"].shape == (2, 3)
    assert batch["spacing"].shape == (2, 2)
    assert torch.equal(batch["new_field"], torch.stack([torch.arange(5), torch.arange(5) + 1]))
    assert isinstance(batch["gt_full"], list) and [g.shape[1] for g in batch["gt_full"]] == [10, 11]
    assert batch["views"]["global"].shape == (2, 2, 3, 8, 8)
    assert batch["views"]["frame_idx"]["global"].shape == (2, 2, 3)
    assert batch["meta"] == [_sample(0)["meta"], _sample(1)["meta"]]  # metas stay one dict per sample
    same_size = collate([_sample(0), _sample(0)])
    assert torch.is_tensor(same_size["gt_full"]) and same_size["gt_full"].shape == (2, 1, 10, 12)


def test_collate_refuses_samples_with_different_fields_and_an_empty_list():
    a, b = _sample(0), _sample(1)
    del b["spacing"]
    with pytest.raises(ValueError, match="sample 1 has fields"):
        collate([a, b])
    with pytest.raises(ValueError, match="at least one sample"):
        collate([])


def test_to_device_reaches_nested_tensors_and_leaves_other_values():
    batch = collate([_sample(0), _sample(1)])
    batch["lists"] = [torch.ones(2), (torch.zeros(1), "x")]
    moved = to_device(batch, torch.device("meta"))
    assert moved["video"].device.type == "meta" and moved["views"]["frame_idx"]["global"].device.type == "meta"
    assert moved["gt_full"][1].device.type == "meta" and moved["lists"][1][0].device.type == "meta"
    assert moved["lists"][1][1] == "x" and isinstance(moved["lists"][1], tuple)
    assert moved["meta"] == batch["meta"]
