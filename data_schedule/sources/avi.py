"""AVI reader (EchoNet-Dynamic ``Videos/*.avi``) via OpenCV, to a ``VideoRecord`` of RGB frames."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_schedule.sources.base import DataError, VideoRecord, file_key

__all__ = ["AviSource", "read_avi"]


def read_avi(path: str | Path) -> VideoRecord:
    """Decode every frame of a video file: frames T×H×W×3 uint8 RGB, fps from the container (None if absent),
    no labels (EchoNet tracings live in a CSV, not in the video).

    Raises ``DataError`` naming the file when it is missing, cannot be opened, yields no frame, or yields fewer
    frames than its header announces (a truncated file; EchoNet's own loader reads exactly that many frames).
    """
    import cv2

    path = Path(path)
    if not path.is_file():
        raise DataError(f"video file {path}: file not found (expected an .avi readable by OpenCV)")
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise DataError(f"video file {path}: OpenCV cannot open it (not a video, or a codec it lacks)")
        announced = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        fps = float(cap.get(cv2.CAP_PROP_FPS))
        frames = []
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    finally:
        cap.release()
    if not frames:
        raise DataError(f"video file {path}: no frame could be decoded (expected at least one)")
    if announced > len(frames):
        raise DataError(f"video file {path}: decoded {len(frames)} of the {announced} frames its header announces "
                        f"(truncated file?)")
    return VideoRecord(frames=np.stack(frames), labels={}, spacing=None,
                       fps=fps if math.isfinite(fps) and fps > 0 else None, source=str(path))


@dataclass(frozen=True)
class AviSource:
    """A ``VideoSource`` for one video file."""

    path: str

    def read(self) -> VideoRecord:
        return read_avi(self.path)

    def key(self) -> str:
        return file_key(self.path)

    @property
    def where(self) -> str:
        return str(self.path)
