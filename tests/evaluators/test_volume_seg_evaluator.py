"""VolumeSegEvaluator on volumes with hand-computed answers: 3D Dice of two boxes, HD95 in mm with anisotropic
spacing, overlapping class_values regions, absent and one-sided classes, resizing to native size, the model's
``scored`` honoured, missing spacing reported in voxels apart, and the sample-count check."""
from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest
import torch

from evaluators.volume_seg import VolumeSegEvaluator, volume_metrics

S, H = 6, 16


def _batch(gt: torch.Tensor, probs: torch.Tensor, spacing=(5.0, 2.0, 2.0), values=None, sid=0):
    meta = dict(video_id=f"v{sid}", sample_id=sid, num_frames=S, frame_idx=0)
    if spacing is not None:
        meta["voxel_spacing"] = spacing
    if values is not None:
        meta["class_values"] = values
    t = probs.shape[0]
    batch = dict(scored=torch.ones(1, t, dtype=torch.bool), has_ann=torch.ones(1, t, dtype=torch.bool),
                 gt_full=[gt], meta=[meta])
    return batch, {"probs": probs[None]}


def _box(z0, z1, y0, y1, x0, x1, value=1):
    v = torch.zeros(S, H, H, dtype=torch.int64)
    v[z0:z1, y0:y1, x0:x1] = value
    return v


def test_dice_hd95_and_slice_dice_known_boxes():
    gt = _box(1, 4, 4, 8, 4, 8)                       # 3 slices × 4 × 4 = 48 voxels
    pred = (_box(2, 5, 4, 8, 4, 8) > 0).float()      # shifted by one slice (dz = 5 mm)
    ev = VolumeSegEvaluator("d", ["organ"], num_samples=1)
    ev.process(*_batch(gt, pred[:, None]))
    r = ev.evaluate()
    assert r["Dice3D_organ"] == pytest.approx(2 * 32 / 96) and r["IoU3D_organ"] == pytest.approx(32 / 64)
    assert r["HD95_organ"] == pytest.approx(5.0)      # the shifted top/bottom faces: one slice = 5 mm
    # slices 1..4 show the organ: Dice 0 (gt only), 1, 1, 0 (pred only)
    assert r["SliceDice_organ"] == pytest.approx(0.5)
    assert r["mDice"] == r["mDice3D"] and r["num_volumes"] == 1


def test_overlapping_regions_absent_and_one_sided_classes(caplog):
    gt = _box(1, 3, 2, 6, 2, 6, value=1) + _box(1, 3, 8, 12, 8, 12, value=2)   # "kidney" 1 and "tumour" 2
    p = torch.zeros(S, 3, H, H)
    p[:, 0] = (gt > 0).float()          # region {1, 2}: exact
    p[:, 1] = (gt == 2).float()         # region {2}: exact
    p[:, 2] = (_box(4, 5, 0, 2, 0, 2) > 0).float()  # region {3} is absent from the GT: invented
    names = ["kidney_and_masses", "masses", "cyst"]
    ev = VolumeSegEvaluator("k", names, num_samples=2)
    ev.process(*_batch(gt, p, values=[[1, 2], [2], [3]], sid=0))
    ev.process(*_batch(gt, torch.zeros(S, 3, H, H), values=[[1, 2], [2], [3]], sid=1))  # predicts nothing
    r = ev.evaluate()
    assert r["Dice3D_kidney_and_masses"] == pytest.approx(0.5)  # 1 and 0: the miss counts
    assert r["Dice3D_cyst"] == 0.0                               # invented once, absent once (NaN, left out)
    diag = math.sqrt((S * 5) ** 2 + (H * 2) ** 2 * 2)
    assert r["HD95_cyst"] == pytest.approx(diag)
    assert r["HD95_masses"] == pytest.approx((0 + diag) / 2)
    m = volume_metrics(np.zeros((2, 3, 3), bool), np.zeros((2, 3, 3), bool), (1, 1, 1))
    assert all(math.isnan(v) for v in m.values())


def test_resize_scored_missing_spacing_and_count(tmp_path, caplog):
    gt = _box(0, 6, 0, 8, 0, 8)
    p = torch.zeros(S, 1, H // 2, H // 2)
    p[:, :, :4, :4] = 1.0                             # at half resolution: the same box at native size
    ev = VolumeSegEvaluator("r", ["organ"], output_dir=tmp_path, num_samples=1)
    batch, out = _batch(gt, p, spacing=None)
    out["scored"] = torch.tensor([[False] + [True] * (S - 1)])  # the model leaves slice 0 out
    with caplog.at_level(logging.INFO):
        ev.process(batch, out)
    r = ev.evaluate()
    assert r["Dice3D_organ"] == pytest.approx(1.0) and "HD95_organ" not in r and r["HD95px_organ"] == 0.0
    assert "no voxel_spacing" in caplog.text and "v0" in caplog.text
    assert json.loads((tmp_path / "metrics.json").read_text())["mDice3D"] == pytest.approx(1.0)
    assert (tmp_path / "per_volume.csv").read_text().splitlines()[1].startswith("v0,voxel,")
    ev2 = VolumeSegEvaluator("r", ["organ"], num_samples=2)
    ev2.process(*_batch(gt, p))
    with pytest.raises(RuntimeError, match="evaluated 1 distinct samples but the dataset has 2"):
        ev2.evaluate()


def test_volume_metrics_reach_the_results_table(tmp_path):
    from tools import results_table

    run = tmp_path / "ct"
    ev_dir = run / "eval" / "ct_test"
    (run / "model_info.json").parent.mkdir(parents=True)
    (run / "model_info.json").write_text(json.dumps({"model": "SAM2InContext", "params": 1_350_000,
                                                     "gflops_per_clip": 1.0}))
    gt = _box(1, 4, 4, 8, 4, 8)
    ev = VolumeSegEvaluator("ct_test", ["organ"], output_dir=ev_dir, num_samples=1)
    ev.process(*_batch(gt, (_box(2, 5, 4, 8, 4, 8) > 0).float()[:, None]))
    ev.evaluate()
    lines = results_table.table([str(run)]).splitlines()
    assert "| mDice | mIoU | Dice organ | HD95 (mm) | slice Dice | iter |" in lines[0]
    assert "| 0.6667 | 0.5000 | 0.6667 | 5.0000 | 0.5000 |" in lines[2]
