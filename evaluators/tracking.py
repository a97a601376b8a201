"""Tracking evaluator: whole-video tracking quality of promptable video models (e.g. SAM2 vs SAMURAI).

Each sample is one whole video (the whole-video protocol: ``per_video=True`` in the ``data.evaluate`` entry,
batch size 1). Its scored frames are ``batch["scored"]``, minus the frames the model asks to leave out with
``outputs["scored"]`` (B×T, a subset of ``batch["scored"]``; e.g. the frame prompted with the ground-truth mask,
whose Dice is 1 by construction); the ``gt_full`` rows of the removed frames are dropped with them. Predicted
labels are made as ``VideoSegEvaluator`` makes them (probabilities resized bilinearly to the ground truth's size,
then :func:`evaluators.metrics.probs_to_labels`); areas are in pixels at that native resolution.

Per video and foreground class c (label value k), with kept scored frames at clip positions t_1 < ... < t_S (in
the whole-video protocol a clip position is the frame number), Dice d_i, predicted area P_i and ground-truth area
G_i of c on frame i, ``present_i = G_i > 0`` and the mean ground-truth area of c over the frames where it is
present, ``Gbar = sum_i G_i / #{i : present_i}``:

- ``lost_<c>`` = #{i : present_i and d_i < lost_threshold} / #{i : present_i}: the fraction of the frames showing
  c on which the track is lost (strictly below the threshold; default 0.5).
- ``area_consistency_<c>`` = mean over the pairs of consecutive kept scored frames (i, i+1) with present_i and
  present_{i+1} of ``|(P_{i+1} - P_i) - (G_{i+1} - G_i)| / Gbar / (t_{i+1} - t_i)``: the error of the predicted
  area change against the true one, relative to the structure's size, per frame of gap, so sparse annotations
  compare with dense ones. 0 is perfect, including a constant area offset; lower is better.
- ``area_jitter_<c>`` = (mean_j |P_{j+1} - 2 P_j + P_{j-1}| - mean_j |G_{j+1} - 2 G_j + G_{j-1}|) / Gbar, both
  means over the triples of kept scored frames that are adjacent frames (t_j - t_{j-1} = t_{j+1} - t_j = 1),
  whether or not c is present in them: how much more the predicted area flickers than the true one (positive:
  more; negative: smoother than the truth). NaN when the video has no such triple.

Each is NaN for a video whose ground truth never shows c (``Gbar`` undefined) or that has nothing to average
(``area_consistency``: no pair of consecutive frames both showing c). The dataset value of each metric is the
NaN-aware mean over videos (every video weighs the same, whatever its number of frames); ``mLost`` /
``mAreaConsistency`` / ``mAreaJitter`` are the NaN-aware means of those over classes (a class absent from every
video is NaN and left out). Also reported: ``num_tracking_videos`` (distinct samples) and
``num_tracking_scored_frames`` (kept scored frames over all videos). The counts are not called ``num_videos`` /
``num_scored_frames`` because ``VideoSegEvaluator`` reports those, ``trainers.evaluation.inference_on_dataset``
refuses two evaluators reporting one key (as ``EFEvaluator`` reports ``num_ef_videos``). A video whose frames
the model all leaves out is kept, with NaN metrics and 0 frames.

With ``output_dir`` the main process writes ``tracking.json`` (the results, NaN as ``null``, plus
``class_names`` and ``lost_threshold``) and ``tracking_per_video.csv`` (one row per video: ``sample_id``,
``video_id``, ``site``, ``num_scored_frames`` and every metric above for that video, its ``m*`` columns the
NaN-aware mean over its classes). Every rank returns the same dict.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from core import comm
from core.errors import ConfigError
from core.registry import EVALUATORS
from evaluators.metrics import dice_iou, probs_to_labels, seg_stats
from evaluators.video_seg import (_atomic_write_text, _nanmean, _to_csv, _unique_by_id, check_sample_count,
                                  checked_probs, scored_frames)

logger = logging.getLogger(__name__)

METRICS = (("lost", "mLost"), ("area_consistency", "mAreaConsistency"), ("area_jitter", "mAreaJitter"))


def video_tracking_metrics(ts, inter, pred_area, gt_area, lost_threshold: float = 0.5) -> dict[str, np.ndarray]:
    """The per-class tracking metrics of one video (see the module docstring).

    ts: the S clip positions of its scored frames, strictly increasing; inter, pred_area, gt_area: S×K
    per-class counts of those frames (``evaluators.metrics.seg_stats``). Returns ``{"lost", "area_consistency",
    "area_jitter"}``, each a float64 array of length K, NaN where undefined."""
    ts = np.asarray(ts, dtype=np.int64).reshape(-1)
    s = len(ts)
    inter, p, g = (np.asarray(x, dtype=np.float64) for x in (inter, pred_area, gt_area))
    if not inter.shape == p.shape == g.shape or g.ndim != 2 or len(g) != s:
        raise ValueError(f"inter, pred_area and gt_area must be S×K with S = {s} scored frames, got "
                         f"{inter.shape}, {p.shape}, {g.shape}")
    k = g.shape[1]
    if s > 1 and not (np.diff(ts) > 0).all():
        raise ValueError(f"scored frames must be strictly increasing, got {ts.tolist()}")
    nan = np.full(k, np.nan)
    present = g > 0  # S×K
    n_present = present.sum(0)  # K
    shown = n_present > 0
    gbar = np.where(shown, g.sum(0) / np.maximum(n_present, 1), np.nan)  # mean area where present
    dice, _ = dice_iou(inter, p, g)  # defined wherever present (G > 0)
    lost_frames = (present & (np.nan_to_num(dice, nan=1.0) < lost_threshold)).sum(0)
    lost = np.where(shown, lost_frames / np.maximum(n_present, 1), np.nan)
    if s < 2:
        return dict(lost=lost, area_consistency=nan.copy(), area_jitter=nan.copy())

    gap = np.diff(ts).astype(np.float64)  # S-1
    pairs = present[1:] & present[:-1]  # S-1 × K
    n_pairs = pairs.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):  # NaN Gbar for absent classes, masked below
        err = np.abs(np.diff(p, axis=0) - np.diff(g, axis=0)) / gbar / gap[:, None]
    consistency = np.where(n_pairs > 0, np.where(pairs, err, 0.0).sum(0) / np.maximum(n_pairs, 1), np.nan)

    triples = (gap[1:] == 1) & (gap[:-1] == 1)  # S-2: frames j-1, j, j+1 adjacent
    if not triples.any():
        jitter = nan.copy()
    else:
        d2p = np.abs(p[2:] - 2 * p[1:-1] + p[:-2])[triples].mean(0)
        d2g = np.abs(g[2:] - 2 * g[1:-1] + g[:-2])[triples].mean(0)
        jitter = np.where(shown, (d2p - d2g) / np.where(shown, gbar, 1.0), np.nan)
    return dict(lost=lost, area_consistency=consistency, area_jitter=jitter)


@EVALUATORS.register()
class TrackingEvaluator:
    """Whole-video tracking metrics (see the module docstring).

    Args:
        dataset_name: used in error messages.
        class_names: the K foreground classes, label values ``1..K``.
        output_dir: where the main process writes ``tracking.json`` and ``tracking_per_video.csv``; None writes
            nothing.
        num_samples: the dataset's size (videos); when given, ``evaluate`` raises unless exactly that many
            distinct samples were processed.
        lost_threshold: a frame showing class c counts as lost when c's Dice there is below this (0 < x <= 1).
        num_vis, vis_fps, colors, vis_ids: accepted (the evaluation builder and shared evaluator configs pass
            them) and unused: this evaluator draws nothing.
    """

    def __init__(self, dataset_name: str, class_names: list[str], output_dir: str | Path | None = None,
                 num_samples: int | None = None, lost_threshold: float = 0.5, num_vis: int = 3, vis_fps: int = 8,
                 colors: list[tuple[int, int, int]] | None = None, vis_ids: list[int] | None = None):
        del num_vis, vis_fps, colors, vis_ids  # visual arguments: nothing to draw
        self.dataset_name = dataset_name
        self.class_names = list(class_names)
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.num_samples = num_samples
        if isinstance(lost_threshold, bool) or not isinstance(lost_threshold, (int, float)) \
                or not 0 < lost_threshold <= 1:
            raise ConfigError(f"TrackingEvaluator on {dataset_name}: lost_threshold must be a Dice in (0, 1], "
                              f"got {lost_threshold!r}")
        self.lost_threshold = float(lost_threshold)
        self.results: dict[str, float | int] = {}
        self.reset()

    def reset(self) -> None:
        self._records: list[dict] = []

    @torch.no_grad()
    def process(self, batch: dict, outputs: dict) -> None:
        """batch: ``scored`` B×T, ``has_ann`` B×T (optional), ``meta`` (B dicts), ``gt_full`` (per sample S×H0×W0
        labels 0..K of its S scored frames, in frame order); outputs: ``probs`` B×T×K×H×W and optionally
        ``scored`` B×T (bool, or 0/1 after the evaluation loop's ``.float()``), the frames to keep."""
        probs = checked_probs(outputs, len(self.class_names), self.dataset_name)
        num_classes = probs.shape[2]
        for b, meta in enumerate(batch["meta"]):
            sid = int(meta["sample_id"])
            ts, gts = scored_frames(batch, outputs, b, self.dataset_name, allow_none_kept=True)
            stats = []
            for t, gt in zip(ts, gts):
                p = probs[b, t].float()  # K×H×W
                if tuple(p.shape[-2:]) != tuple(gt.shape):
                    p = F.interpolate(p[None], size=tuple(gt.shape), mode="bilinear", align_corners=False)[0]
                stats.append(seg_stats(probs_to_labels(p), gt, num_classes))
            inter, pred_area, gt_area = (np.stack([s[j] for s in stats]) if stats else
                                         np.zeros((0, num_classes), dtype=np.int64) for j in range(3))
            self._records.append(dict(sample_id=sid, video_id=str(meta["video_id"]), site=str(meta.get("site", "")),
                                      ts=ts, inter=inter, pred_area=pred_area, gt_area=gt_area))

    def evaluate(self) -> dict[str, float | int]:
        """Gather from all ranks, reduce, write files on the main process; returns ``{metric: float | int}``."""
        records = _unique_by_id(r for part in comm.all_gather_object(self._records) for r in part)
        check_sample_count(self.dataset_name, len(records), self.num_samples)
        if all(len(r["ts"]) < 2 for r in records):
            logger.warning(f"{self.dataset_name}: no video has two scored frames; area consistency and jitter need "
                           "the whole-video protocol (per_video=True in the data.evaluate entry)")
        results, per_video = self._reduce(records)
        self.results = results
        if self.output_dir is not None and comm.is_main_process():
            self._write(results, per_video)
        return results

    def _reduce(self, records: list[dict]) -> tuple[dict, list[dict]]:
        names = self.class_names
        per_class = {key: [] for key, _ in METRICS}  # metric -> V arrays of length K
        per_video = []
        for r in records:
            m = video_tracking_metrics(r["ts"], r["inter"], r["pred_area"], r["gt_area"], self.lost_threshold)
            row = dict(sample_id=r["sample_id"], video_id=r["video_id"], site=r["site"],
                       num_scored_frames=len(r["ts"]))
            for key, mean_key in METRICS:
                per_class[key].append(m[key])
                row.update({f"{key}_{c}": float(v) for c, v in zip(names, m[key])})
                row[mean_key] = float(_nanmean(m[key]))
            per_video.append(row)
        results: dict[str, float | int] = {}
        for key, mean_key in METRICS:
            values = _nanmean(np.stack(per_class[key]), axis=0)  # K: mean over videos
            results.update({f"{key}_{c}": float(v) for c, v in zip(names, values)})
            results[mean_key] = float(_nanmean(values))
        results.update(num_tracking_videos=len(records),
                       num_tracking_scored_frames=int(sum(len(r["ts"]) for r in records)))
        return results, per_video

    def _write(self, results: dict, per_video: list[dict]) -> None:
        out = self.output_dir
        out.mkdir(parents=True, exist_ok=True)
        # NaN is not JSON: a metric with nothing to average is written as null.
        clean = {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in results.items()}
        clean.update(class_names=self.class_names, lost_threshold=self.lost_threshold)
        _atomic_write_text(out / "tracking.json", json.dumps(clean, indent=2, sort_keys=True, allow_nan=False))
        _atomic_write_text(out / "tracking_per_video.csv", _to_csv(per_video))


EVALUATORS._do_register("tracking", TrackingEvaluator)
