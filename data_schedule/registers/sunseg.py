"""SUN-SEG register (video polyp segmentation, REFERENCE §1.4): real data under ``$DATASET_PATH/SUN-SEG``.

Layout: ``TrainDataset/{Frame,GT}/<case>/`` and ``Test{Easy,Hard}Dataset/{Seen,Unseen}/{Frame,GT}/<case>/``;
a frame is ``Frame/<case>/<stem>.jpg``, its mask ``GT/<case>/<stem>.png`` (0 background, 255 polyp; binarised at
127 to label 1). Every frame is annotated. Frames are ordered by the numbers in their names (``natural_key``:
``..._a9_ayy_image0001`` before ``..._a10_ayy_image0001``), not lexically.

One video per case folder, read by ``FrameFolderSource`` through ``LazyVideo``: building a list only lists the
folders (frame count and annotated frames come from the listing), the frames are decoded and cached on first use.

Names and samples — one sample per frame in every set (each frame is annotated; test clips follow the 11-frame
clip protocol, the mapper scoring the centre frame, which is the sample's frame):

    sunseg_train               TrainDataset
    sunseg_easy_seen_test      TestEasyDataset/Seen
    sunseg_easy_unseen_test    TestEasyDataset/Unseen
    sunseg_hard_seen_test      TestHardDataset/Seen
    sunseg_hard_unseen_test    TestHardDataset/Unseen

Bad input is a one-line ``DataError``: a frame whose GT png is missing (naming the frame and the expected GT
path), a case folder without frames, a missing set folder, a missing root. For ``sunseg_train`` under
``data.bad_sample_policy=skip`` a bad case is left out and recorded in ``BadData``; test lists never skip.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from core.catalog import BadData, DatasetCatalog, DatasetRoots, MetadataCatalog
from data_schedule.check_data import finish_report, new_group, widen
from data_schedule.sources.cache import LazyVideo
from data_schedule.sources.frames import FRAME_EXTS, FrameFolderSource, _imread, _read_gt, list_frames, natural_key
from data_schedule.sources.nifti import DataError

logger = logging.getLogger(__name__)

FAMILY = "sunseg"
FOLDER = "SUN-SEG"
CLASSES = ["polyp"]  # label 1 = GT > 127
COLORS = [(240, 90, 200)]
GT_EXT = ".png"
#: set key -> folder under the root; names are ``sunseg_train`` and ``sunseg_<key>_test``
SETS = {"train": "TrainDataset", "easy_seen": "TestEasyDataset/Seen", "easy_unseen": "TestEasyDataset/Unseen",
        "hard_seen": "TestHardDataset/Seen", "hard_unseen": "TestHardDataset/Unseen"}


def dataset_name(key: str) -> str:
    return f"{FAMILY}_train" if key == "train" else f"{FAMILY}_{key}_test"


def _resolve(base: str | None, how: str) -> Path:
    """``<base>/SUN-SEG``; ``base`` is ``$DATASET_PATH`` or ``data.roots.sunseg``."""
    if not base:
        raise DataError(f"SUN-SEG root not set: {DatasetRoots.how_to_set(FAMILY)} (the folder holding "
                        f"{FOLDER}/TrainDataset, {FOLDER}/TestEasyDataset, ...)")
    root = Path(base) / FOLDER
    if not root.is_dir():
        raise DataError(f"SUN-SEG folder not found: {root} ({how.lstrip('$')}={base}); expected "
                        f"{root}/TrainDataset/Frame/<case>/*.jpg ({DatasetRoots.how_to_set(FAMILY)})")
    return root


def list_cases(set_dir: Path) -> list[str]:
    """Case folder names under ``set_dir/Frame``, in natural order; lists only."""
    frame_root = set_dir / "Frame"
    if not frame_root.is_dir():
        raise DataError(f"SUN-SEG set folder {frame_root}: not found (expected Frame/<case>/ and GT/<case>/ "
                        f"under {set_dir})")
    cases = sorted((p.name for p in frame_root.iterdir() if p.is_dir() and not p.name.startswith(".")),
                   key=natural_key)
    if not cases:
        raise DataError(f"SUN-SEG set folder {frame_root}: no case folders in it")
    return cases


def index_case(set_dir: Path, case: str) -> dict:
    """One case from its listing (nothing decoded): frame and GT folders, frame names in order. Raises a
    DataError naming the case folder without frames, or the first frame without its GT png."""
    frame_dir, gt_dir = set_dir / "Frame" / case, set_dir / "GT" / case
    frames = list_frames(frame_dir)
    if not frames:
        raise DataError(f"SUN-SEG case folder {frame_dir}: no .jpg frames in it")
    present = {p.name for p in gt_dir.iterdir()} if gt_dir.is_dir() else set()
    for f in frames:
        if f.stem + GT_EXT not in present:
            gt = gt_dir / (f.stem + GT_EXT)
            extra = "" if gt_dir.is_dir() else f" (its GT folder {gt_dir} does not exist)"
            raise DataError(f"SUN-SEG frame {f}: its ground truth {gt} is missing{extra}")
    return dict(case=case, frame_dir=str(frame_dir), gt_dir=str(gt_dir), frames=[f.name for f in frames])


def _case_samples(entry: dict, key: str) -> list[dict]:
    """One meta per frame; the metas of a case share one ``LazyVideo`` (decoded once, on first use)."""
    n = len(entry["frames"])
    cache = LazyVideo(FrameFolderSource(entry["frame_dir"], entry["gt_dir"], GT_EXT), len(CLASSES),
                      num_frames=n, annotated_frames=list(range(n)))
    return [dict(video_id=entry["case"], case=entry["case"], site=key, set=SETS[key], frame_idx=t,
                 frame_file=name, num_frames=n, labeled=True, cache=cache)
            for t, name in enumerate(entry["frames"])]


def load_set(key: str) -> list[dict]:
    """The sample metas of one set (one per frame of every case, cases in natural order)."""
    root = DatasetRoots.get(FAMILY)
    set_dir = root / SETS[key]
    may_skip = key == "train" and BadData.may_skip()
    samples: list[dict] = []
    for case in list_cases(set_dir):
        try:
            entry = index_case(set_dir, case)
        except DataError as err:
            if not may_skip:
                raise
            logger.warning(f"Skipping a bad training case (data.bad_sample_policy=skip): {err}")
            BadData.record(str(set_dir / "Frame" / case), str(err))
            continue
        samples += _case_samples(entry, key)
    if not samples:
        raise DataError(f"Dataset {dataset_name(key)} under {set_dir} has no samples")
    for i, s in enumerate(samples):
        s["sample_id"] = i
    return samples


# ---------------------------------------------------------------------------------------------- data check

def _scan_case(g: dict, problem, frame_dir: Path, gt_dir: Path) -> None:
    """Decode every frame and mask of one case (one image at a time) with the training reader's checks."""
    g["videos"] += 1
    frames = list_frames(frame_dir)
    g["other_files"] += [f"{frame_dir.name}/{p.name}" for p in sorted(frame_dir.iterdir())
                         if p.is_file() and p.suffix.lower() not in FRAME_EXTS and not p.name.startswith(".")]
    if not frames:
        problem(frame_dir, "case folder with no frames")
        return
    g["labelled_videos"] += 1
    g["frames"] += len(frames)
    g["frames_range"] = widen(g["frames_range"], len(frames))
    if not gt_dir.is_dir():
        problem(gt_dir, f"missing GT folder for the {len(frames)} frames of {frame_dir}")
    else:
        stems = {f.stem for f in frames}
        for p in sorted(gt_dir.iterdir(), key=lambda p: natural_key(p.name)):
            if p.is_file() and p.suffix == GT_EXT and p.stem not in stems:
                problem(p, "orphan GT mask (no frame of that name)")
    first = None
    for f in frames:
        try:
            img = _imread(f, "frame")
        except DataError as e:
            problem(f, str(e).split(f"{f}: ", 1)[-1])
            continue
        if first is None:
            first = (f, img.shape, img.dtype)
            g["height_range"] = widen(g["height_range"], img.shape[0])
            g["width_range"] = widen(g["width_range"], img.shape[1])
            if img.dtype != np.uint8:
                problem(f, f"frame dtype {img.dtype}, expected uint8")
        elif (img.shape, img.dtype) != first[1:]:
            problem(f, f"shape {img.shape} {img.dtype} differs from the case's first frame {first[0].name} "
                       f"{first[1]} {first[2]}")
        gt = gt_dir / (f.stem + GT_EXT)
        if not gt.is_file():
            if gt_dir.is_dir():
                problem(f, f"frame without its ground truth (expected {gt})")
            continue
        try:
            lab = _read_gt(gt, f, img.shape[:2], binarize=True, threshold=127)
        except DataError as e:
            problem(gt, str(e).split(f"{gt}: ", 1)[-1])
            continue
        g["annotated_frames"] += 1
        g["label_values"] |= {int(v) for v in np.unique(lab)}


def scan_sunseg(root: str | Path) -> dict:
    """Check a ``SUN-SEG`` folder: every expected set folder, every case, frame and mask (decoded with the
    training reader), every problem collected. The report has the shape documented in ``check_data`` with the
    five sets (``TrainDataset``, ``TestEasyDataset/Seen``, ...) as its groups (under ``sites``)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"Dataset folder not found: {root}")
    groups: dict[str, dict[str, Any]] = {}
    problems: list[dict[str, str]] = []
    for folder in SETS.values():
        set_dir = root / folder

        def problem(path: Path, reason: str, folder: str = folder) -> None:
            problems.append({"file": str(path), "reason": reason})
            groups[folder]["problems"] += 1

        if not (set_dir / "Frame").is_dir():
            groups[folder] = new_group(missing=True)
            problem(set_dir / "Frame", "missing expected set folder")
            continue
        g = groups[folder] = new_group()
        cases = sorted((p for p in (set_dir / "Frame").iterdir() if p.is_dir() and not p.name.startswith(".")),
                       key=lambda p: natural_key(p.name))
        if not cases:
            problem(set_dir / "Frame", "set folder with no case folders")
        names = {p.name for p in cases}
        if (set_dir / "GT").is_dir():
            for p in sorted((set_dir / "GT").iterdir(), key=lambda p: natural_key(p.name)):
                if p.is_dir() and p.name not in names:
                    problem(p, "orphan GT case folder (no Frame folder of that name)")
        for case in cases:
            try:
                _scan_case(g, problem, case, set_dir / "GT" / case.name)
            except Exception as e:  # keep scanning whatever happens to one case
                logger.exception("check_data: unexpected error on %s", case)
                problem(case, f"unexpected error while checking: {type(e).__name__}: {e}")

    return finish_report(root, len(CLASSES), groups, problems, list(SETS.values()))


# ---------------------------------------------------------------------------------------------- catalog

def register_all() -> None:
    """Record the family's root and the five names; nothing is read until a name is used."""
    if FAMILY not in DatasetRoots.families():
        DatasetRoots.register(FAMILY, _resolve, env="DATASET_PATH", check=scan_sunseg)
    for key in SETS:
        name = dataset_name(key)
        if name in DatasetCatalog:
            continue
        DatasetCatalog.register(name, lambda k=key: load_set(k))
        train = key == "train"
        MetadataCatalog.set(name, classes=list(CLASSES), colors=list(COLORS), family=FAMILY,
                            split=key, part="train" if train else "test",
                            mode="train" if train else "evaluate", labeled=True, folder=SETS[key])


register_all()
