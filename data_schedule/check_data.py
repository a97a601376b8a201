"""Validate a CardiacUDC-layout dataset (real or EchoSynth) before training: scan every file, collect every
problem, never stop at the first one.

>>> report = scan_cardiac_udc("datasets/echo_synth/cardiacUDC_dataset")
>>> print(format_report(report))            # per-site table, problem list, summary line
>>> report["totals"]["problems"]            # 0 when the data is usable

What is checked, per site folder (``Site_*``), one video at a time (memory stays bounded by one video):

- every ``<video>_image.nii.gz``: readable gzip/NIfTI, 3-D, uint8, not all zero, fan crop possible on the
  first frame (the same checks ``data_schedule.sources.nifti.load_video`` applies when training);
- its ``<video>_label.nii.gz`` if present: readable, 3-D, integer dtype, same (T, H, W) as the image, values in
  ``0..num_classes``, at least one annotated (non-zero) frame;
- label files without an image (orphans), site folders without images, expected sites that are missing.

The report is a plain, JSON-serialisable dict::

    {"root": str, "num_classes": int, "expected_sites": [...],
     "sites": {site: {"missing", "videos", "frames", "annotated_frames", "labelled_videos", "unlabelled_videos",
                      "label_values", "height_range", "width_range", "frames_range", "other_files", "problems"}},
     "problems": [{"file": absolute path, "reason": str}],
     "totals": {"sites", "videos", "frames", "annotated_frames", "labelled_videos", "unlabelled_videos",
                "label_values", "height_range", "width_range", "frames_range", "problems"}}

Ranges are ``[min, max]`` (``None`` when nothing was readable); sizes are (H, W) after nibabel's (W, H, T) is
transposed to (T, H, W).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from data_schedule.sources.nifti import DataError, _load_volume

__all__ = ["EXPECTED_SITES", "resolve_dataset_dir", "scan_cardiac_udc", "format_report", "check_config_datasets",
           "new_group", "widen", "merge_range", "finish_report"]

logger = logging.getLogger(__name__)

EXPECTED_SITES = ["Site_G_100", "Site_G_20", "Site_G_29", "Site_R_126", "Site_R_52", "Site_R_73"]
DATASET_DIRNAME = "cardiacUDC_dataset"
IMAGE_SUFFIX = "_image.nii.gz"
LABEL_SUFFIX = "_label.nii.gz"


def resolve_dataset_dir(root: str | Path) -> Path:
    """``root/cardiacUDC_dataset`` if that folder exists, else ``root`` itself."""
    root = Path(root)
    return root / DATASET_DIRNAME if (root / DATASET_DIRNAME).is_dir() else root


# ----------------------------------------------------------------------------------------------------------
# per-group accumulator (a site here; a split, view or set in the other registers' checks)
# ----------------------------------------------------------------------------------------------------------
def new_group(missing: bool = False) -> dict[str, Any]:
    """The counters of one group of a report (see the module docstring)."""
    return dict(missing=missing, videos=0, frames=0, annotated_frames=0, labelled_videos=0, unlabelled_videos=0,
                label_values=set(), height_range=None, width_range=None, frames_range=None, other_files=[],
                problems=0)


def widen(rng: list[int] | None, value: int) -> list[int]:
    return [value, value] if rng is None else [min(rng[0], value), max(rng[1], value)]


def merge_range(a: list[int] | None, b: list[int] | None) -> list[int] | None:
    if a is None or b is None:
        return a or b
    return [min(a[0], b[0]), max(a[1], b[1])]


def _py(v: Any) -> Any:
    """A numpy scalar as a plain int/float (ints for integral values of integer dtypes)."""
    v = v.item() if isinstance(v, np.generic) else v
    return int(v) if isinstance(v, (bool, np.bool_)) else v


class _Scan:
    def __init__(self, root: Path, num_classes: int):
        self.root = root
        self.num_classes = num_classes
        self.sites: dict[str, dict[str, Any]] = {}
        self.problems: list[dict[str, str]] = []

    def problem(self, site: str | None, path: Path, reason: str) -> None:
        self.problems.append({"file": str(path), "reason": reason})
        if site is not None and site in self.sites:
            self.sites[site]["problems"] += 1

    # -- reading ------------------------------------------------------------------------------------------
    def read(self, site: str, path: Path, kind: str) -> np.ndarray | None:
        """(T, H, W) array in its on-disk dtype via the training loader's reader, or None after a problem."""
        try:
            return _load_volume(path, kind)
        except DataError as e:
            msg = str(e)
            detail = msg.split(f"{path}: ", 1)[-1]
            if msg.startswith("Cannot read"):
                self.problem(site, path, f"unreadable or truncated {kind} file (gzip/NIfTI): {detail}")
            elif "3-D" in msg:
                self.problem(site, path, f"{kind} is not 3-D: {detail}")
            else:
                self.problem(site, path, f"{kind}: {detail}")
        except MemoryError:
            self.problem(site, path, f"{kind} file too large to decode in memory")
        return None

    # -- one video ----------------------------------------------------------------------------------------
    def video(self, site: str, image_path: Path, label_path: Path | None) -> None:
        s = self.sites[site]
        s["videos"] += 1
        s["labelled_videos" if label_path is not None else "unlabelled_videos"] += 1
        shape = self._image(site, image_path)
        if label_path is not None:
            self._label(site, label_path, shape)

    def _image(self, site: str, path: Path) -> tuple[int, ...] | None:
        s = self.sites[site]
        image = self.read(site, path, "image")
        if image is None:
            return None
        t, h, w = image.shape
        s["frames"] += t
        s["frames_range"] = widen(s["frames_range"], t)
        s["height_range"] = widen(s["height_range"], h)
        s["width_range"] = widen(s["width_range"], w)
        if image.dtype != np.uint8:
            self.problem(site, path, f"image dtype is {image.dtype}, expected uint8")
        if t == 0 or not image.any():
            self.problem(site, path, "empty video (all pixels zero or no frames)")
        else:
            from data_schedule.curation.fan_crop import fan_bbox

            try:
                fan_bbox(image[0])
            except ValueError as e:
                self.problem(site, path, f"fan crop fails on the first frame: {e}")
        return image.shape

    def _label(self, site: str, path: Path, image_shape: tuple[int, ...] | None) -> None:
        s = self.sites[site]
        label = self.read(site, path, "label")
        if label is None:
            return
        if image_shape is not None and label.shape != image_shape:
            self.problem(site, path, f"label shape (T, H, W)={label.shape} differs from the image shape "
                                     f"{image_shape}")
        integer = np.issubdtype(label.dtype, np.integer)
        if not integer:
            self.problem(site, path, f"non-integer label dtype {label.dtype}, expected an integer type")
        # Frame by frame: only annotated frames need np.unique (most label frames are all zero).
        values: set = set()
        annotated = 0
        for frame in label:
            if frame.any():
                annotated += 1
                values.update(_py(v) for v in np.unique(frame))
            else:
                values.add(0)
        s["annotated_frames"] += annotated
        s["label_values"] |= values
        bad = sorted(v for v in values if not (0 <= v <= self.num_classes))
        if bad:
            shown = ", ".join(str(v) for v in bad[:10]) + (", ..." if len(bad) > 10 else "")
            self.problem(site, path, f"label values outside 0..{self.num_classes}: {shown}")
        if annotated == 0:
            self.problem(site, path, "labelled video with zero annotated frames (label is all zero)")

    # -- one site -----------------------------------------------------------------------------------------
    def site(self, site: str) -> None:
        sdir = self.root / site
        if not sdir.is_dir():
            self.sites[site] = new_group(missing=True)
            self.problem(site, sdir, "missing expected site folder")
            return
        s = self.sites[site] = new_group()
        files = sorted(p for p in sdir.iterdir() if p.is_file())
        images = [p for p in files if p.name.endswith(IMAGE_SUFFIX)]
        labels = [p for p in files if p.name.endswith(LABEL_SUFFIX)]
        s["other_files"] = [p.name for p in files if p not in images and p not in labels
                            and not p.name.startswith(".")]
        if not images:
            self.problem(site, sdir, f"empty site folder (no *{IMAGE_SUFFIX} files)")
        image_names = {p.name for p in images}
        for lab in labels:
            if lab.name.replace("_label", "_image") not in image_names:
                self.problem(site, lab, "orphan label file (no matching *_image.nii.gz)")
        for img in images:
            lab = img.with_name(img.name.replace("_image", "_label"))
            try:
                self.video(site, img, lab if lab.is_file() else None)
            except Exception as e:  # keep scanning whatever happens to one video
                logger.exception("check_data: unexpected error on %s", img)
                self.problem(site, img, f"unexpected error while checking: {type(e).__name__}: {e}")


def scan_cardiac_udc(root: str | Path, num_classes: int = 4, sites: list[str] | None = None) -> dict:
    """Scan a ``cardiacUDC_dataset`` folder (or the folder holding one) and report every problem found.

    ``sites`` (default: every ``Site_*`` folder present plus the expected sites) selects the site folders;
    a selected or expected site that is missing is reported as a problem. Raises ``DataError`` only if
    ``root`` is not a folder.
    """
    root = resolve_dataset_dir(root)
    if not root.is_dir():
        raise DataError(f"Dataset folder not found: {root}")
    scan = _Scan(root, int(num_classes))
    if sites is None:
        present = sorted(p.name for p in root.glob("Site_*") if p.is_dir())
        names = EXPECTED_SITES + [s for s in present if s not in EXPECTED_SITES]
    else:
        names = list(dict.fromkeys(sites))
    for site in names:
        scan.site(site)

    return finish_report(root, num_classes, scan.sites, scan.problems, EXPECTED_SITES)


def finish_report(root: str | Path, num_classes: int, groups: dict[str, dict], problems: list[dict],
                  expected: list[str]) -> dict:
    """The report dict of the module docstring from filled groups (their label value sets become sorted lists)
    and the problem list: totals summed over the groups, ranges merged."""
    keys = ("videos", "frames", "annotated_frames", "labelled_videos", "unlabelled_videos")
    totals: dict[str, Any] = {k: sum(g[k] for g in groups.values()) for k in keys}
    totals["sites"] = sum(not g["missing"] for g in groups.values())
    values: set = set()
    for g in groups.values():
        values |= set(g["label_values"])
        g["label_values"] = sorted(g["label_values"])
    totals["label_values"] = sorted(values)
    for k in ("height_range", "width_range", "frames_range"):
        rng = None
        for g in groups.values():
            rng = merge_range(rng, g[k])
        totals[k] = rng
    totals["problems"] = len(problems)
    return dict(root=str(root), num_classes=int(num_classes), expected_sites=list(expected), sites=groups,
                problems=problems, totals=totals)


# ----------------------------------------------------------------------------------------------------------
# text
# ----------------------------------------------------------------------------------------------------------
def _rng(r: list[int] | None) -> str:
    if r is None:
        return "-"
    return str(r[0]) if r[0] == r[1] else f"{r[0]}-{r[1]}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def summary_line(report: dict) -> str:
    t = report["totals"]
    return (f"{t['videos']} videos, {t['frames']} frames, {t['annotated_frames']} annotated frames, "
            f"{t['unlabelled_videos']} unlabelled videos; {_plural(t['problems'], 'problem')}")


def format_report(report: dict) -> str:
    """A per-site table, the problem list (``path — reason``, paths relative to the root) and a summary."""
    root = Path(report["root"])
    head = ["site", "videos", "labelled", "unlabelled", "frames", "annotated", "T range", "H range", "W range",
            "labels", "problems"]
    rows = []

    def row(name: str, s: dict, missing: bool = False) -> list[str]:
        if missing:
            return [name, "MISSING"] + ["-"] * (len(head) - 3) + [str(s["problems"])]
        vals = "{" + ",".join(str(v) for v in s["label_values"]) + "}" if s["label_values"] else "-"
        return [name, str(s["videos"]), str(s["labelled_videos"]), str(s["unlabelled_videos"]), str(s["frames"]),
                str(s["annotated_frames"]), _rng(s["frames_range"]), _rng(s["height_range"]),
                _rng(s["width_range"]), vals, str(s["problems"])]

    for name, s in report["sites"].items():
        rows.append(row(name, s, s.get("missing", False)))
    rows.append(row("total", report["totals"]))
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]

    def fmt(r: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()

    lines = [f"Dataset check: {root} (labels 0..{report['num_classes']})", fmt(head),
             "  ".join("-" * w for w in widths)]
    lines += [fmt(r) for r in rows[:-1]]
    lines += ["  ".join("-" * w for w in widths), fmt(rows[-1])]
    others = {n: s["other_files"] for n, s in report["sites"].items() if s.get("other_files")}
    if others:
        lines.append("")
        lines.append("Ignored files (not *_image/_label.nii.gz): " + "; ".join(
            f"{n}: {', '.join(f[:5])}{' ...' if len(f) > 5 else ''}" for n, f in others.items()))
    lines.append("")
    if report["problems"]:
        lines.append(f"Problems ({len(report['problems'])}):")
        for p in report["problems"]:
            path = Path(p["file"])
            try:
                shown = str(path.relative_to(root))
            except ValueError:
                shown = str(path)
            lines.append(f"  {shown} — {p['reason']}")
    else:
        lines.append("No problems found.")
    lines.append(summary_line(report))
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------
# configs (main.py --trainer_mode check_data)
# ----------------------------------------------------------------------------------------------------------
def check_config_datasets(cfg) -> tuple[str, int]:
    """Scan the dataset families behind ``cfg.data.train`` + ``cfg.data.evaluate`` (each family's root once).

    Returns ``(report text, number of problems)``. A family whose root cannot be found (e.g. ``DATASET_PATH``
    unset for ``cardiac_udc_*``) counts as one problem; names of other families are listed as not checked.
    """
    import data_schedule  # noqa: F401  (registers the catalog names, their metadata and their families' roots)
    from core.catalog import DatasetRoots, MetadataCatalog

    data = cfg.data
    names = list(data.get("train") or []) + [e if isinstance(e, str) else e["name"]
                                             for e in (data.get("evaluate") or [])]
    roots = data.get("roots") or {}
    families: dict[str, list[str]] = {}
    unchecked: list[str] = []
    for name in dict.fromkeys(names):
        family = getattr(MetadataCatalog.get(name), "family", None)
        if family in DatasetRoots.families() and DatasetRoots.checker(family) is not None:
            families.setdefault(family, []).append(name)
        else:
            unchecked.append(name)

    blocks: list[str] = []
    problems = 0
    for family, fam_names in families.items():
        if roots.get(family):
            DatasetRoots.set(family, str(roots.get(family)))
        title = f"== {family} ({', '.join(fam_names)}) =="
        try:
            root = DatasetRoots.get(family)
        except DataError as e:
            blocks.append(f"{title}\nPROBLEM: {e}\n1 problem")
            problems += 1
            continue
        report = DatasetRoots.checker(family)(root)
        blocks.append(f"{title}\n{format_report(report)}")
        problems += report["totals"]["problems"]
    if unchecked:
        blocks.append(f"Not checked (no data check registered for their family): {', '.join(unchecked)}")
    if not families and not unchecked:
        blocks.append("No datasets named in cfg.data.train / cfg.data.evaluate")
    blocks.append(f"Data check: {len(families)} dataset {'family' if len(families) == 1 else 'families'}, "
                  f"{_plural(problems, 'problem')}")
    return "\n\n".join(blocks), problems
