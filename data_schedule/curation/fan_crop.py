"""Automatic low-level background removal for ultrasound videos: crop to the scan sector ("fan").

The seed project's method (REFERENCE 1.1, "Seed framework fan crop"): on the **first frame** of a video,
threshold the grey image (``> 10``), label 8-connected components, keep the largest, fill its external
contour, and take its bounding rectangle. That one box then crops every frame and every label slice of the
video, which removes the black border, burned-in scanner text, depth markers and the ECG strip that lie
outside the sector (overlays inside the sector's bounding box, e.g. an orientation marker in a top corner,
stay).

Known limitation (inherited on purpose, it is the reference behaviour): if the far field of the fan is darker
than the threshold, the largest component, and hence the box, can be smaller than the visible sector; on the
pydicom A4C example clip the faint lateral edges of the fan are cut while the heart stays inside the box.

>>> y0, y1, x0, x1 = fan_bbox(video[0])
>>> video, label = video[:, y0:y1, x0:x1], label[:, y0:y1, x0:x1]
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

__all__ = ["to_grey", "fan_mask", "fan_bbox", "crop_to_bbox", "fan_crop_video"]


def to_grey(frame: np.ndarray) -> np.ndarray:
    """``H×W`` uint8 grey image from an ``H×W``, ``H×W×1``, ``H×W×3`` (RGB) or ``H×W×4`` (RGBA) frame."""
    frame = np.asarray(frame)
    if frame.ndim == 3 and frame.shape[-1] == 1:
        frame = frame[..., 0]
    if frame.ndim == 3 and frame.shape[-1] in (3, 4):
        if frame.dtype != np.uint8:
            frame = np.clip(frame, 0, 255).astype(np.uint8)
        code = cv2.COLOR_RGB2GRAY if frame.shape[-1] == 3 else cv2.COLOR_RGBA2GRAY
        return cv2.cvtColor(np.ascontiguousarray(frame), code)
    if frame.ndim != 2:
        raise ValueError(f"expected a frame of shape H×W or H×W×{{1,3,4}}, got shape {frame.shape}")
    if frame.dtype == np.uint8:
        return frame
    if frame.dtype == np.bool_:
        return frame.astype(np.uint8) * 255
    return np.clip(frame, 0, 255).astype(np.uint8)


def fan_mask(frame: np.ndarray, *, threshold: float = 10, connectivity: int = 8) -> np.ndarray:
    """Boolean ``H×W`` mask of the fan: the largest connected component of ``grey > threshold`` with its
    external contour filled (holes such as dark blood pools are included).

    Raises ``ValueError`` if no pixel is above the threshold.
    """
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity}")
    grey = to_grey(frame)
    binary = (grey > threshold).astype(np.uint8)
    if not binary.any():
        raise ValueError(f"fan crop: no pixel above the threshold {threshold} in the frame of shape "
                         f"{np.shape(frame)} (max grey {int(grey.max()) if grey.size else 'n/a'}); "
                         f"the frame is empty or too dark to locate the ultrasound sector")
    n, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=connectivity)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    component = (labels == largest).astype(np.uint8)
    contours, _ = cv2.findContours(component, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    filled = np.zeros_like(component)
    cv2.drawContours(filled, contours, -1, 1, thickness=cv2.FILLED)
    return filled.astype(bool) | component.astype(bool)


def fan_bbox(frame: np.ndarray, *, threshold: float = 10, connectivity: int = 8) -> tuple[int, int, int, int]:
    """Bounding box ``(y0, y1, x0, x1)`` (end-exclusive) of the fan in ``frame`` (``H×W`` or ``H×W×3``).

    Use it on the first frame of a video and crop every frame and label slice with it.
    Raises ``ValueError`` if the frame has no pixel above ``threshold``.
    """
    mask = fan_mask(frame, threshold=threshold, connectivity=connectivity)
    x, y, w, h = cv2.boundingRect(mask.astype(np.uint8))
    return int(y), int(y + h), int(x), int(x + w)


def crop_to_bbox(array: np.ndarray, bbox: Sequence[int], *, hw_axes: tuple[int, int] = (-2, -1)) -> np.ndarray:
    """Crop ``array`` to ``bbox = (y0, y1, x0, x1)`` along its H and W axes (default: the last two; use
    ``hw_axes=(1, 2)`` for a ``T×H×W×C`` video). Returns a view."""
    y0, y1, x0, x1 = (int(v) for v in bbox)
    index = [slice(None)] * array.ndim
    index[hw_axes[0]] = slice(y0, y1)
    index[hw_axes[1]] = slice(x0, x1)
    return array[tuple(index)]


def fan_crop_video(video: np.ndarray, label: np.ndarray | None = None, *, threshold: float = 10,
                   connectivity: int = 8) -> tuple[np.ndarray, np.ndarray | None, tuple[int, int, int, int]]:
    """Crop a ``T×H×W`` or ``T×H×W×3`` video (and its ``T×H×W`` label) with the fan box of its first frame.

    Returns ``(video_crop, label_crop or None, bbox)``; the crops are views.
    """
    video = np.asarray(video)
    if video.ndim not in (3, 4):
        raise ValueError(f"expected a video of shape T×H×W or T×H×W×C, got {video.shape}")
    bbox = fan_bbox(video[0], threshold=threshold, connectivity=connectivity)
    v = crop_to_bbox(video, bbox, hw_axes=(1, 2))
    lab = None
    if label is not None:
        label = np.asarray(label)
        if label.shape[:3] != video.shape[:3]:
            raise ValueError(f"label shape {label.shape} does not match video shape {video.shape}")
        lab = crop_to_bbox(label, bbox, hw_axes=(1, 2))
    return v, lab, bbox
