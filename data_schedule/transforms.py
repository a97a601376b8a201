"""Frame transforms chosen per mapper in the config (``TRANSFORMS``), applied to the frames read from the cache
before the mapper's own resizing and augmentation:

    train_mapper = dict(name="ClipTrainMapper", ..., transforms=[dict(name="FanCrop")])           # CardiacUDC
    eval_mapper = dict(name="ClipEvalMapper", ..., transforms=[dict(name="IntensityWindow", low=-160, high=240),
                                                              dict(name="ToGrey")])               # CT

Each transform is ``__call__(frames, labels, meta) -> (frames, labels)`` on one clip: ``frames`` T×H×W or T×H×W×C
(numpy, any dtype), ``labels`` T×H×W int64 (zeros where a frame is not annotated), ``meta`` the clip's own copy of
the sample meta, which a transform that changes the pixel size updates (``Resize`` scales ``spacing``). A transform that needs a
per-video decision (the fan crop) takes it once per video, so every clip of a video gets the same one.
``invert_labels(labels, meta, shape)`` maps a label map predicted on transformed frames back to the geometry of
the frames before the transform (``tools/segment_video.py`` writes predictions at the file's own size with it).

A mapper whose ``transforms`` is unset (None) uses its register's ``default_transforms`` (a sample meta key):
CardiacUDC / EchoSynth declare ``[FanCrop]`` there, so configs and checkpoints written before the fan crop left the
cache still read the same pixels. An explicit list, even ``[]``, replaces the default; the CardiacUDC configs list
``FanCrop`` explicitly.
"""
from __future__ import annotations

import json
from functools import lru_cache

import cv2
import numpy as np

from core.errors import ConfigError
from core.registry import TRANSFORMS, build
from data_schedule.curation.fan_crop import fan_bbox
from data_schedule.sources.nifti import DataError


class Transform:
    """Base: geometry-preserving (labels map back unchanged)."""

    def __call__(self, frames: np.ndarray, labels: np.ndarray, meta: dict) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def invert_labels(self, labels: np.ndarray, meta: dict, shape: tuple[int, int]) -> np.ndarray:
        """T×h×w labels predicted on this transform's output -> T×H×W on its input (``shape`` = (H, W))."""
        return labels


def build_transforms(cfgs, key: str = "transforms") -> list[Transform]:
    return [build(TRANSFORMS, t, key=f"{key}[{i}]") for i, t in enumerate(cfgs or [])]


@lru_cache(maxsize=64)
def _built_defaults(spec: str) -> tuple[Transform, ...]:
    return tuple(build_transforms(json.loads(spec), key="default_transforms"))


def transforms_for(meta: dict, configured: list[Transform] | None) -> list[Transform] | tuple[Transform, ...]:
    """The mapper's transforms, or (``configured`` None) the register's ``meta["default_transforms"]``."""
    if configured is not None:
        return configured
    defaults = meta.get("default_transforms")
    return _built_defaults(json.dumps(list(defaults), sort_keys=True)) if defaults else ()


@TRANSFORMS.register()
class IntensityWindow(Transform):
    """Values clipped to ``[low, high]`` and mapped linearly to uint8 0..255 (a CT window, an MRI range)."""

    def __init__(self, low: float, high: float):
        if not high > low:
            raise ConfigError(f"IntensityWindow: high ({high}) must be above low ({low})")
        self.low, self.high = float(low), float(high)

    def __call__(self, frames: np.ndarray, labels: np.ndarray, meta: dict) -> tuple[np.ndarray, np.ndarray]:
        x = (np.asarray(frames, np.float32) - self.low) * (255.0 / (self.high - self.low))
        return np.clip(np.rint(x), 0, 255).astype(np.uint8), labels


@TRANSFORMS.register()
class ToGrey(Transform):
    """RGB (T×H×W×3) to grey (T×H×W) with ITU-R BT.601 weights, as OpenCV's RGB2GRAY; grey frames pass."""

    def __call__(self, frames: np.ndarray, labels: np.ndarray, meta: dict) -> tuple[np.ndarray, np.ndarray]:
        if frames.ndim == 3:
            return frames, labels
        grey = np.asarray(frames[..., :3], np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        return np.clip(np.rint(grey), 0, 255).astype(frames.dtype), labels


@TRANSFORMS.register()
class ToRGB(Transform):
    """Grey (T×H×W) to RGB (T×H×W×3, the grey value in every channel), for models with RGB statistics; RGB passes."""

    def __call__(self, frames: np.ndarray, labels: np.ndarray, meta: dict) -> tuple[np.ndarray, np.ndarray]:
        if frames.ndim == 4:
            return frames, labels
        return np.repeat(np.asarray(frames)[..., None], 3, axis=-1), labels


@TRANSFORMS.register()
class Resize(Transform):
    """Frames to ``size`` = [H, W] (OpenCV area interpolation when shrinking, linear when enlarging), labels by
    nearest neighbour. The mappers resize to the model's size anyway; this one is for a fixed working resolution
    before the train mapper's random crop (e.g. large native frames) or for data of mixed sizes."""

    def __init__(self, size: list[int]):
        if len(size) != 2 or min(size) < 1:
            raise ConfigError(f"Resize: size must be [H, W] with positive values, got {list(size)}")
        self.size = (int(size[0]), int(size[1]))

    @staticmethod
    def _resize(x: np.ndarray, size: tuple[int, int], interp: int) -> np.ndarray:
        return np.stack([cv2.resize(np.ascontiguousarray(f), (size[1], size[0]), interpolation=interp)
                         for f in x]) if len(x) else x.reshape(0, *size, *x.shape[3:])

    def __call__(self, frames: np.ndarray, labels: np.ndarray, meta: dict) -> tuple[np.ndarray, np.ndarray]:
        h, w = frames.shape[1:3]
        if (h, w) == self.size:
            return frames, labels
        interp = cv2.INTER_AREA if self.size[0] * self.size[1] < h * w else cv2.INTER_LINEAR
        frames = self._resize(np.asarray(frames), self.size, interp)
        if meta.get("spacing") is not None:  # (dy, dx) mm of a pixel, for HD95 in mm
            dy, dx = meta["spacing"][:2]
            meta["spacing"] = [dy * h / self.size[0], dx * w / self.size[1]]
        labels = self._resize(np.asarray(labels, np.int32), self.size, cv2.INTER_NEAREST).astype(labels.dtype)
        return frames, labels

    def invert_labels(self, labels: np.ndarray, meta: dict, shape: tuple[int, int]) -> np.ndarray:
        return self._resize(np.asarray(labels, np.int32), tuple(shape), cv2.INTER_NEAREST).astype(labels.dtype)


@TRANSFORMS.register()
class FanCrop(Transform):
    """Crop every frame and label to the ultrasound fan's bounding box, found on the video's first frame
    (``data_schedule/curation/fan_crop.py``: threshold, largest connected component); the box is kept per video.
    With ``threshold`` unset, a cache that located the fan while decoding (``CachedVideo.fan_box``, found with
    ``fan_bbox``'s default threshold 10) gives the box without reading a frame."""

    def __init__(self, threshold: float | None = None):
        self.threshold = threshold
        self._boxes: dict[tuple, tuple[int, int, int, int]] = {}

    def box(self, meta: dict) -> tuple[int, int, int, int]:
        """(y0, y1, x0, x1), end-exclusive, of this sample's video."""
        cache = meta["cache"]
        stored = getattr(cache, "fan_box", None)
        if stored is not None and self.threshold is None:
            return tuple(stored)
        key = (str(meta["video_id"]), id(cache))  # ids can repeat across datasets (EchoSynth v1 / v2)
        if key not in self._boxes:
            first = np.asarray(cache.image()[0])
            try:
                self._boxes[key] = fan_bbox(first, **({} if self.threshold is None else
                                                      {"threshold": self.threshold}))
            except ValueError as e:
                raise DataError(f"{meta['video_id']}: no fan to crop on its first frame ({e})") from None
        return self._boxes[key]

    def __call__(self, frames: np.ndarray, labels: np.ndarray, meta: dict) -> tuple[np.ndarray, np.ndarray]:
        y0, y1, x0, x1 = self.box(meta)
        return frames[:, y0:y1, x0:x1], labels[:, y0:y1, x0:x1]

    def invert_labels(self, labels: np.ndarray, meta: dict, shape: tuple[int, int]) -> np.ndarray:
        y0, y1, x0, x1 = self.box(meta)
        full = np.zeros((len(labels), *shape), labels.dtype)  # outside the fan is background
        full[:, y0:y1, x0:x1] = labels
        return full
