"""KiTS23 register (``$DATASET_PATH/KiTS23``; REFERENCE §1.5, ``neheller/kits23``).

Layout: ``dataset/case_XXXXX/imaging.nii.gz`` (CT, HU) and ``segmentation.nii.gz`` (0 background, 1 kidney,
2 tumour, 3 cyst); the imaging files come from ``kits23_download_data``. KiTS23 stores the axial slices on the
NIfTI's first axis; the affine says so and the volumes are read along it (``btcv.view_axes``).

Two label mappings of the same cases (``class_values``: class k = label ∈ values[k]):
- ``kits23_train`` / ``kits23_test``: one class ``kidney_tumour`` = {1, 2}, cysts are background — the protocol of
  seed 001 and ICL-SAM;
- ``kits23_regions_train`` / ``_test``: the challenge's overlapping evaluation regions ``kidney_and_masses`` =
  {1, 2, 3}, ``masses`` = {2, 3}, ``tumour`` = {2} (masks may overlap; ``VolumeSegEvaluator`` scores each region
  on its own).
The split is by case, seeded, stable under adding cases (``btcv.split_of``, 20 % test). One meta per slice, every
slice annotated; the default transform is a renal window W 400 / L 100 (−100..300 HU). Headers only at listing.
"""
from __future__ import annotations

from pathlib import Path

from core.catalog import DatasetCatalog, DatasetRoots, MetadataCatalog
from data_schedule.registers.btcv import _palette, split_of, volume_metas
from data_schedule.sources.nifti import DataError

FAMILY = "kits23"
MAPPINGS = {  # dataset prefix -> (class names, raw label values per class)
    "kits23": (["kidney_tumour"], [[1, 2]]),
    "kits23_regions": (["kidney_and_masses", "masses", "tumour"], [[1, 2, 3], [2, 3], [2]]),
}
RENAL_WINDOW = ({"name": "IntensityWindow", "low": -100.0, "high": 300.0},)  # W 400 / L 100 HU


def _resolve(base: str | None, how: str) -> Path:
    if not base:
        raise DataError(f"KiTS23 root not set: {DatasetRoots.how_to_set(FAMILY)} (the folder holding KiTS23/)")
    root = Path(base) / "KiTS23"
    if not (root / "dataset").is_dir():
        raise DataError(f"KiTS23 folder not found: {root}/dataset ({how.lstrip('$')}={base}); expected "
                        f"KiTS23/dataset/case_XXXXX/{{imaging,segmentation}}.nii.gz")
    return root


def list_cases(root: Path) -> list[tuple[str, Path, Path]]:
    """(case id, imaging, segmentation) of every ``dataset/case_*`` folder (a missing file is a DataError)."""
    out = []
    for case in sorted(p for p in (root / "dataset").glob("case_*") if p.is_dir()):
        img, seg = case / "imaging.nii.gz", case / "segmentation.nii.gz"
        for f, what in ((img, "imaging (kits23_download_data fetches it)"), (seg, "segmentation")):
            if not f.is_file():
                raise DataError(f"{case}: {f.name} is missing ({what})")
        out.append((case.name, img, seg))
    if not out:
        raise DataError(f"{root / 'dataset'}: no case_* folders")
    return out


def load_split(prefix: str, part: str, axis: str = "axial") -> list[dict]:
    root = DatasetRoots.get(FAMILY)
    classes, values = MAPPINGS[prefix]
    metas = []
    for case, img, seg in list_cases(root):
        if split_of(case) == part:
            metas += volume_metas(FAMILY, case, img, seg, 3, axis, RENAL_WINDOW, values)
    if not metas:
        raise DataError(f"{root}: no {part} case (the seeded 20 % test split is empty)")
    for i, m in enumerate(metas):
        m["sample_id"] = i
    return metas


def register_all() -> None:
    if FAMILY not in DatasetRoots.families():
        DatasetRoots.register(FAMILY, _resolve, env="DATASET_PATH")
    for prefix, (classes, _) in MAPPINGS.items():
        for part in ("train", "test"):
            name = f"{prefix}_{part}"
            if name in DatasetCatalog:
                continue
            DatasetCatalog.register(name, lambda p=prefix, q=part: load_split(p, q))
            MetadataCatalog.set(name, classes=list(classes), colors=_palette(len(classes)), family=FAMILY,
                                split="seeded_by_case", part=part, mode="train" if part == "train" else "evaluate",
                                labeled=True)


register_all()
