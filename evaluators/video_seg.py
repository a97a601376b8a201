"""Video segmentation evaluator: the scored frames of each sample (``batch["scored"]``, one for an 11-frame test
clip, several for a whole video), per-class Dice / IoU at native resolution.

Flow: ``reset()`` -> ``process(batch, outputs)`` per batch -> ``evaluate()``. ``process`` keeps a few integers per
scored frame (per-class intersection and areas, from ``evaluators.metrics``); ``evaluate`` gathers them from every
rank, counts each (``sample_id``, frame) once and reduces:

- ``Dice_<c>`` / ``IoU_<c>``: mean over scored frames of the frame's score for class c, frames where c is absent
  from both prediction and ground truth left out (NaN); ``mDice`` / ``mIoU``: mean of those over classes.
- ``frame_mDice`` / ``frame_mIoU``: mean over scored frames of the frame's mean over its present classes (a frame
  with no class in either prediction or ground truth has no score and is left out).
- ``video_mDice`` / ``video_mIoU``: mean over videos of the video's mean ``frame_mDice`` / ``frame_mIoU``.
- ``HD95_<c>`` / ``mHD95`` (mm), only when every sample's meta has ``spacing`` (dy, dx): the 95th-percentile
  Hausdorff distance per class and frame, NaN when the class is in neither mask, the frame's diagonal when it is
  in only one (a missed structure is the worst distance, not a gap in the mean); mean over frames, then classes.
- ``num_samples`` (distinct samples), ``num_scored_frames``, ``num_videos``.

A metric with nothing to average (e.g. a class absent from the whole dataset) is NaN in the returned dict and
``null`` in ``metrics.json``. Every rank returns the same dict; only the main process writes files.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import os
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from core import comm
from core.errors import ConfigError
from core.registry import EVALUATORS
from evaluators.metrics import dice_iou, hd95, probs_to_labels, seg_stats
from evaluators.visualize import DEFAULT_COLORS, render_overlay, write_video

logger = logging.getLogger(__name__)



def _nanmean(x: np.ndarray, axis: int | None = None) -> np.ndarray | float:
    """``np.nanmean`` without the all-NaN RuntimeWarning (an all-NaN slice is NaN on purpose)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(x, axis=axis)


def checked_probs(outputs: dict, num_classes: int, dataset_name: str) -> torch.Tensor:
    """``outputs["probs"]``, refused unless B×T×K×H×W with K = ``num_classes``."""
    probs = outputs["probs"]
    if probs.dim() != 5 or probs.shape[2] != num_classes:
        raise ValueError(f"{dataset_name}: probs must be B×T×{num_classes}×H×W, got {tuple(probs.shape)}")
    return probs


def check_sample_count(dataset_name: str, n: int, expected: int | None) -> None:
    """Refuse to report metrics of no sample, or of another number of distinct samples than the dataset has."""
    if n == 0:
        raise RuntimeError(f"{dataset_name}: no samples were processed; nothing to evaluate")
    if expected is not None and n != expected:
        diff = expected - n
        what = f"{diff} missing" if diff > 0 else f"{-diff} more than expected"
        raise RuntimeError(f"{dataset_name}: evaluated {n} distinct samples but the dataset has {expected} "
                           f"({what}); refusing to report partial metrics")


def scored_frames(batch: dict, outputs: dict, b: int, dataset_name: str,
                  allow_none_kept: bool = False) -> tuple[list[int], torch.Tensor]:
    """The scored clip positions of batch item ``b`` and their ``gt_full`` rows (S×H0×W0), checked against
    ``scored`` / ``has_ann`` / ``gt_full``, less the frames the model leaves out: ``outputs["scored"]`` (B×T,
    optional; bool, or 0/1 after the evaluation loop's ``.float()``) marks the frames it wants scored, a subset of
    the batch's (a tracker leaves out the frame it was prompted on with the ground-truth mask). ``allow_none_kept``:
    a sample whose frames the model all leaves out is returned empty instead of refused."""
    sid = int(batch["meta"][b]["sample_id"])
    where = f"{dataset_name}: sample {sid}"
    scored = torch.as_tensor(batch["scored"]).bool()
    ts = [int(t) for t in scored[b].nonzero().flatten()]
    if not ts:
        raise ValueError(f"{dataset_name}: sample {sid} has no scored frame (scored is all False)")
    if "has_ann" in batch and not bool(batch["has_ann"][b, ts].all()):
        raise ValueError(f"{dataset_name}: sample {sid} scores clip frames {ts}, some of which have "
                         "no annotation (has_ann is False)")
    gts = torch.as_tensor(batch["gt_full"][b])
    if gts.dim() != 3 or len(gts) != len(ts):
        raise ValueError(f"{where}: gt_full must be S×H0×W0 with S = {len(ts)} scored frames, got "
                         f"{tuple(gts.shape)}")
    if outputs.get("scored") is None:
        return ts, gts
    keep_all = torch.as_tensor(outputs["scored"]).bool()
    if tuple(keep_all.shape) != tuple(scored.shape):
        raise ValueError(f"{dataset_name}: outputs['scored'] must be B×T like batch['scored'] "
                         f"{tuple(scored.shape)}, got {tuple(keep_all.shape)}")
    keep = keep_all[b].to(scored.device)
    extra = [int(t) for t in (keep & ~scored[b]).nonzero().flatten()]
    if extra:
        raise ValueError(f"{where}: outputs['scored'] marks clip frames {extra} that batch['scored'] does not "
                         f"score (scored frames: {ts}); a model may only leave scored frames out")
    rows = [i for i, t in enumerate(ts) if bool(keep[t])]
    if not rows and not allow_none_kept:
        raise ValueError(f"{where}: the model's outputs['scored'] leaves no frame to score")
    return [ts[i] for i in rows], gts[rows]


@EVALUATORS.register()
class VideoSegEvaluator:
    """Per-class Dice / IoU on each sample's scored frame (``meta['clip_t']``), compared at ``gt_full``'s size.

    Args:
        dataset_name: used in error messages.
        class_names: the K foreground classes, label values ``1..K`` (e.g. ``["LV", "LA", "RA", "RV"]``).
        output_dir: where the main process writes ``metrics.json``, ``per_video.csv``, ``per_sample.csv`` and
            ``vis/*.mp4``; None writes nothing.
        num_samples: the dataset's size; when given, ``evaluate`` raises unless exactly that many distinct
            samples were processed (evaluation never skips silently).
        num_vis: samples with ``sample_id < num_vis`` get an overlay video (only with ``output_dir``), unless
            ``vis_ids`` names the sample ids to visualise.
        vis_fps: frame rate of the overlay videos.
        colors: RGB colour per class for the overlays (default: red, green, blue, yellow, ...).
    """

    def __init__(self, dataset_name: str, class_names: list[str], output_dir: str | Path | None = None,
                 num_samples: int | None = None, num_vis: int = 3, vis_fps: int = 8,
                 colors: list[tuple[int, int, int]] | None = None, vis_ids: list[int] | None = None):
        self.dataset_name = dataset_name
        self.class_names = list(class_names)
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.num_samples = num_samples
        self.num_vis = num_vis
        self.vis_ids = set(range(num_vis)) if vis_ids is None else set(vis_ids)
        self.vis_fps = vis_fps
        k = len(self.class_names)
        self.colors = [tuple(int(v) for v in c) for c in (colors or DEFAULT_COLORS)][:k]
        if len(self.colors) < k:
            raise ConfigError(f"{k} classes need {k} colours, got {len(self.colors)}")
        self.results: dict[str, float] = {}
        self.reset()

    def reset(self) -> None:
        self._records: list[dict] = []
        self._vis: list[dict] = []

    @torch.no_grad()
    def process(self, batch: dict, outputs: dict) -> None:
        """batch (``core.structures.Batch``): ``video`` B×T×3×H×W, ``scored`` B×T, ``has_ann`` B×T, ``frame_idx``
        B×T, ``meta`` (B dicts), ``gt_full`` (per sample S×H0×W0 labels 0..K of its S scored frames, in clip order);
        outputs: ``probs`` B×T×K×H×W (per-class probabilities, background excluded)."""
        probs = checked_probs(outputs, len(self.class_names), self.dataset_name)
        num_classes = probs.shape[2]
        for b, meta in enumerate(batch["meta"]):
            sid = int(meta["sample_id"])
            ts, gts = scored_frames(batch, outputs, b, self.dataset_name)
            frame_idx = batch["frame_idx"][b].tolist() if "frame_idx" in batch else None
            for t, gt in zip(ts, gts):
                p = probs[b, t].float()  # K×H×W
                if tuple(p.shape[-2:]) != tuple(gt.shape):
                    p = F.interpolate(p[None], size=tuple(gt.shape), mode="bilinear", align_corners=False)[0]
                pred = probs_to_labels(p)
                inter, pred_area, gt_area = seg_stats(pred, gt, num_classes)
                rec = dict(sample_id=sid, t=t, video_id=str(meta["video_id"]), site=str(meta.get("site", "")),
                           frame_idx=int(frame_idx[t]) if frame_idx is not None else int(meta["frame_idx"]),
                           inter=inter, pred_area=pred_area, gt_area=gt_area)
                if meta.get("spacing") is not None:  # HD95 in mm where the data knows its pixel size
                    rec["hd95"] = _hd95_per_class(pred, gt, num_classes, tuple(float(v) for v in meta["spacing"]))
                self._records.append(rec)
            if self.output_dir is not None and sid in self.vis_ids:
                frames = (batch["video"][b].float().clamp(0, 1) * 255).round().to(torch.uint8)  # T×3×H×W
                self._vis.append(dict(
                    sample_id=sid, video_id=str(meta["video_id"]), frame_idx=int(meta["frame_idx"]),
                    frames=frames.permute(0, 2, 3, 1).cpu().numpy(),  # T×H×W×3 RGB
                    pred=probs_to_labels(probs[b].float()).to(torch.uint8).cpu().numpy(),  # T×H×W
                    gt={t: g.to(torch.uint8).cpu().numpy() for t, g in zip(ts, gts)},  # scored t -> H0×W0
                    clip_frame_idx=frame_idx))

    def evaluate(self) -> dict[str, float]:
        """Gather from all ranks, reduce, write files on the main process; returns ``{metric: float | int}``."""
        gathered = comm.all_gather_object((self._records, self._vis))
        records = _unique_by_id((r for recs, _ in gathered for r in recs), key=("sample_id", "t"))
        vis = _unique_by_id(v for _, vs in gathered for v in vs)
        check_sample_count(self.dataset_name, len({r["sample_id"] for r in records}), self.num_samples)
        results, per_sample, per_video = self._reduce(records)
        self.results = results
        if self.output_dir is not None and comm.is_main_process():
            self._write(results, per_sample, per_video, vis)
        return results

    def _reduce(self, records: list[dict]) -> tuple[dict, list[dict], list[dict]]:
        names = self.class_names
        inter, pred_area, gt_area = (np.stack([r[key] for r in records]) for key in ("inter", "pred_area", "gt_area"))
        dice, iou = dice_iou(inter, pred_area, gt_area)  # N×K, NaN where a class is absent from both
        frame_dice, frame_iou = _nanmean(dice, axis=1), _nanmean(iou, axis=1)  # N
        class_dice, class_iou = _nanmean(dice, axis=0), _nanmean(iou, axis=0)  # K

        videos: dict[str, list[int]] = defaultdict(list)
        for i, r in enumerate(records):
            videos[r["video_id"]].append(i)
        per_video = []
        for vid, idx in videos.items():
            row = dict(video_id=vid, site=records[idx[0]]["site"], num_frames_scored=len(idx))
            row.update({f"Dice_{c}": float(v) for c, v in zip(names, _nanmean(dice[idx], axis=0))})
            row.update({f"IoU_{c}": float(v) for c, v in zip(names, _nanmean(iou[idx], axis=0))})
            row.update(mDice=float(_nanmean(frame_dice[idx])), mIoU=float(_nanmean(frame_iou[idx])))
            per_video.append(row)
        per_sample = []
        for i, r in enumerate(records):
            row = {k: r[k] for k in ("sample_id", "video_id", "site", "frame_idx")}
            row.update({f"Dice_{c}": float(v) for c, v in zip(names, dice[i])})
            row.update({f"IoU_{c}": float(v) for c, v in zip(names, iou[i])})
            row.update(mDice=float(frame_dice[i]), mIoU=float(frame_iou[i]))
            per_sample.append(row)

        results: dict[str, float | int] = {}
        results.update({f"Dice_{c}": float(v) for c, v in zip(names, class_dice)})
        results.update({f"IoU_{c}": float(v) for c, v in zip(names, class_iou)})
        if all("hd95" in r for r in records):  # every scored frame has a pixel size: HD95 (mm) per class
            hd = np.stack([r["hd95"] for r in records])  # N×K, NaN where the class is absent from both
            class_hd = _nanmean(hd, axis=0)
            results.update({f"HD95_{c}": float(v) for c, v in zip(names, class_hd)})
            results["mHD95"] = float(_nanmean(class_hd))
            for i, row in enumerate(per_sample):
                row.update({f"HD95_{c}": float(v) for c, v in zip(names, hd[i])})
        results.update(
            mDice=float(_nanmean(class_dice)), mIoU=float(_nanmean(class_iou)),
            frame_mDice=float(_nanmean(frame_dice)), frame_mIoU=float(_nanmean(frame_iou)),
            video_mDice=float(_nanmean(np.array([row["mDice"] for row in per_video]))),
            video_mIoU=float(_nanmean(np.array([row["mIoU"] for row in per_video]))),
            num_samples=len({r["sample_id"] for r in records}), num_scored_frames=len(records),
            num_videos=len(per_video))
        return results, per_sample, per_video

    def _write(self, results: dict, per_sample: list[dict], per_video: list[dict], vis: list[dict]) -> None:
        out = self.output_dir
        out.mkdir(parents=True, exist_ok=True)
        # NaN is not JSON: a metric with nothing to average is written as null.
        clean = {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in results.items()}
        clean["class_names"] = self.class_names  # column order for tables (the file's keys are sorted)
        _atomic_write_text(out / "metrics.json", json.dumps(clean, indent=2, sort_keys=True, allow_nan=False))
        _atomic_write_text(out / "per_video.csv", _to_csv(per_video))
        _atomic_write_text(out / "per_sample.csv", _to_csv(per_sample))
        for v in vis:
            name = f"{v['video_id'].replace('/', '_')}_f{v['frame_idx']}.mp4"
            frames = render_overlay(v["frames"], v["pred"], v["gt"], self.class_names, self.colors,
                                    frame_indices=v["clip_frame_idx"])
            write_video(out / "vis" / name, frames, self.vis_fps)


EVALUATORS._do_register("video_seg", VideoSegEvaluator)


def _hd95_per_class(pred: torch.Tensor, gt: torch.Tensor, num_classes: int, spacing: tuple[float, float]
                    ) -> np.ndarray:
    """HD95 in mm of each class on one frame (K). A class in neither mask is NaN (left out, like Dice); a class in
    only one of them scores the frame's diagonal in mm, so a missed or invented structure counts as the worst
    distance rather than vanishing from the mean (see ``evaluators.metrics.hd95``)."""
    p, g = pred.cpu().numpy(), gt.cpu().numpy()
    diagonal = float(np.hypot(g.shape[0] * spacing[0], g.shape[1] * spacing[1]))
    return np.array([hd95(p == k, g == k, spacing=spacing, missing=diagonal) for k in range(1, num_classes + 1)])


def _unique_by_id(items, key: tuple[str, ...] = ("sample_id",)) -> list[dict]:
    """First occurrence of each ``key`` (a padded distributed sampler repeats samples), sorted by it."""
    seen: dict[tuple, dict] = {}
    for it in items:
        seen.setdefault(tuple(it[k] for k in key), it)
    return [seen[k] for k in sorted(seen)]


def _to_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in row.items()})
    return buf.getvalue()


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
