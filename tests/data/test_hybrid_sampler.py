"""Hybrid Temporal Sampling: properties of the clips it draws."""
from __future__ import annotations

import numpy as np
import pytest

from core.registry import SAMPLERS, build
from data_schedule.samplers.frame_samplers import hybrid


def _draw(sampler, ref, n, clip_len, seed):
    return sampler(ref, n, clip_len, np.random.default_rng(seed))


@pytest.mark.parametrize("ref,n", [(0, 60), (30, 60), (59, 60), (5, 12)])
def test_reference_present_sorted_in_video_and_local_part_near_it(ref, n):
    s = hybrid(local_window=3, global_share=0.5)
    for seed in range(50):
        idx, t = _draw(s, ref, n, 7, seed)
        assert len(idx) == 7 and idx[t] == ref
        assert idx == sorted(idx) and 0 <= idx[0] and idx[-1] < n
        near = [f for f in idx if abs(f - ref) <= 3 and f != ref]
        assert len(near) >= 3  # the 3 local neighbours (global frames may also fall near)
        assert len(set(idx)) == 7  # enough frames in these videos: no repeats


def test_global_frames_spread_over_the_video_with_varying_intervals():
    s = hybrid(local_window=3, global_share=0.5)
    far, gaps = [], []
    for seed in range(400):
        idx, t = _draw(s, 40, 80, 7, seed)
        outside = [f for f in idx if abs(f - 40) > 3]
        assert len(outside) == 3  # round(0.5 * 6) global frames, all outside the local span
        far += outside
        gaps += list(np.diff(idx))
    counts = np.histogram(far, bins=8, range=(0, 80))[0]
    assert counts.min() > 0.4 * counts.mean()  # drawn from the whole video, not clustered
    assert len(set(gaps)) > 20  # intervals vary


def test_deterministic_given_the_seed_and_different_across_seeds():
    s = hybrid()
    assert _draw(s, 20, 50, 7, 3) == _draw(s, 20, 50, 7, 3)
    assert len({tuple(_draw(s, 20, 50, 7, k)[0]) for k in range(20)}) > 10


def test_global_share_bounds_and_short_videos():
    all_local = hybrid(local_window=3, global_share=0.0)
    for seed in range(20):
        idx, t = _draw(all_local, 10, 40, 7, seed)
        assert max(abs(f - 10) for f in idx) <= 3 and idx[t] == 10
    idx, t = _draw(hybrid(global_share=1.0), 2, 3, 7, 0)  # 3-frame video: repeats, still valid
    assert len(idx) == 7 and idx[t] == 2 and idx == sorted(idx) and max(idx) <= 2
    with pytest.raises(ValueError, match="global_share"):
        hybrid(global_share=1.5)
    with pytest.raises(ValueError, match="rng"):
        hybrid()(5, 20, 7, None)


def test_registered_and_eval_mapper_keeps_centered_clips():
    from data_schedule.mappers.clip_mapper import ClipEvalMapper, ClipTrainMapper

    assert isinstance(build(SAMPLERS, {"name": "hybrid", "local_window": 2}), hybrid)
    train = ClipTrainMapper(clip_len=7, frame_sampler={"name": "hybrid"})
    assert isinstance(train.frame_sampler, hybrid)
    ev = ClipEvalMapper(clip_len=11)
    assert ev.frame_sampler(30, 60, 11, None) == (list(range(25, 36)), 5)


def test_hts_config_train_samples_carry_the_annotated_frame_and_replay_by_seed(synth_root):
    from pathlib import Path

    from core.catalog import DatasetCatalog
    from core.config import load_config
    from core.registry import MAPPERS

    cfg = load_config(Path(__file__).resolve().parents[2] / "configs/cardiac/lgrnet_tiny_hts.py")
    mapper = build(MAPPERS, cfg.data.train_mapper)
    meta = DatasetCatalog.get("echo_synth_random_train")[0]
    a, b = mapper(meta, seed=7), mapper(meta, seed=7)
    t = a["frame_idx"].tolist().index(meta["frame_idx"])  # the reference frame is in the clip
    assert bool(a["has_ann"][t])
    assert a["frame_idx"].tolist() == sorted(a["frame_idx"].tolist())
    assert a["frame_idx"].tolist() == b["frame_idx"].tolist() and a["video"].equal(b["video"])
    assert a["masks"][t].any()  # the annotated frame's labels come with it


def test_annotated_pair_spans_the_two_frames_without_repeats():
    import numpy as np

    from core.registry import SAMPLERS, build

    s = build(SAMPLERS, dict(name="annotated_pair"))
    rng = np.random.default_rng(0)
    idx, t = s(10, 60, 8, rng, annotated=[10, 30])  # 20 apart: 8 frames evenly from 10 to 30
    assert idx[0] == 10 and idx[-1] == 30 and len(set(idx)) == 8 and idx[t] == 10
    idx, t = s(10, 60, 8, rng, annotated=[7, 10])  # 3 apart: consecutive frames around both
    assert idx == list(range(5, 13)) and idx[t] == 10  # the spare 4 frames split around them
    idx, t = s(58, 60, 8, rng, annotated=[56, 58])  # near the end: clamped into the video
    assert idx == list(range(52, 60)) and idx[t] == 58
    idx, t = s(10, 60, 5, rng, annotated=[10])  # no other annotated frame: centred
    assert idx == [8, 9, 10, 11, 12] and t == 2
    far = build(SAMPLERS, dict(name="annotated_pair", max_gap=5))
    assert far(10, 60, 5, rng, annotated=[10, 30])[0] == [8, 9, 10, 11, 12]
    picks = {tuple(s(30, 60, 4, np.random.default_rng(i), annotated=[10, 30, 50])[0]) for i in range(20)}
    assert {p[0] for p in picks} == {10, 30}  # the previous or the next annotated frame
