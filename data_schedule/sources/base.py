"""What every video reader returns (:class:`VideoRecord`) and what a source object offers (:class:`VideoSource`).

A reader turns one video on disk (a NIfTI or MetaImage volume, an AVI, a folder of frames) into a ``VideoRecord``:
frames in a fixed axis order (T, H, W[, C]) and in the dtype they have on disk, plus the label maps of exactly the
frames that are annotated. Which frames are annotated is stated by the reader (every frame of a CAMUS half
sequence, every frame of a SUN-SEG case, ...), never guessed from non-zero pixels unless the caller asks for that:
an annotated frame may be all background.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from data_schedule.sources.nifti import DataError

__all__ = ["DataError", "VideoRecord", "VideoSource", "file_key"]


@dataclass
class VideoRecord:
    """One decoded video.

    frames:  T×H×W (grey) or T×H×W×C (colour) array, dtype as stored (uint8, int16, float32, ...).
    labels:  {frame index: H×W integer label map} for exactly the annotated frames (0 = background).
    spacing: (dy, dx) in mm per pixel, or None when the file does not say.
    fps:     frames per second, or None when the file does not say.
    source:  the file (or folder) it came from; every error about the record names it.
    """

    frames: np.ndarray
    labels: dict[int, np.ndarray] = field(default_factory=dict)
    spacing: tuple[float, float] | None = None
    fps: float | None = None
    source: str = ""

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def frame_size(self) -> tuple[int, int]:
        """(H, W)."""
        return int(self.frames.shape[1]), int(self.frames.shape[2])

    @property
    def annotated_frames(self) -> list[int]:
        return sorted(self.labels)

    def validate(self, num_classes: int) -> VideoRecord:
        """Check the record against a dataset with classes 1..num_classes (0 = background); returns self.

        Raises ``DataError`` naming ``source`` when the frames are not T×H×W[×C] or empty, or a label map has
        another size than the frames, is not integer, holds a value outside 0..num_classes, or sits at a frame
        index outside 0..T-1.
        """
        if self.frames.ndim not in (3, 4) or self.frames.shape[0] == 0:
            raise DataError(f"{self.source}: expected frames T×H×W or T×H×W×C with T ≥ 1, got shape "
                            f"{self.frames.shape}")
        hw = self.frame_size
        for t in self.annotated_frames:
            lab = self.labels[t]
            if not 0 <= t < self.num_frames:
                raise DataError(f"{self.source}: annotated frame {t} is outside the video's frames "
                                f"0..{self.num_frames - 1}")
            if lab.shape != hw:
                raise DataError(f"{self.source}: label of frame {t} has shape {lab.shape}, expected the frame "
                                f"size (H, W)={hw}")
            if not (np.issubdtype(lab.dtype, np.integer) or lab.dtype == np.bool_):
                raise DataError(f"{self.source}: label of frame {t} has dtype {lab.dtype}, expected integer "
                                f"class indices")
            lo, hi = (int(lab.min()), int(lab.max())) if lab.size else (0, 0)
            if lo < 0 or hi > num_classes:
                raise DataError(f"{self.source}: label of frame {t} holds values {lo}..{hi}, expected "
                                f"0..{num_classes}")
        return self


@runtime_checkable
class VideoSource(Protocol):
    """Something that can produce one video: ``read()`` decodes it, ``key()`` identifies the file(s) behind it
    (resolved path, size, mtime) without decoding, so a cache can tell when to decode again; ``where`` names the
    file or folder for error messages."""

    def read(self) -> VideoRecord: ...

    def key(self) -> str: ...

    @property
    def where(self) -> str: ...


def file_key(*paths: str | Path) -> str:
    """A hex digest of each path's resolved name, size and mtime; a folder contributes every file directly in it.

    Cheap (one ``stat`` per file, nothing is read). Raises ``DataError`` naming a path that does not exist.
    """
    parts = []
    for p in map(Path, paths):
        if not p.exists():
            raise DataError(f"{p}: file not found")
        files = sorted(c for c in p.iterdir() if c.is_file()) if p.is_dir() else [p]
        for f in files:
            st = f.stat()
            parts.append(f"{f.resolve()}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha1("|".join(parts).encode()).hexdigest()
