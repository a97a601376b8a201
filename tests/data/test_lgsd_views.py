"""LGSD view generation: global views span long and see most of the frame, local views are short and small."""
from __future__ import annotations

import torch

from core.catalog import DatasetCatalog
from core.registry import MAPPERS, build


def _mapper(**kw):
    return build(MAPPERS, {"name": "LGSDViewMapper", "clip_len": 4, "num_global": 2, "num_local": 3,
                           "global_size": [64, 64], "local_size": [32, 32], "global_span": 12, "local_span": 3, **kw})


def test_view_shapes_spans_and_seeded_replay(synth_root):
    metas = DatasetCatalog.get("echo_synth_unlabeled")
    meta = next(m for m in metas if m["num_frames"] >= 16 and 6 <= m["frame_idx"] <= m["num_frames"] - 6)
    mapper = _mapper()
    out = mapper(meta, seed=11)
    assert out["global"].shape == (2, 4, 3, 64, 64) and out["local"].shape == (3, 4, 3, 32, 32)
    assert 0.0 <= float(out["global"].min()) and float(out["global"].max()) <= 1.0
    g, loc = out["frame_idx"]["global"], out["frame_idx"]["local"]
    for idx in list(g) + list(loc):
        assert idx.tolist() == sorted(idx.tolist()) and 0 <= int(idx.min()) and int(idx.max()) < meta["num_frames"]
    assert all(int(i[-1] - i[0]) == 11 for i in g)  # global views span global_span frames
    assert all(int(i[-1] - i[0]) == 2 for i in loc)  # local views span local_span frames
    again = mapper(meta, seed=11)
    assert torch.equal(again["global"], out["global"]) and torch.equal(again["local"], out["local"])
    other = mapper(meta, seed=12)
    assert not torch.equal(other["global"], out["global"])


def test_local_crops_are_smaller_than_global_ones(synth_root):
    meta = DatasetCatalog.get("echo_synth_unlabeled")[5]
    # identical output sizes, so a crop of a smaller area shows a more magnified, smoother image: compare the
    # mean absolute horizontal gradient over many draws
    mapper = _mapper(global_size=[48, 48], local_size=[48, 48])
    grads = {"global": [], "local": []}
    for seed in range(20):
        out = mapper(meta, seed)
        for k in grads:
            grads[k].append(float(out[k][..., 1:].sub(out[k][..., :-1]).abs().mean()))
    assert sum(grads["local"]) < sum(grads["global"])


def test_bad_arguments_are_named():
    import pytest

    with pytest.raises(ValueError, match="local_span"):
        _mapper(local_span=20)
    with pytest.raises(ValueError, match="num_global"):
        _mapper(num_global=0)


def test_views_of_several_clips_collate_into_batched_tensors(synth_root):
    from data_schedule.build import collate

    metas = DatasetCatalog.get("echo_synth_unlabeled")[:3]
    mapper = _mapper()
    batch = collate([mapper(m, seed=i) for i, m in enumerate(metas)])
    assert batch["global"].shape == (3, 2, 4, 3, 64, 64) and batch["local"].shape == (3, 3, 4, 3, 32, 32)
    assert batch["frame_idx"]["global"].shape == (3, 2, 4) and batch["frame_idx"]["local"].shape == (3, 3, 4)
    assert torch.equal(batch["global"][1], mapper(metas[1], seed=1)["global"])
    assert [m["sample_id"] for m in batch["meta"]] == [m["sample_id"] for m in metas]
