"""BTCV register (``$DATASET_PATH/BTCV``; REFERENCE §1.5) and the embedded CTSynth in the same layout.

Layout: ``RawData/Training/img/img00XX.nii.gz`` (CT, HU) and ``RawData/Training/label/label00XX.nii.gz`` (13
organs: 1 spleen, 2 right kidney, 3 left kidney, 4 gallbladder, 5 esophagus, 6 liver, 7 stomach, 8 aorta, 9 IVC,
10 portal/splenic vein, 11 pancreas, 12 right adrenal, 13 left adrenal). The 20 unlabelled test scans
(``RawData/Testing``) are not registered. ``ct_synth`` (``data_schedule/synthetic/ct_synth.py``) has the same layout
with its own 4 classes (1 spleen, 2 right kidney, 3 left kidney, 4 liver).

Names: ``btcv_train`` / ``btcv_test`` and ``ct_synth_train`` / ``ct_synth_test``. BTCV's split is by case and
seeded: a case goes to test when the hash of (seed 0, its id) falls in the lowest ``test_share`` (20 %) of the hash
range (:func:`split_of`) — stable when cases are added or removed, the same on every machine. CTSynth's 16 volumes
split 12 / 4 (``img0013``–``img0016`` test: its volumes are i.i.d. draws, so any fixed choice is fair). A volume is a video of its
slices along a body axis (axial by default; ``coronal`` / ``sagittal`` through ``load_split(..., axis=)``), found
from the affine, not assumed (:func:`view_axes`: BTCV stacks axial slices on the NIfTI's third axis, KiTS23 on its
first). One meta per slice (train and test; ``per_video=True`` evaluation makes them one per
volume), every slice annotated (empty ones included), with ``spacing`` (dy, dx), ``voxel_spacing`` (dz, dy, dx)
mm in the video's (T, H, W) order, ``class_values`` (class k = label value k + 1) and ``default_transforms`` (an
abdominal soft-tissue window, W 400 / L 40 HU: −160..240, so the uint8 clip mappers read it).

Building a list reads the NIfTI headers only (shape, zooms, affine); each volume is decoded and cached on first use
(``LazyVideo``: after that, slices are read from a memory map, never the whole volume).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.catalog import DatasetCatalog, DatasetRoots, MetadataCatalog
from data_schedule.sources.base import VideoRecord, file_key
from data_schedule.sources.cache import LazyVideo
from data_schedule.sources.nifti import DataError
from data_schedule.sources.volume import read_nifti

BTCV_CLASSES = ["spleen", "kidney_R", "kidney_L", "gallbladder", "esophagus", "liver", "stomach", "aorta", "IVC",
                "portal_splenic_vein", "pancreas", "adrenal_R", "adrenal_L"]
CT_SYNTH_CLASSES = ["spleen", "kidney_R", "kidney_L", "liver"]
ABDOMEN_WINDOW = ({"name": "IntensityWindow", "low": -160.0, "high": 240.0},)  # W 400 / L 40 HU
AXES = ("axial", "coronal", "sagittal")
#: per view, the world directions of its (T, H, W) axes: axial slices stack along S-I, with rows A-P, columns L-R
VIEW_DIRECTIONS = {"axial": ("SI", "AP", "LR"), "coronal": ("AP", "SI", "LR"), "sagittal": ("LR", "SI", "AP")}
REPO_ROOT = Path(__file__).resolve().parents[2]
TEST_SHARE = 0.2


def _palette(n: int) -> list[tuple[int, int, int]]:
    import matplotlib

    cmap = matplotlib.colormaps["tab20"]
    return [tuple(int(255 * c) for c in cmap(i % 20)[:3]) for i in range(n)]


def split_of(case: str, seed: int = 0, test_share: float = TEST_SHARE) -> str:
    """"test" or "train" for a case id, from a hash (stable under adding cases, machine-independent)."""
    h = int(hashlib.sha1(f"{seed}|{case}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "test" if h < test_share else "train"


def _resolve_btcv(base: str | None, how: str) -> Path:
    if not base:
        raise DataError(f"BTCV root not set: {DatasetRoots.how_to_set('btcv')} (the folder holding BTCV/), or use the "
                        f"embedded ct_synth_* datasets")
    root = Path(base) / "BTCV"
    if not (root / "RawData" / "Training" / "img").is_dir():
        raise DataError(f"BTCV folder not found: {root}/RawData/Training/img ({how.lstrip('$')}={base}); expected "
                        f"BTCV/RawData/Training/{{img,label}}/")
    return root


def _resolve_ct_synth(base: str | None, how: str) -> Path:
    from data_schedule.synthetic.ct_synth import ensure_ct_synth

    return ensure_ct_synth(base or REPO_ROOT / "datasets")


def view_axes(affine: np.ndarray, axis: str) -> tuple[int, int, int]:
    """The array axes (of the NIfTI's stored x, y, z order) that become (T, H, W) for the ``axis`` view, from the
    affine's orientation (``nibabel.aff2axcodes``): BTCV stores axial slices along its third axis, KiTS23 along its
    first; the affine says which. Directions within an axis (flips) are kept as stored."""
    import nibabel as nib

    codes = nib.aff2axcodes(affine)
    by_dir = {d: i for i, c in enumerate(codes) for d in ("SI", "AP", "LR") if c in d}
    if len(by_dir) != 3:
        raise DataError(f"affine orientation {codes} does not name the three body axes")
    return tuple(by_dir[d] for d in VIEW_DIRECTIONS[axis])


@dataclass(frozen=True)
class AxisNiftiSource:
    """A CT image + label pair as a video of slices along ``axis`` (axial / coronal / sagittal, found from the
    affine: :func:`view_axes`); image and label must agree in shape and affine. ``read()`` gives (T, H, W) in the
    stored dtype, every slice annotated, ``spacing`` (dy, dx) mm."""

    image_path: str
    label_path: str
    axis: str = "axial"

    def read(self) -> VideoRecord:
        shape, zooms, affine = check_pair(Path(self.image_path), Path(self.label_path))
        rec = read_nifti(self.image_path, self.label_path, "all")  # stored (x, y, z) as (z, y, x)
        t, h, w = view_axes(affine, self.axis)
        perm = (2 - t, 2 - h, 2 - w)
        if perm == (0, 1, 2):
            return VideoRecord(frames=rec.frames, labels=rec.labels, spacing=(zooms[h], zooms[w]), source=rec.source)
        frames = np.ascontiguousarray(rec.frames.transpose(perm))
        label = np.stack([rec.labels[i] for i in range(rec.num_frames)]).transpose(perm)
        return VideoRecord(frames=frames, labels={i: label[i] for i in range(len(label))},
                           spacing=(zooms[h], zooms[w]), source=rec.source)

    @property
    def where(self) -> str:
        return self.image_path

    def key(self) -> str:
        return file_key(self.image_path, self.label_path) + f"|{self.axis}"


def _header(path: Path):
    import nibabel as nib

    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        return nib.load(str(path))
    except Exception as e:
        raise DataError(f"Cannot read {path} as NIfTI: {type(e).__name__}: {e}") from None


def check_pair(image: Path, label: Path) -> tuple:
    """(shape, zooms, affine) of an image whose label file has the same shape and affine (else DataError)."""
    img, lab = _header(image), _header(label)
    if img.shape[:3] != lab.shape[:3]:
        raise DataError(f"label {label} has shape {lab.shape[:3]}, its image {image} {img.shape[:3]}; expected the "
                        f"same (x, y, z)")
    if not np.allclose(img.affine, lab.affine, atol=1e-3):
        raise DataError(f"label {label} and image {image} have different affines "
                        f"({np.round(lab.affine, 3).tolist()} vs {np.round(img.affine, 3).tolist()}); "
                        f"expected the same voxel grid")
    if len(img.shape) != 3:
        raise DataError(f"{image}: shape {img.shape}, expected a 3-D volume (x, y, z)")
    return img.shape, tuple(float(str(np.float32(z))) for z in img.header.get_zooms()[:3]), img.affine


def list_cases(root: Path) -> list[tuple[str, Path, Path]]:
    """(case id, image, label) of every ``img/img*.nii.gz`` (a missing label file is a DataError)."""
    img_dir, lab_dir = root / "RawData" / "Training" / "img", root / "RawData" / "Training" / "label"
    out = []
    for img in sorted(img_dir.glob("img*.nii.gz")):
        case = img.name[len("img"):-len(".nii.gz")]
        lab = lab_dir / f"label{case}.nii.gz"
        if not lab.is_file():
            raise DataError(f"{img}: its label file {lab} is missing")
        out.append((f"img{case}", img, lab))
    if not out:
        raise DataError(f"{img_dir}: no img*.nii.gz volumes")
    return out


def volume_metas(family: str, case: str, image: Path, label: Path, num_classes: int, axis: str = "axial",
                 window=ABDOMEN_WINDOW, class_values: list[list[int]] | None = None) -> list[dict]:
    """One meta per slice of a volume (headers only)."""
    if axis not in AXES:
        raise DataError(f"axis must be one of {', '.join(AXES)}, got {axis!r}")
    shape, zooms, affine = check_pair(image, label)
    t, h, w = view_axes(affine, axis)
    n = int(shape[t])
    voxel = (zooms[t], zooms[h], zooms[w])
    cache = LazyVideo(AxisNiftiSource(str(image), str(label), axis), num_classes, num_frames=n)
    values = class_values or [[k + 1] for k in range(num_classes)]
    return [dict(video_id=case, frame_idx=t, num_frames=n, site=family, cache=cache,
                 annotated_frames=list(range(n)), labeled=True, spacing=voxel[1:], voxel_spacing=voxel,
                 class_values=values, default_transforms=[dict(w) for w in window], axis=axis)
            for t in range(n)]


def load_split(family: str, part: str, num_classes: int, axis: str = "axial") -> list[dict]:
    root = DatasetRoots.get(family)
    metas = []
    for case, img, lab in list_cases(root):
        if (split_of(case) if family != "ct_synth" else ("test" if int(case[3:]) > 12 else "train")) == part:
            metas += volume_metas(family, case, img, lab, num_classes, axis)
    if not metas:
        raise DataError(f"{root}: no {part} case (the seeded {int(TEST_SHARE * 100)} % test split is empty)")
    for i, m in enumerate(metas):
        m["sample_id"] = i
    return metas


def register_all() -> None:
    for family, resolve, env, classes in (("btcv", _resolve_btcv, "DATASET_PATH", BTCV_CLASSES),
                                          ("ct_synth", _resolve_ct_synth, "CT_SYNTH_ROOT", CT_SYNTH_CLASSES)):
        if family not in DatasetRoots.families():
            DatasetRoots.register(family, resolve, env=env,
                                  default=str(REPO_ROOT / "datasets") if family == "ct_synth" else None)
        for part in ("train", "test"):
            name = f"{family}_{part}"
            if name in DatasetCatalog:
                continue
            DatasetCatalog.register(name, lambda f=family, p=part, k=len(classes): load_split(f, p, k))
            MetadataCatalog.set(name, classes=list(classes), colors=_palette(len(classes)), family=family,
                                split="seeded_by_case", part=part, mode="train" if part == "train" else "evaluate",
                                labeled=True)


register_all()
