"""Frame-folder reader (SUN-SEG ``Frame/<case>/*.jpg`` + ``GT/<case>/*.png``) to a ``VideoRecord``.

Frames are ordered by the numbers in their names, not lexically: SUN-SEG names look like
``case_M_20181001100941_0U62372100109341_1_005_001-1_a10_ayy_image0001.jpg``, and lexical order puts ``a10``
before ``a9``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_schedule.sources.base import DataError, VideoRecord, file_key

__all__ = ["FRAME_EXTS", "FrameFolderSource", "list_frames", "natural_key", "read_frame_folder"]

FRAME_EXTS = (".jpg", ".jpeg", ".png")
_DIGITS = re.compile(r"(\d+)")


def natural_key(name: str) -> tuple:
    """Sort key that compares digit runs as numbers: "img2" < "img10", "a9_image0003" < "a10_image0001".

    Text parts compare case-insensitively; the name itself breaks ties ("img01" vs "img1") so the order is total.
    """
    parts = _DIGITS.split(name)  # text, digits, text, ... (always starts and ends with a text part)
    return tuple(int(p) if i % 2 else p.lower() for i, p in enumerate(parts)), name


def list_frames(frame_dir: str | Path) -> list[Path]:
    """The JPG / JPEG / PNG files directly in ``frame_dir``, in natural order. Lists only; decodes nothing."""
    frame_dir = Path(frame_dir)
    if not frame_dir.is_dir():
        raise DataError(f"frame folder {frame_dir}: not found (expected a folder of .jpg / .png frames)")
    files = [p for p in frame_dir.iterdir() if p.is_file() and p.suffix.lower() in FRAME_EXTS]
    return sorted(files, key=lambda p: natural_key(p.name))


def _imread(path: Path, what: str) -> np.ndarray:
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)  # stored bit depth and channel count
    if img is None:
        raise DataError(f"{what} {path}: OpenCV cannot decode it (expected a JPG or PNG image)")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    elif img.ndim == 3:  # OpenCV gives BGR(A); we keep RGB and drop alpha
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGB if img.shape[2] == 4 else cv2.COLOR_BGR2RGB)
    return img


def _read_gt(path: Path, frame: Path, size: tuple[int, int], binarize: bool, threshold: int) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"frame {frame}: its ground truth {path} is missing")
    gt = _imread(path, "ground truth")
    if gt.ndim == 3:
        if not (gt == gt[..., :1]).all():
            raise DataError(f"ground truth {path}: colour mask with differing channels, expected a grey mask")
        gt = gt[..., 0]
    if gt.shape != size:
        raise DataError(f"ground truth {path}: size (H, W)={gt.shape}, expected its frame's {size}")
    return (gt > threshold).astype(np.uint8) if binarize else gt


def read_frame_folder(frame_dir: str | Path, gt_dir: str | Path | None = None, gt_ext: str = ".png",
                      binarize: bool = True, threshold: int = 127) -> VideoRecord:
    """Read a folder of frames (and optionally their masks) as one video.

    frame_dir: JPG / JPEG / PNG frames, ordered by :func:`natural_key`; all of one size and channel count.
               Colour frames become T×H×W×3 RGB, grey frames T×H×W; the stored dtype is kept.
    gt_dir:    a folder holding, for every frame, ``<frame stem><gt_ext>``; every frame is then annotated (an empty
               mask is an annotated frame without foreground). None: no labels.
    binarize:  True: label = (mask > threshold) as uint8 0/1 (SUN-SEG masks are 0/255); False: the mask values.
    """
    frame_dir = Path(frame_dir)
    files = list_frames(frame_dir)
    if not files:
        raise DataError(f"frame folder {frame_dir}: no .jpg / .jpeg / .png frames in it")
    frames = [_imread(files[0], "frame")]
    for f in files[1:]:
        img = _imread(f, "frame")
        if img.shape != frames[0].shape or img.dtype != frames[0].dtype:
            raise DataError(f"frame {f}: shape {img.shape} {img.dtype} differs from the folder's first frame "
                            f"{files[0].name} {frames[0].shape} {frames[0].dtype}")
        frames.append(img)
    labels: dict[int, np.ndarray] = {}
    if gt_dir is not None:
        gt_dir = Path(gt_dir)
        if not gt_dir.is_dir():
            raise DataError(f"ground-truth folder {gt_dir}: not found (expected the masks of {frame_dir})")
        size = frames[0].shape[:2]
        labels = {t: _read_gt(gt_dir / (f.stem + gt_ext), f, size, binarize, threshold) for t, f in enumerate(files)}
    return VideoRecord(frames=np.stack(frames), labels=labels, spacing=None, fps=None, source=str(frame_dir))


@dataclass(frozen=True)
class FrameFolderSource:
    """A ``VideoSource`` for one frame folder (+ mask folder); the key covers every file in both."""

    frame_dir: str
    gt_dir: str | None = None
    gt_ext: str = ".png"
    binarize: bool = True

    def read(self) -> VideoRecord:
        return read_frame_folder(self.frame_dir, self.gt_dir, self.gt_ext, self.binarize)

    def key(self) -> str:
        return file_key(*[p for p in (self.frame_dir, self.gt_dir) if p is not None])

    @property
    def where(self) -> str:
        return str(self.frame_dir)
