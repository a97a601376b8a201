"""CAMUS register (NIfTI release under ``$DATASET_PATH/CAMUS``; REFERENCE §1.2).

Layout: ``database_nifti/patientXXXX/`` holds, per view (2CH, 4CH), ``patientXXXX_{view}_half_sequence.nii.gz``
+ ``_half_sequence_gt.nii.gz`` (an ED <-> ES cine, every frame labelled), ``patientXXXX_{view}_{ED,ES}[_gt].nii.gz``
(the two single frames) and ``Info_{view}.cfg`` (``key: value`` lines: ED, ES, NbFrame, EF, FrameRate,
ImageQuality, ...); ``database_split/subgroup_{training,validation,testing}.txt`` list the official 400/50/50
patients. Labels: 0 background, 1 LV endocardium, 2 LV myocardium, 3 LA.

Samples (one meta dict each; a video is one patient's half sequence in one view):
- train: one per frame of each half sequence (every frame is annotated);
- val / test: one per ED and per ES frame (the clinically scored frames), ``phase`` "ED" / "ES".
The ``_edes`` names read the same half-sequence frames but take the labels of the ED and ES frames from the
single-frame ``_ED_gt`` / ``_ES_gt`` files (only those two frames are annotated, in train as well).

Building a list reads the cfg files and the NIfTI headers (shapes, spacing), never the pixels; each video is
decoded and cached on first use (``sources.cache.LazyVideo``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.catalog import BadData, DatasetCatalog, DatasetRoots, MetadataCatalog
from data_schedule.check_data import finish_report, new_group, widen
from data_schedule.sources.base import VideoRecord, file_key
from data_schedule.sources.cache import LazyVideo
from data_schedule.sources.nifti import DataError
from data_schedule.sources.volume import NiftiSource, _nifti_spacing, read_nifti

logger = logging.getLogger(__name__)

FAMILY = "camus"
FOLDER = "CAMUS"
CLASSES = ["LV_endo", "LV_myo", "LA"]  # label values 1, 2, 3
COLORS = [(230, 60, 60), (60, 200, 80), (70, 120, 240)]
VIEWS = ("2CH", "4CH")
SPLIT_FILES = {"train": "training", "val": "validation", "test": "testing"}  # subgroup_<name>.txt
REQUIRED_INFO = ("ED", "ES", "NbFrame", "EF", "FrameRate", "ImageQuality")
QUALITIES = ("Good", "Medium", "Poor")


# ------------------------------------------------------------------------------------------------ root

def _resolve(base: str | None, how: str) -> Path:
    """``<base>/CAMUS``; ``base`` is ``$DATASET_PATH`` or ``data.roots.camus``."""
    if not base:
        raise DataError(f"CAMUS root not set: {DatasetRoots.how_to_set(FAMILY)} (the folder holding {FOLDER}/)")
    root = Path(base) / FOLDER
    if not root.is_dir():
        raise DataError(f"CAMUS folder not found: {root} ({how.lstrip('$')}={base}; expected {root}/database_nifti/ "
                        f"and {root}/database_split/); {DatasetRoots.how_to_set(FAMILY)} (the folder holding "
                        f"{FOLDER}/)")
    return root


# ------------------------------------------------------------------------------------------------ index files

def _number(raw: str) -> int | float | str:
    for cast in (int, float):
        try:
            return cast(raw)
        except ValueError:
            pass
    return raw


def read_info(path: str | Path) -> dict:
    """Parse and check an ``Info_{view}.cfg``.

    Returns every ``key: value`` line (numbers as int / float) plus the checked fields ``ed``, ``es`` (0-based
    frame indices into the half sequence, in either order), ``num_frames``, ``ef`` (%), ``fps`` and
    ``image_quality``. Raises a one-line ``DataError`` naming the file for an unreadable file, a line that is
    not ``key: value``, a missing key or a bad value.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise DataError(f"{path}: cannot read the CAMUS info file: {e.strerror or e}") from None
    raw: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        key, sep, value = line.partition(":")
        if not sep or not key.strip():
            raise DataError(f"{path}: line {n} {line.strip()[:40]!r} is not 'key: value'")
        raw[key.strip()] = value.strip()
    missing = [k for k in REQUIRED_INFO if k not in raw]
    if missing:
        raise DataError(f"{path}: missing key {missing[0]} (an Info_<view>.cfg needs {', '.join(REQUIRED_INFO)})")

    def value(key: str, cast, ok, what: str):
        try:
            v = cast(raw[key])
        except ValueError:
            v = None
        if v is None or not ok(v):
            raise DataError(f"{path}: {key} = {raw[key]!r}, expected {what}")
        return v

    n = value("NbFrame", int, lambda v: v >= 2, "an integer ≥ 2")
    ed = value("ED", int, lambda v: 1 <= v <= n, f"a frame number in 1..NbFrame={n}")
    es = value("ES", int, lambda v: 1 <= v <= n and v != ed, f"a frame number in 1..NbFrame={n} other than ED")
    ef = value("EF", float, lambda v: 0.0 <= v <= 100.0, "a percentage in 0..100")
    fps = value("FrameRate", float, lambda v: np.isfinite(v) and v > 0, "a positive number")
    quality = value("ImageQuality", str.title, lambda v: v in QUALITIES, " / ".join(QUALITIES))
    info = {k: _number(v) for k, v in raw.items()}
    return dict(info=info, ed=ed - 1, es=es - 1, num_frames=n, ef=ef, fps=fps, image_quality=quality)


def read_split(root: Path, part: str) -> tuple[Path, list[str]]:
    """(split file, patient names in file order) of ``part`` (train / val / test); names are not checked."""
    path = root / "database_split" / f"subgroup_{SPLIT_FILES[part]}.txt"
    try:
        names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    except OSError as e:
        raise DataError(f"CAMUS split file {path}: {e.strerror or e} (expected one patient name a line)") from None
    return path, list(dict.fromkeys(names))


def _header(path: Path, kind: str):
    """The nibabel image of ``path`` (header read, pixels not decoded)."""
    import nibabel as nib

    if not path.is_file():
        raise DataError(f"{kind} file {path}: file not found")
    try:
        return nib.load(str(path))
    except Exception as e:  # bad gzip, not a NIfTI file
        raise DataError(f"Cannot read {kind} file {path} as NIfTI: {type(e).__name__}: {e}") from None


def _thw(img, path: Path, kind: str, frames: bool) -> tuple[int, ...]:
    """(T, H, W) of a half sequence (``frames``) or (H, W) of a single frame, from nibabel's (W, H[, T]) shape."""
    shape = tuple(int(s) for s in img.shape)
    while len(shape) > (3 if frames else 2) and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) != (3 if frames else 2):
        raise DataError(f"{kind} file {path}: shape {shape}, expected {'(W, H, T)' if frames else '(W, H)'}")
    return tuple(reversed(shape))


def index_video(root: Path, patient: str, view: str, edes: bool = False) -> dict:
    """What a video's metas need, from its cfg and NIfTI headers: paths, info fields, num_frames, (H, W), spacing.

    Raises ``DataError`` naming the file: a missing / unreadable file, a label with another shape than its image
    (naming both), an image whose frame count differs from the cfg's NbFrame."""
    pdir = root / "database_nifti" / patient
    stem = pdir / f"{patient}_{view}"
    image, label = Path(f"{stem}_half_sequence.nii.gz"), Path(f"{stem}_half_sequence_gt.nii.gz")
    cfg = pdir / f"Info_{view}.cfg"
    info = read_info(cfg)
    img = _header(image, "image")
    thw = _thw(img, image, "image", frames=True)
    lab_thw = _thw(_header(label, "label"), label, "label", frames=True)
    if lab_thw != thw:
        raise DataError(f"label file {label}: shape (T, H, W)={lab_thw} differs from its image {image} {thw}")
    if thw[0] != info["num_frames"]:
        raise DataError(f"{image}: {thw[0]} frames, but {cfg} says NbFrame = {info['num_frames']}")
    out = dict(patient=patient, view=view, video_id=f"{patient}/{view}", image_path=str(image),
               label_path=str(label), cfg_path=str(cfg), size=thw[1:], spacing=_nifti_spacing(img), **info)
    if edes:
        for phase in ("ED", "ES"):
            gt = Path(f"{stem}_{phase}_gt.nii.gz")
            hw = _thw(_header(gt, "label"), gt, "label", frames=False)
            if hw != thw[1:]:
                raise DataError(f"label file {gt}: shape (H, W)={hw} differs from the frames of {image} {thw[1:]}")
            out[f"{phase.lower()}_label_path"] = str(gt)
    return out


# ------------------------------------------------------------------------------------------------ sources

@dataclass(frozen=True)
class EdEsSource:
    """A ``VideoSource``: the half sequence's frames with the labels of its ED and ES frames taken from the
    single-frame ``_ED_gt`` / ``_ES_gt`` files (0-based frame indices ``ed``, ``es``)."""

    image_path: str
    ed_label_path: str
    es_label_path: str
    ed: int
    es: int

    def read(self) -> VideoRecord:
        rec = read_nifti(self.image_path)
        for t, path in ((self.ed, self.ed_label_path), (self.es, self.es_label_path)):
            lab = read_nifti(path).frames
            if lab.shape[1:] != rec.frame_size or len(lab) != 1:
                raise DataError(f"label file {path}: shape {lab.shape}, expected one frame of {rec.frame_size} "
                                f"like {self.image_path}")
            rec.labels[t] = lab[0]
        return rec

    def key(self) -> str:
        return file_key(self.image_path, self.ed_label_path, self.es_label_path)


def _cache(v: dict, edes: bool) -> LazyVideo:
    n = v["num_frames"]
    if edes:
        src = EdEsSource(v["image_path"], v["ed_label_path"], v["es_label_path"], v["ed"], v["es"])
        return LazyVideo(src, len(CLASSES), num_frames=n, annotated_frames=sorted((v["ed"], v["es"])))
    return LazyVideo(NiftiSource(v["image_path"], v["label_path"], annotated="all"), len(CLASSES), num_frames=n,
                     annotated_frames=list(range(n)))


# ------------------------------------------------------------------------------------------------ samples

_VIDEO_KEYS = ("video_id", "patient", "view", "num_frames", "ed", "es", "ef", "fps", "image_quality", "spacing",
               "info", "image_path", "label_path", "cfg_path")


def _meta(v: dict, cache: LazyVideo, frame_idx: int) -> dict:
    phase = "ED" if frame_idx == v["ed"] else "ES" if frame_idx == v["es"] else None
    return dict({k: v[k] for k in _VIDEO_KEYS}, site=v["view"], frame_idx=frame_idx, phase=phase,
                annotated_frames=list(cache.annotated_frames), labeled=True, cache=cache)


def video_samples(v: dict, part: str, edes: bool = False) -> list[dict]:
    """Train: one sample per annotated frame (every frame; ED and ES only for ``edes``); val / test: ED then ES."""
    cache = _cache(v, edes)
    frames = cache.annotated_frames if part == "train" else [v["ed"], v["es"]]
    return [_meta(v, cache, t) for t in frames]


def load_split(view: str | None, part: str, edes: bool = False) -> list[dict]:
    """The sample metas of ``camus[_<view>][_edes]_<part>``. Training lists honour ``BadData`` (a bad video is
    left out and recorded under "skip"); evaluation lists raise on the first bad video."""
    root = DatasetRoots.get(FAMILY)
    split_file, patients = read_split(root, part)
    may_skip = part == "train" and BadData.may_skip()
    samples: list[dict] = []

    def bad(path: Path, err: DataError) -> None:
        if not may_skip:
            raise err
        logger.warning(f"Skipping a bad training video (data.bad_sample_policy=skip): {err}")
        BadData.record(str(path), str(err))

    for patient in patients:
        pdir = root / "database_nifti" / patient
        if not pdir.is_dir():
            bad(pdir, DataError(f"CAMUS split file {split_file} names {patient}, but {pdir} does not exist"))
            continue
        for vw in (view,) if view else VIEWS:
            try:
                v = index_video(root, patient, vw, edes)
            except DataError as err:
                bad(pdir / f"{patient}_{vw}_half_sequence.nii.gz", err)
                continue
            samples += video_samples(v, part, edes)
    if not samples:
        raise DataError(f"CAMUS {part} list under {root} has no samples ({split_file})")
    for i, s in enumerate(samples):
        s["sample_id"] = i
    return samples


# ------------------------------------------------------------------------------------------------ data check

def _check_video(root: Path, patient: str, view: str, g: dict, problem) -> None:
    """Decode one video (image, then label) and count it into group ``g``; ``problem(path, reason)`` for each
    fault."""
    g["videos"] += 1
    image_path = root / "database_nifti" / patient / f"{patient}_{view}_half_sequence.nii.gz"
    try:
        v = index_video(root, patient, view, edes=True)
    except DataError as e:
        problem(image_path, str(e))
        try:  # the ED / ES files were at fault: the half sequence can still be checked
            v = index_video(root, patient, view, edes=False)
        except DataError:
            return
    image = read_nifti(v["image_path"]).frames
    t, h, w = image.shape
    g["frames"] += t
    for key, x in (("frames_range", t), ("height_range", h), ("width_range", w)):
        g[key] = widen(g[key], x)
    if image.dtype != np.uint8:
        problem(image_path, f"image dtype is {image.dtype}, expected uint8 (what the clip mappers read)")
    del image
    label = read_nifti(v["label_path"]).frames
    g["labelled_videos"] += 1
    if not np.issubdtype(label.dtype, np.integer):
        problem(v["label_path"], f"label dtype is {label.dtype}, expected integers 0..{len(CLASSES)}")
        return
    values = {int(x) for x in np.unique(label)}
    g["label_values"] |= values
    bad = sorted(x for x in values if not 0 <= x <= len(CLASSES))
    if bad:
        problem(v["label_path"], f"label values {bad} outside 0..{len(CLASSES)}")
    empty = [int(i) for i in np.flatnonzero(~label.reshape(len(label), -1).any(1))]
    g["annotated_frames"] += len(label) - len(empty)
    if empty:
        problem(v["label_path"], f"frames {empty} are all background (every half-sequence frame is labelled)")


def scan_camus(root: str | Path) -> dict:
    """Check a CAMUS folder: split files, the patients they name, and per video its cfg, files (the ED / ES
    single frames included), shapes, frame count, dtypes and label values. Returns the report dict of
    ``data_schedule.check_data`` with the groups ``<split>/<view>`` (e.g. ``training/2CH``) in place of sites;
    every problem is collected, nothing stops at the first."""
    root = Path(root)
    groups = {f"{fname}/{view}": new_group() for fname in SPLIT_FILES.values() for view in VIEWS}
    problems: list[dict] = []

    def problem(group: str, path, reason: str) -> None:
        problems.append({"file": str(path), "reason": reason})
        groups[group]["problems"] += 1

    seen: dict[str, str] = {}
    for part, fname in SPLIT_FILES.items():
        first = f"{fname}/{VIEWS[0]}"
        try:
            split_file, patients = read_split(root, part)
        except DataError as e:
            for view in VIEWS:
                groups[f"{fname}/{view}"]["missing"] = True
            problem(first, root / "database_split" / f"subgroup_{fname}.txt", str(e))
            continue
        for patient in patients:
            if patient in seen:
                problem(first, split_file, f"{patient} is also listed in {seen[patient]}")
            seen.setdefault(patient, split_file.name)
            if not (root / "database_nifti" / patient).is_dir():
                problem(first, split_file, f"names {patient}, but {root / 'database_nifti' / patient} does not exist")
                continue
            for view in VIEWS:
                key = f"{fname}/{view}"
                try:
                    _check_video(root, patient, view, groups[key], lambda path, reason, k=key: problem(k, path, reason))
                except DataError as e:  # an unreadable image or label volume
                    problem(key, root / "database_nifti" / patient, str(e))
    return finish_report(root, len(CLASSES), groups, problems, list(groups))


# ------------------------------------------------------------------------------------------------ names

def dataset_name(view: str | None, part: str, edes: bool = False) -> str:
    """``camus[_2ch|_4ch][_edes]_<part>``."""
    return "_".join(["camus", *([view.lower()] if view else []), *(["edes"] if edes else []), part])


def register_all() -> None:
    """Record the family's root and every name; nothing is read until a name is used."""
    if FAMILY not in DatasetRoots.families():
        DatasetRoots.register(FAMILY, _resolve, env="DATASET_PATH", check=scan_camus)
    for view in (None, *VIEWS):
        for edes in (False, True):
            for part in SPLIT_FILES:
                name = dataset_name(view, part, edes)
                if name in DatasetCatalog:
                    continue
                DatasetCatalog.register(name, lambda v=view, p=part, e=edes: load_split(v, p, e))
                MetadataCatalog.set(name, classes=list(CLASSES), colors=list(COLORS), family=FAMILY,
                                    split="official", part=part, mode="train" if part == "train" else "evaluate",
                                    labeled=True, views=[view] if view else list(VIEWS),
                                    labels="ed_es_files" if edes else "half_sequence")


register_all()
