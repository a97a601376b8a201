"""Decode-once cache for any ``VideoSource``: the record's frames and annotated label maps saved as ``.npy``
files that later reads memory-map, keyed by the source's ``key()`` (files' paths, sizes, mtimes), so an edited
file is decoded again.

    video = LazyVideo(source, num_classes, num_frames=..., annotated_frames=...)   # registering: no I/O
    video.image()    # first call (in a loader worker): decode, validate, write the cache; then memory-mapped
    video.labels()   # {frame index: H×W int8 label map} for the annotated frames

``LazyVideo`` is what a register puts in a sample meta under ``"cache"`` (the mappers call ``image()`` and
``labels()``): registering a dataset of 10,000 videos decodes none of them. ``num_frames`` and
``annotated_frames`` given at registration (from an index file) are checked against the decoded video.
CardiacUDC keeps its own cache (``nifti.load_video``, which also locates the fan); both offer the same two methods
and ``where`` (the file behind the video, for error messages).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_schedule.sources.base import VideoSource
from data_schedule.sources.nifti import DataError, NpyCacheEntry, atomic_save, default_cache_dir

CACHE_VERSION = 1


@dataclass
class CachedRecord(NpyCacheEntry):
    """One decoded video in the cache. ``image()`` (T×H×W or T×H×W×C in the stored dtype) is memory-mapped;
    ``labels()`` holds annotated frames only."""

    source: str
    cache_dir: str
    num_frames: int
    height: int
    width: int
    channels: int                 # 0: grey T×H×W, else T×H×W×C
    dtype: str
    annotated_frames: list[int]
    spacing: list[float] | None   # (dy, dx) mm
    fps: float | None


def cache_source(source: VideoSource, num_classes: int, cache_root: str | Path | None = None) -> CachedRecord:
    """Decode ``source`` once (validated against 0..num_classes), cache it, and return the cached record; later
    calls with an unchanged source read ``info.json`` only."""
    key = hashlib.sha1(f"v{CACHE_VERSION}|{source.key()}".encode()).hexdigest()[:16]
    cdir = Path(cache_root or default_cache_dir()) / "records" / key
    info_file = cdir / "info.json"
    if info_file.exists():
        return CachedRecord(**json.loads(info_file.read_text()))
    rec = source.read().validate(num_classes)
    cdir.mkdir(parents=True, exist_ok=True)
    atomic_save(cdir / "image.npy", np.ascontiguousarray(rec.frames))
    annotated = rec.annotated_frames
    if annotated:
        atomic_save(cdir / "labels.npy", np.stack([np.asarray(rec.labels[t], dtype=np.int8) for t in annotated]))
    info = dict(source=rec.source, cache_dir=str(cdir), num_frames=rec.num_frames, height=rec.frame_size[0],
                width=rec.frame_size[1], channels=int(rec.frames.shape[3]) if rec.frames.ndim == 4 else 0,
                dtype=str(rec.frames.dtype), annotated_frames=[int(t) for t in annotated],
                spacing=None if rec.spacing is None else [float(v) for v in rec.spacing],
                fps=None if rec.fps is None else float(rec.fps))
    tmp = info_file.with_name(f".info.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(info))
    os.replace(tmp, info_file)  # info.json last: its presence means the entry is complete
    return CachedRecord(**info)


class LazyVideo:
    """A source that is decoded (and cached) on first use. ``num_frames`` / ``annotated_frames`` known from an
    index at registration are kept as attributes and checked when the video is first decoded (a mismatch is a
    ``DataError`` naming the source)."""

    def __init__(self, source: VideoSource, num_classes: int, num_frames: int | None = None,
                 annotated_frames: list[int] | None = None, cache_root: str | Path | None = None):
        self.source, self.num_classes, self.cache_root = source, num_classes, cache_root
        self.num_frames, self.annotated_frames = num_frames, annotated_frames
        self._record: CachedRecord | None = None

    def record(self) -> CachedRecord:
        if self._record is None:
            rec = cache_source(self.source, self.num_classes, self.cache_root)
            if self.num_frames is not None and rec.num_frames != self.num_frames:
                raise DataError(f"{rec.source}: {rec.num_frames} frames decoded, the dataset index says "
                                f"{self.num_frames}")
            if self.annotated_frames is not None and rec.annotated_frames != list(self.annotated_frames):
                raise DataError(f"{rec.source}: annotated frames {rec.annotated_frames}, the dataset index says "
                                f"{list(self.annotated_frames)}")
            self._record = rec
        return self._record

    @property
    def where(self) -> str:
        """The source's file or folder (error messages)."""
        return self.source.where

    def image(self) -> np.ndarray:
        return self.record().image()

    def labels(self) -> dict[int, np.ndarray]:
        return self.record().labels()

    def __getstate__(self) -> dict:  # sent to loader workers: without the opened record
        return {**self.__dict__, "_record": None}
