"""Visualisation, apart from the metric code: predicted labels blended over a clip with a legend of the
dataset's class names in its class colours (``MetadataCatalog`` ``colors``), ground-truth contours on the scored
frames, and the mp4 writer. Used by the evaluators' overlay videos; works for any number of classes."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import cv2
import numpy as np

logger = logging.getLogger(__name__)

# RGB; CardiacUDC order LV, LA, RA, RV = red, green, blue, yellow, then extras for datasets with more classes.
DEFAULT_COLORS = [(230, 60, 60), (60, 200, 80), (70, 120, 240), (240, 210, 50),
                  (200, 80, 220), (60, 210, 210), (250, 150, 50), (160, 160, 160)]


def render_overlay(frames: np.ndarray, pred: np.ndarray, gt: dict[int, np.ndarray] | None,
                   class_names: list[str], colors: list[tuple[int, int, int]], alpha: float = 0.45,
                   frame_indices: list[int] | None = None, min_size: int = 256) -> np.ndarray:
    """Overlay predicted labels on a grey clip (upscaled so that its shorter side is at least ``min_size``,
    keeping the legend readable for small model resolutions).

    frames: T×H×W×3 uint8 RGB; pred: T×H×W labels 0..K; gt: {scored clip frame t: its labels at any size (resized
    nearest to H×W)} or None; colors: RGB per class. Returns T×H×W×3 uint8 **BGR** (OpenCV order): predicted
    classes blended in their colour, a legend of class names in their colours, and on each scored frame the
    ground-truth contours plus the word "annotated".
    """
    t_len, h, w = pred.shape
    up = -(-min_size // min(h, w))
    if up > 1:
        h, w = h * up, w * up
        frames = np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_LINEAR) for f in frames])
        pred = np.stack([cv2.resize(p, (w, h), interpolation=cv2.INTER_NEAREST) for p in pred])
    grey = frames.astype(np.float32).mean(axis=-1, keepdims=True).repeat(3, axis=-1)  # T×H×W×3
    lut = np.zeros((len(class_names) + 1, 3), np.float32)
    lut[1:] = [c[::-1] for c in colors]  # RGB -> BGR
    fg = pred > 0
    blended = np.where(fg[..., None], (1 - alpha) * grey + alpha * lut[pred], grey)
    out = np.ascontiguousarray(blended.round().clip(0, 255).astype(np.uint8))
    scale = max(0.3, min(h, w) / 700)
    line = int(26 * scale) + 2
    font = cv2.FONT_HERSHEY_SIMPLEX
    gt_small = {t: cv2.resize(g.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
                for t, g in (gt or {}).items()}
    for t in range(t_len):
        img = out[t]
        for k, name in enumerate(class_names):
            cv2.putText(img, name, (4, line * (k + 1)), font, scale, tuple(int(v) for v in lut[k + 1]), 1,
                        cv2.LINE_AA)
        label = f"t={t}" if frame_indices is None else f"frame {frame_indices[t]}"
        if t in gt_small:
            label += "  annotated (GT contour)"
            for k in range(1, len(class_names) + 1):
                contours, _ = cv2.findContours((gt_small[t] == k).astype(np.uint8), cv2.RETR_EXTERNAL,
                                               cv2.CHAIN_APPROX_NONE)
                cv2.drawContours(img, contours, -1, (255, 255, 255), 1)
        cv2.putText(img, label, (4, h - 6), font, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def write_video(path: str | Path, frames_bgr: np.ndarray, fps: int) -> bool:
    """Write T×H×W×3 uint8 BGR frames as an mp4 (fourcc mp4v), atomically; returns False (and logs) on failure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")  # keep the suffix: it selects the container
    h, w = frames_bgr.shape[1:3]
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (w, h))
    if not writer.isOpened():
        logger.warning(f"Could not open a video writer for {path}; overlay skipped")
        return False
    try:
        for f in frames_bgr:
            writer.write(f)
    finally:
        writer.release()
    os.replace(tmp, path)
    return True
