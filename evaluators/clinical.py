"""Clinical evaluator: left-ventricular ejection fraction from the predicted masks, against the dataset's EF.

For each whole-video sample whose meta has ``ed`` and ``es`` (frame numbers) among its scored frames and an
``ef`` (%): the LV mask at ED and at ES (predicted, at native resolution, and the ground truth for reference), its
area A (mm²) and long-axis length L (mm, the largest distance between two points of its outline), the volume by
the single-plane area–length method V = 8·A² / (3π·L), and EF = 100·(V_ED − V_ES) / V_ED. With anisotropic
``spacing`` (dy, dx) areas and lengths are in mm; without it in pixels (EF is a ratio, so an isotropic scale
cancels).

Reported: ``EF_MAE`` / ``EF_bias`` (predicted − dataset, in EF points) / ``EF_corr`` (Pearson) of the predicted
masks, ``EF_MAE_gt_masks`` (the same method on the ground-truth masks: what the area–length method itself costs
against the dataset's EF, which is usually measured otherwise, e.g. biplane Simpson), ``LV_area_ED_MAE`` (mm²) and
``num_ef_videos``. Needs the whole-video protocol (``per_video=True`` in the ``data.evaluate`` entry), since a
clip scored on one frame never holds both ED and ES.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from core import comm
from core.errors import ConfigError
from core.registry import EVALUATORS
from evaluators.metrics import probs_to_labels
from evaluators.video_seg import _atomic_write_text, _to_csv

LV_NAMES = ("LV_endo", "LV")  # the LV cavity class: CAMUS's endocardium, EchoNet's / CardiacUDC's LV


def lv_area_length(mask: np.ndarray, spacing: tuple[float, float] = (1.0, 1.0)) -> tuple[float, float, float]:
    """(area, long-axis length, area–length volume) of a boolean H×W mask; zeros for an empty mask.

    The length is the largest distance between two outline points (computed by hand over the convex hull: no
    library call gives the maximum Feret diameter with anisotropic pixels)."""
    dy, dx = spacing
    area = float(mask.sum()) * dy * dx
    if area == 0:
        return 0.0, 0.0, 0.0
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    pts = cv2.convexHull(np.concatenate(contours)).reshape(-1, 2).astype(np.float64)  # (x, y)
    pts = pts * [dx, dy]
    d = np.sqrt(((pts[:, None] - pts[None]) ** 2).sum(-1)).max() if len(pts) > 1 else 0.0
    length = float(max(d, min(dy, dx)))  # a one-pixel mask still has a length of one pixel
    return area, length, 8 * area ** 2 / (3 * np.pi * length)


def ejection_fraction(v_ed: float, v_es: float) -> float:
    return float("nan") if v_ed <= 0 else 100.0 * (v_ed - v_es) / v_ed


@EVALUATORS.register()
class EFEvaluator:
    """See the module docstring. ``lv_class``: the class name of the LV cavity (default: the first of
    ``LV_endo`` / ``LV`` among ``class_names``). Other arguments as ``VideoSegEvaluator``'s (``colors`` and
    ``vis_ids`` are accepted and unused); with ``output_dir`` the main process writes ``ef_per_video.csv``."""

    def __init__(self, dataset_name: str, class_names: list[str], output_dir: str | Path | None = None,
                 num_samples: int | None = None, lv_class: str | None = None, colors=None, vis_ids=None):
        self.dataset_name, self.class_names = dataset_name, list(class_names)
        self.output_dir = Path(output_dir) if output_dir is not None else None
        name = lv_class or next((n for n in LV_NAMES if n in self.class_names), None)
        if name not in self.class_names:
            raise ConfigError(f"EFEvaluator on {dataset_name}: no LV class among {self.class_names}; set lv_class")
        self.lv = self.class_names.index(name) + 1  # label value
        self.results: dict = {}
        self.reset()

    def reset(self) -> None:
        self._rows: list[dict] = []

    @torch.no_grad()
    def process(self, batch: dict, outputs: dict) -> None:
        probs = outputs["probs"]
        for b, meta in enumerate(batch["meta"]):
            if meta.get("ed") is None or meta.get("es") is None or meta.get("ef") is None:
                continue
            frames = batch["frame_idx"][b].tolist()
            scored = [int(t) for t in torch.as_tensor(batch["scored"][b]).nonzero().flatten()]
            where = {frames[t]: i for i, t in enumerate(scored)}  # frame number -> row of gt_full
            if int(meta["ed"]) not in where or int(meta["es"]) not in where:
                continue
            gts = torch.as_tensor(batch["gt_full"][b])
            spacing = tuple(float(v) for v in meta.get("spacing") or (1.0, 1.0))
            row = dict(sample_id=int(meta["sample_id"]), video_id=str(meta["video_id"]), ef=float(meta["ef"]))
            for phase in ("ed", "es"):
                i = where[int(meta[phase])]
                gt = gts[i]
                p = probs[b, scored[i]].float()
                if tuple(p.shape[-2:]) != tuple(gt.shape):
                    p = F.interpolate(p[None], size=tuple(gt.shape), mode="bilinear", align_corners=False)[0]
                pred = (probs_to_labels(p) == self.lv).cpu().numpy()
                row[f"area_{phase}"], row[f"length_{phase}"], row[f"v_{phase}"] = lv_area_length(pred, spacing)
                area_gt, _, row[f"v_{phase}_gt"] = lv_area_length((gt == self.lv).cpu().numpy(), spacing)
                if phase == "ed":
                    row["area_ed_gt"] = area_gt
            row["ef_pred"] = ejection_fraction(row["v_ed"], row["v_es"])
            row["ef_gt_masks"] = ejection_fraction(row["v_ed_gt"], row["v_es_gt"])
            self._rows.append(row)

    def evaluate(self) -> dict:
        rows = {r["sample_id"]: r for part in comm.all_gather_object(self._rows) for r in part}
        rows = [rows[k] for k in sorted(rows)]
        if not rows:
            raise ConfigError(f"EFEvaluator on {self.dataset_name}: no sample holds both its ED and ES frames with "
                              f"an EF; use it in a data.evaluate entry with per_video=True (the whole-video "
                              f"protocol) on a dataset whose metas carry ed, es and ef")
        ef = np.array([r["ef"] for r in rows])
        pred = np.array([r["ef_pred"] for r in rows])
        gtm = np.array([r["ef_gt_masks"] for r in rows])
        ok = np.isfinite(pred)
        err = pred[ok] - ef[ok]
        spread = ok.sum() > 1 and pred[ok].std() > 0 and ef[ok].std() > 0  # a correlation needs both to vary
        corr = float(np.corrcoef(pred[ok], ef[ok])[0, 1]) if spread else float("nan")
        self.results = dict(
            EF_MAE=float(np.abs(err).mean()) if ok.any() else float("nan"),
            EF_bias=float(err.mean()) if ok.any() else float("nan"),
            EF_corr=corr,
            EF_MAE_gt_masks=float(np.nanmean(np.abs(gtm - ef))) if np.isfinite(gtm).any() else float("nan"),
            LV_area_ED_MAE=float(np.mean([abs(r["area_ed"] - r["area_ed_gt"]) for r in rows])),
            num_ef_videos=len(rows))
        if self.output_dir is not None and comm.is_main_process():
            self.output_dir.mkdir(parents=True, exist_ok=True)
            _atomic_write_text(self.output_dir / "ef_per_video.csv", _to_csv(rows))
        return self.results
