"""Frame transforms chosen per mapper in the config (``TRANSFORMS``), applied to the frames read from the cache
before the mapper's own resizing and augmentation:

    eval_mapper = dict(name="ClipEvalMapper", ..., transforms=[dict(name="IntensityWindow", low=-160, high=240),
                                                              dict(name="ToGrey")])

Each transform is ``__call__(frames, labels, meta) -> (frames, labels)`` on one clip: ``frames`` T×H×W or T×H×W×C
(numpy, any dtype), ``labels`` T×H×W int64 (zeros where a frame is not annotated). A transform that needs a
per-video decision (the fan crop) takes it from the video's first frame, so every clip of a video gets the same
one. The clip mappers then need uint8 grey or RGB frames: ``IntensityWindow`` makes them from CT/MRI values.

CardiacUDC / EchoSynth are still fan-cropped inside their own cache (``sources/nifti.py``), so their configs do
not list ``FanCrop``; it is for echo sources whose frames are stored uncropped.
"""
from __future__ import annotations

import numpy as np

from core.errors import ConfigError
from core.registry import TRANSFORMS
from data_schedule.curation.fan_crop import fan_bbox
from data_schedule.sources.nifti import DataError


@TRANSFORMS.register()
class IntensityWindow:
    """Values clipped to ``[low, high]`` and mapped linearly to uint8 0..255 (a CT window, an MRI range)."""

    def __init__(self, low: float, high: float):
        if not high > low:
            raise ConfigError(f"IntensityWindow: high ({high}) must be above low ({low})")
        self.low, self.high = float(low), float(high)

    def __call__(self, frames: np.ndarray, labels: np.ndarray, meta: dict) -> tuple[np.ndarray, np.ndarray]:
        x = (np.asarray(frames, np.float32) - self.low) * (255.0 / (self.high - self.low))
        return np.clip(np.rint(x), 0, 255).astype(np.uint8), labels


@TRANSFORMS.register()
class ToGrey:
    """RGB (T×H×W×3) to grey (T×H×W) with ITU-R BT.601 weights, as OpenCV's RGB2GRAY; grey frames pass."""

    def __call__(self, frames: np.ndarray, labels: np.ndarray, meta: dict) -> tuple[np.ndarray, np.ndarray]:
        if frames.ndim == 3:
            return frames, labels
        grey = np.asarray(frames[..., :3], np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        return np.clip(np.rint(grey), 0, 255).astype(frames.dtype), labels


@TRANSFORMS.register()
class FanCrop:
    """Crop every frame and label to the ultrasound fan's bounding box, found on the video's first frame
    (``data_schedule/curation/fan_crop.py``: threshold, largest connected component); the box is kept per video."""

    def __init__(self, threshold: float = 10):
        self.threshold = threshold
        self._boxes: dict[str, tuple[int, int, int, int]] = {}

    def __call__(self, frames: np.ndarray, labels: np.ndarray, meta: dict) -> tuple[np.ndarray, np.ndarray]:
        vid = str(meta["video_id"])
        if vid not in self._boxes:
            first = np.asarray(meta["cache"].image()[0])
            try:
                self._boxes[vid] = fan_bbox(first, threshold=self.threshold)
            except ValueError as e:
                raise DataError(f"{vid}: no fan to crop on its first frame ({e})") from None
        y0, y1, x0, x1 = self._boxes[vid]
        return frames[:, y0:y1, x0:x1], labels[:, y0:y1, x0:x1]
