"""NIfTI video source of CardiacUDC / EchoSynth: reads ``*_image.nii.gz`` / ``*_label.nii.gz`` pairs, validates
them and caches the decoded arrays as ``.npy`` files that later reads memory-map.

A ``.nii.gz`` cannot be memory-mapped (it is gzip-compressed), so every read would decompress the whole video.
We decode each video once and keep ``image.npy`` (T×H×W uint8, the whole frame) plus the annotated label frames
only (labels are ~6 of ~100 frames), keyed by the source file's path, size and mtime. The fan's bounding box
(``data_schedule.curation.fan_crop`` on the first frame) is found while decoding and kept in the entry as
``fan_box``; cropping to it is the ``FanCrop`` transform's job (``data_schedule/transforms.py``), chosen by the
mapper, not the cache's (cache version 1 stored cropped frames). Axis order is normalised here: nibabel gives
(W, H, T), we return (T, H, W).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.errors import MedVidSegError

CACHE_VERSION = 2  # 2: whole frames + fan_box (1: frames cropped to the fan)


class DataError(MedVidSegError, ValueError):
    """A problem with a data file; the message names the file and what was expected."""


def default_cache_dir() -> Path:
    return Path(os.environ.get("MEDVIDSEG_CACHE", Path.home() / ".cache" / "medvidseg"))


def _load_volume(path: Path, kind: str) -> np.ndarray:
    """Read a NIfTI video as (T, H, W) in its on-disk dtype; errors name the file."""
    import nibabel as nib

    try:
        img = nib.load(str(path))
        arr = np.asarray(img.dataobj)  # on-disk dtype, no float scaling for unscaled integer files
    except Exception as e:  # truncated gzip, bad header, ...
        raise DataError(f"Cannot read {kind} file {path}: {type(e).__name__}: {e}") from None
    if arr.ndim != 3:
        raise DataError(f"{kind} file {path}: expected a 3-D (W, H, T) volume, got shape {arr.shape}")
    return np.ascontiguousarray(arr.transpose(2, 1, 0))  # nibabel (W, H, T) -> (T, H, W)


class NpyCacheEntry:
    """Reads of a cache folder holding ``image.npy`` (all frames) and ``labels.npy`` (the annotated frames, in the
    order of ``annotated_frames``); the subclass (a dataclass) provides ``cache_dir`` and ``annotated_frames``."""

    cache_dir: str
    annotated_frames: list[int]

    def image(self) -> np.ndarray:
        """All frames (T×H×W, or T×H×W×C), memory-mapped."""
        return np.load(Path(self.cache_dir) / "image.npy", mmap_mode="r", allow_pickle=False)

    def labels(self) -> dict[int, np.ndarray]:
        """{frame index: H×W int8 label} for annotated frames."""
        if not self.annotated_frames:
            return {}
        lab = np.load(Path(self.cache_dir) / "labels.npy", mmap_mode="r", allow_pickle=False)
        return {f: lab[i] for i, f in enumerate(self.annotated_frames)}


@dataclass
class CachedVideo(NpyCacheEntry):
    """One decoded video (T×H×W uint8, whole frames). ``image`` is memory-mapped; ``labels`` holds annotated frames
    only; ``fan_box`` is where ``FanCrop`` crops."""

    image_path: str
    label_path: str | None
    cache_dir: str
    num_frames: int
    height: int
    width: int
    fan_box: tuple[int, int, int, int]  # (y0, y1, x0, x1) of the fan on the first frame, end-exclusive
    annotated_frames: list[int]

    @property
    def where(self) -> str:
        """The image file (error messages)."""
        return self.image_path


def atomic_save(path: Path, arr: np.ndarray) -> None:
    """``np.save`` to a temporary name, then renamed: a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, arr)
    os.replace(tmp, path)


def load_video(image_path: str | Path, label_path: str | Path | None, num_classes: int,
               cache_root: str | Path | None = None) -> CachedVideo:
    """Decode (once), validate, locate the fan and cache one video; later calls read the cache.

    Validation (each a ``DataError`` naming the file): readable gzip/NIfTI, image dtype uint8, 3-D volume,
    label shape equal to the image shape, label values within 0..num_classes.
    """
    image_path = Path(image_path)
    label_path = Path(label_path) if label_path else None
    srcs = [p for p in (image_path, label_path) if p is not None]
    key_src = "|".join(f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in srcs)
    key = hashlib.sha1(f"v{CACHE_VERSION}|{key_src}".encode()).hexdigest()[:16]
    cdir = Path(cache_root or default_cache_dir()) / f"{image_path.name.split('.')[0]}-{key}"
    info_file = cdir / "info.json"
    if info_file.exists():
        info = json.loads(info_file.read_text())
        return CachedVideo(**{**info, "fan_box": tuple(info["fan_box"])})

    from data_schedule.curation.fan_crop import fan_bbox

    image = _load_volume(image_path, "image")
    if image.dtype != np.uint8:
        raise DataError(f"image file {image_path}: expected uint8 pixels, got {image.dtype}")
    if image.shape[0] == 0 or not image.any():
        raise DataError(f"image file {image_path}: empty video (no non-zero pixels)")
    try:
        y0, y1, x0, x1 = fan_bbox(image[0])
    except ValueError as e:
        raise DataError(f"image file {image_path}: {e}") from None
    annotated: list[int] = []
    label_frames = None
    if label_path is not None:
        label = _load_volume(label_path, "label")
        if label.shape != image.shape:
            raise DataError(f"label file {label_path}: shape (T, H, W)={label.shape} differs from its image "
                            f"{image.shape}")
        if not np.issubdtype(label.dtype, np.integer):
            raise DataError(f"label file {label_path}: expected integer labels, got {label.dtype}")
        lo, hi = int(label.min()), int(label.max())
        if lo < 0 or hi > num_classes:
            raise DataError(f"label file {label_path}: values must be in 0..{num_classes}, found {lo}..{hi}")
        annotated = [int(t) for t in np.flatnonzero(label.reshape(len(label), -1).any(1))]
        label_frames = np.ascontiguousarray(label[annotated].astype(np.int8))

    cdir.mkdir(parents=True, exist_ok=True)
    atomic_save(cdir / "image.npy", image)
    if label_frames is not None and annotated:
        atomic_save(cdir / "labels.npy", label_frames)
    info = dict(image_path=str(image_path), label_path=str(label_path) if label_path else None,
                cache_dir=str(cdir), num_frames=int(image.shape[0]), height=int(image.shape[1]),
                width=int(image.shape[2]), fan_box=[int(y0), int(y1), int(x0), int(x1)], annotated_frames=annotated)
    tmp = info_file.with_name(f".info.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(info))
    os.replace(tmp, info_file)  # info.json last: its presence means the cache entry is complete
    return CachedVideo(**{**info, "fan_box": tuple(info["fan_box"])})
