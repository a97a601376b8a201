"""Volume evaluation: a whole CT volume is one sample (the whole-video protocol, ``per_video=True`` with a
``VideoEvalMapper`` or ``InContextEvalMapper``: every slice scored, ``gt_full`` at native size), scored in 3D.

Per volume v and class c (c's ground truth = ``gt_full ∈ class_values[c]``, the meta's ``class_values``, default
value c + 1; classes may overlap, e.g. KiTS23's regions; c's prediction = its probability, resized bilinearly to
the native slice size, > ``threshold`` — per class, not an argmax, for the same reason):
- ``Dice3D_<c>`` / ``IoU3D_<c>``: Dice 2|P∩G| / (|P| + |G|) and IoU over all scored voxels of the volume; NaN when
  c is in neither (left out of means), 0 when in one only;
- ``HD95_<c>``: the 95th-percentile symmetric surface distance in mm (``evaluators.metrics.hd95`` in 3D with the
  meta's ``voxel_spacing`` (dz, dy, dx)); NaN when c is in neither; when c is in exactly one of them, the
  volume's diagonal in mm (a missed or invented organ counts as the worst distance instead of vanishing from the
  mean). A volume without ``voxel_spacing`` is measured in voxels and reported apart, as ``HD95px_<c>`` /
  ``mHD95px`` (never mixed with millimetres; the log names it);
- ``SliceDice_<c>``: the 2D Dice of each slice where c is in the prediction or the ground truth, averaged over
  those slices.
Each per-class metric is the NaN-aware mean over volumes; ``mDice3D``, ``mIoU3D``, ``mHD95``, ``mSliceDice``
average the classes; ``mDice`` / ``mIoU`` and ``Dice_<c>`` / ``IoU_<c>`` repeat the 3D values for the tools that
read those names (best checkpoint, results table, the log line). ``num_samples`` / ``num_volumes`` count volumes. ``per_volume.csv``: one row per
volume with every class's metrics.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from core import comm
from core.registry import EVALUATORS
from evaluators.metrics import hd95
from evaluators.video_seg import (_atomic_write_text, _nanmean, _to_csv, _unique_by_id, check_sample_count,
                                  checked_probs, scored_frames)

logger = logging.getLogger(__name__)


def volume_metrics(pred: np.ndarray, gt: np.ndarray, spacing: tuple[float, float, float] | None,
                   with_hd95: bool = True) -> dict:
    """3D Dice, IoU, HD95 (spacing None: voxels; ``with_hd95`` False: NaN) and slice Dice of two boolean volumes
    S×H×W."""
    inter, p, g = float((pred & gt).sum()), float(pred.sum()), float(gt.sum())
    if p + g == 0:
        return dict(dice=np.nan, iou=np.nan, hd95=np.nan, slice_dice=np.nan)
    sp = spacing or (1.0, 1.0, 1.0)
    diagonal = float(np.sqrt(sum((n * s) ** 2 for n, s in zip(gt.shape, sp))))
    si = (pred & gt).reshape(len(gt), -1).sum(1)
    ss = pred.reshape(len(gt), -1).sum(1) + gt.reshape(len(gt), -1).sum(1)
    shown = ss > 0
    return dict(dice=2 * inter / (p + g), iou=inter / (p + g - inter),
                hd95=hd95(pred, gt, spacing=sp, missing=diagonal) if with_hd95 else np.nan,
                slice_dice=float(np.mean(2 * si[shown] / ss[shown])))


@EVALUATORS.register()
class VolumeSegEvaluator:
    """Per-volume 3D metrics (see the module docstring).

    Args: dataset_name, class_names, output_dir, num_samples (volumes; checked), as ``VideoSegEvaluator``;
    threshold: probability above which a voxel is predicted (per class); hd95: False skips the surface distances
    (slow on large volumes). Other builder arguments (colors, vis_ids, num_vis) are accepted and unused."""

    def __init__(self, dataset_name: str, class_names: list[str], output_dir: str | Path | None = None,
                 num_samples: int | None = None, threshold: float = 0.5, hd95: bool = True, **_unused):
        self.dataset_name, self.class_names = dataset_name, list(class_names)
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.num_samples, self.threshold, self.hd95 = num_samples, float(threshold), bool(hd95)
        self.results: dict = {}
        self.reset()

    def reset(self) -> None:
        self._records: list[dict] = []

    @torch.no_grad()
    def process(self, batch: dict, outputs: dict) -> None:
        k = len(self.class_names)
        probs = checked_probs(outputs, k, self.dataset_name)
        for b, meta in enumerate(batch["meta"]):
            ts, gts = scored_frames(batch, outputs, b, self.dataset_name)
            gt = gts.cpu().numpy()
            values = meta.get("class_values") or [[c + 1] for c in range(k)]
            spacing = meta.get("voxel_spacing")
            spacing = tuple(float(v) for v in spacing) if spacing is not None else None
            if spacing is None and self.hd95:
                logger.info(f"{self.dataset_name}: volume {meta['video_id']} has no voxel_spacing; its HD95 is in "
                            f"voxels (HD95px_*)")
            rec = dict(sample_id=int(meta["sample_id"]), video_id=str(meta["video_id"]), mm=spacing is not None)
            for c, name in enumerate(self.class_names):
                p = probs[b, ts, c].float()[:, None]  # S×1×H×W, one class at a time (memory)
                if tuple(p.shape[-2:]) != gt.shape[-2:]:
                    p = F.interpolate(p, size=gt.shape[-2:], mode="bilinear", align_corners=False)
                pred = (p[:, 0] > self.threshold).cpu().numpy()
                rec[name] = volume_metrics(pred, np.isin(gt, values[c]), spacing, self.hd95)
            self._records.append(rec)

    def evaluate(self) -> dict:
        gathered = comm.all_gather_object(self._records)
        records = _unique_by_id(r for recs in gathered for r in recs)
        check_sample_count(self.dataset_name, len(records), self.num_samples)
        names = self.class_names
        res: dict = {}
        table = {key: np.array([[r[c][key] for c in names] for r in records]) for key in
                 ("dice", "iou", "hd95", "slice_dice")}
        mm = np.array([r["mm"] for r in records])
        for key, col in (("dice", "Dice3D"), ("iou", "IoU3D"), ("slice_dice", "SliceDice")):
            per_class = _nanmean(table[key], axis=0)
            res.update({f"{col}_{c}": float(v) for c, v in zip(names, per_class)})
            res[f"m{col}"] = float(_nanmean(per_class))
        if self.hd95:
            for flag, col in ((True, "HD95"), (False, "HD95px")):
                if (mm == flag).any():
                    per_class = _nanmean(table["hd95"][mm == flag], axis=0)
                    res.update({f"{col}_{c}": float(v) for c, v in zip(names, per_class)})
                    res[f"m{col}"] = float(_nanmean(per_class))
        res.update({f"Dice_{c}": res[f"Dice3D_{c}"] for c in names})
        res.update({f"IoU_{c}": res[f"IoU3D_{c}"] for c in names})
        res.update(mDice=res["mDice3D"], mIoU=res["mIoU3D"], num_samples=len(records), num_volumes=len(records))
        self.results = res
        if self.output_dir is not None and comm.is_main_process():
            rows = []
            for r in records:
                row = {"video_id": r["video_id"], "hd95_unit": "mm" if r["mm"] else "voxel"}
                for c in names:
                    row.update({f"Dice3D_{c}": float(r[c]["dice"]), f"IoU3D_{c}": float(r[c]["iou"]),
                                f"HD95_{c}": float(r[c]["hd95"]), f"SliceDice_{c}": float(r[c]["slice_dice"])})
                rows.append(row)
            self.output_dir.mkdir(parents=True, exist_ok=True)
            clean = {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in res.items()}
            clean["class_names"] = names
            _atomic_write_text(self.output_dir / "metrics.json", json.dumps(clean, indent=2, sort_keys=True))
            _atomic_write_text(self.output_dir / "per_volume.csv", _to_csv(rows))
        return res

