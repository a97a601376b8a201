"""CardiacUDC register (real data under ``$DATASET_PATH/cardiacUDC_dataset``) and the embedded synthetic copy
(``echo_synth_*``, same on-disk layout, generated on first use). One code path serves both.

Layout (REFERENCE 1.1): ``<root>/Site_*/<video>_image.nii.gz`` with an optional ``<video>_label.nii.gz``
(no label file = unlabelled video); an annotated frame is one whose label frame is non-zero.

Samples (seed project protocol) — one meta dict per sample:
- train: one per annotated frame of each training video (the mapper samples a 7-frame clip around it);
- test/val: one per annotated frame; the mapper reads an 11-frame clip whose 6th frame (``clip_t`` 5) is the
  annotated one and only that frame is scored;
- unlabeled: one per frame of every video (labelled or not), for semi-supervised methods. It includes the test
  videos' frames (transductive use); ``random_unlabeled`` leaves out the random split's test videos (every frame
  of the training-split videos and of the videos without labels), the honest pool for the random protocol.
At video ends the clip indices are clamped to the video (the first/last frame repeats), so the annotated frame
always stays at the clip's centre; see ``data_schedule/samplers/frame_samplers.py``.

Splits: ``random`` = seeded (seed 2024) 80/20 split over labelled videos of all sites; ``site`` = train
Site_G_100 + Site_R_126, val Site_G_20 + Site_R_52, test Site_G_29.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from core.catalog import DatasetCatalog, MetadataCatalog
from core.errors import ConfigError
from data_schedule.sources.nifti import DataError, load_video

logger = logging.getLogger(__name__)

CLASSES = ["LV", "LA", "RA", "RV"]  # label values 1..4 (REFERENCE 1.1: GraphEcho/GDKVM convention)
COLORS = [(230, 60, 60), (60, 200, 80), (70, 120, 240), (240, 210, 50)]
SITES = ["Site_G_100", "Site_G_20", "Site_G_29", "Site_R_126", "Site_R_52", "Site_R_73"]
RANDOM_SPLIT_SITES = [s for s in SITES if s != "Site_R_73"]  # Site_R_73 has no labels
SITE_SPLIT = {"train": ["Site_G_100", "Site_R_126"], "val": ["Site_G_20", "Site_R_52"], "test": ["Site_G_29"]}
RANDOM_SPLIT_SEED = 2024
RANDOM_TRAIN_FRACTION = 0.8
REPO_ROOT = Path(__file__).resolve().parents[2]

#: embedded families: (EchoSynth preset, environment variable of the root, default root under the repository)
SYNTH_FAMILIES: dict[str, tuple[str, str, str]] = {
    "echo_synth": ("v2", "ECHO_SYNTH_ROOT", "datasets/echo_synth"),
    "echo_synth_v1": ("v1", "ECHO_SYNTH_V1_ROOT", "datasets/echo_synth_v1"),
}
# Dataset roots; set_root() (called by main from cfg.data.roots) or the environment override the defaults.
_ROOTS: dict[str, str | None] = {"cardiac_udc": None, **dict.fromkeys(SYNTH_FAMILIES)}


def set_root(prefix: str, path: str | None) -> None:
    if prefix not in _ROOTS:
        raise ConfigError(f"Unknown dataset family {prefix!r}; expected one of {sorted(_ROOTS)}")
    if _ROOTS[prefix] != path:
        _ROOTS[prefix] = path
        for name in DatasetCatalog.names():  # roots changed: built lists are stale
            if name.startswith(prefix + "_"):
                DatasetCatalog._cache.pop(name, None)


def dataset_root(prefix: str) -> Path:
    """The ``cardiacUDC_dataset`` folder of a family; generates the embedded data on first use (EchoSynth v2 for
    ``echo_synth``, the v1 preset for ``echo_synth_v1``)."""
    if prefix in SYNTH_FAMILIES:
        from data_schedule.synthetic.echo_synth import ensure_echo_synth

        preset, env, default = SYNTH_FAMILIES[prefix]
        base = _ROOTS[prefix] or os.environ.get(env) or REPO_ROOT / default
        return Path(ensure_echo_synth(base, preset=preset))
    base = _ROOTS["cardiac_udc"] or os.environ.get("DATASET_PATH")
    if not base:
        raise DataError(
            "CardiacUDC root not set: export DATASET_PATH=/path/holding/cardiacUDC_dataset (or set "
            "data.roots.cardiac_udc), or use the embedded echo_synth_* datasets instead")
    root = Path(base) / "cardiacUDC_dataset"
    if not root.is_dir():
        raise DataError(f"CardiacUDC folder not found: {root} (DATASET_PATH={base}); expected "
                        f"{root}/Site_G_100/..., or use the embedded echo_synth_* datasets")
    return root


def list_videos(root: Path, sites: list[str]) -> list[dict]:
    """Scan site folders: one entry per ``*_image.nii.gz`` with its label file (or None), sorted."""
    out = []
    for site in sites:
        sdir = root / site
        if not sdir.is_dir():
            raise DataError(f"Site folder missing: {sdir} (expected sites {SITES})")
        images = sorted(sdir.glob("*_image.nii.gz"))
        if not images:
            raise DataError(f"Site folder {sdir} holds no *_image.nii.gz files")
        for img in images:
            lab = img.with_name(img.name.replace("_image", "_label"))
            out.append(dict(site=site, video=img.name[: -len("_image.nii.gz")], image_path=str(img),
                            label_path=str(lab) if lab.exists() else None))
    return out


# What to do with a video that cannot be read or fails validation while building a *training* list:
# "error" (default) raises naming the file; "skip" leaves the video out, logs it and records it in SKIPPED.
# Evaluation lists never skip. Set from cfg.data.bad_sample_policy by main.
_BAD_SAMPLE_POLICY = {"policy": "error"}
SKIPPED: list[tuple[str, str]] = []  # (file, reason) of videos left out under "skip"


def set_bad_sample_policy(policy: str) -> None:
    if policy not in ("error", "skip"):
        raise ConfigError(f"data.bad_sample_policy must be 'error' or 'skip', got {policy!r}")
    if _BAD_SAMPLE_POLICY["policy"] != policy or policy == "skip":
        # lists built under the other policy (or whose skips were already reported) are rebuilt
        _BAD_SAMPLE_POLICY["policy"] = policy
        DatasetCatalog.clear_cache()
    SKIPPED.clear()


def _decode(entries: list[dict], may_skip: bool = False) -> list[dict]:
    """Attach the decoded/cached video (frames, annotated frames, crop box) to each entry."""
    out = []
    for e in entries:
        try:
            v = load_video(e["image_path"], e["label_path"], num_classes=len(CLASSES))
        except DataError as err:
            if not (may_skip and _BAD_SAMPLE_POLICY["policy"] == "skip"):
                raise
            logger.warning(f"Skipping a bad training video (data.bad_sample_policy=skip): {err}")
            SKIPPED.append((e["image_path"], str(err)))
            continue
        out.append({**e, "video_id": f"{e['site']}/{e['video']}", "num_frames": v.num_frames,
                    "annotated_frames": v.annotated_frames, "cache": v})
    return out


def random_split(videos: list[dict], part: str) -> list[dict]:
    """Seeded 80/20 split of the videos that have a label file. It uses file names only (no decoding), so
    the split does not change when a bad video is skipped or data is added to other sites' folders later."""
    labelled = sorted((v for v in videos if v["label_path"]), key=lambda v: f"{v['site']}/{v['video']}")
    perm = np.random.default_rng(RANDOM_SPLIT_SEED).permutation(len(labelled))
    n_train = int(round(RANDOM_TRAIN_FRACTION * len(labelled)))
    idx = perm[:n_train] if part == "train" else perm[n_train:]
    return [labelled[i] for i in sorted(idx)]


def _meta(v: dict, frame_idx: int, labeled: bool) -> dict:
    return dict(video_id=v["video_id"], site=v["site"], frame_idx=frame_idx, num_frames=v["num_frames"],
                annotated_frames=list(v["annotated_frames"]), labeled=labeled, cache=v["cache"])


def annotated_samples(videos: list[dict]) -> list[dict]:
    """One sample per annotated frame of each labelled video (train and test protocols)."""
    return [_meta(v, f, True) for v in videos for f in v["annotated_frames"]]


def unlabeled_samples(videos: list[dict]) -> list[dict]:
    """One sample per frame of every video."""
    return [_meta(v, f, False) for v in videos for f in range(v["num_frames"])]


def load_split(prefix: str, split: str, part: str) -> list[dict]:
    root = dataset_root(prefix)
    train = part in ("train", None)
    if split == "site":
        videos = _decode(list_videos(root, SITE_SPLIT[part]), may_skip=train)
        videos = [v for v in videos if v["annotated_frames"]]
        samples = annotated_samples(videos)
    elif split == "random":
        entries = random_split(list_videos(root, RANDOM_SPLIT_SITES), part)
        samples = annotated_samples(_decode(entries, may_skip=train))
    elif split == "random_unlabeled":  # every video except the random split's test videos
        test = {(v["site"], v["video"]) for v in random_split(list_videos(root, RANDOM_SPLIT_SITES), "test")}
        entries = [v for v in list_videos(root, SITES) if (v["site"], v["video"]) not in test]
        samples = unlabeled_samples(_decode(entries, may_skip=True))
    else:  # unlabeled
        samples = unlabeled_samples(_decode(list_videos(root, SITES), may_skip=True))
    if not samples:
        raise DataError(f"Dataset {prefix}_{split}_{part} under {root} has no samples")
    for i, s in enumerate(samples):
        s["sample_id"] = i
    return samples


def register_all() -> None:
    """Record every split name in the catalogs; nothing is read until a name is used."""
    parts = [("random", "train", "train"), ("random", "test", "evaluate"), ("site", "train", "train"),
             ("site", "val", "evaluate"), ("site", "test", "evaluate"), ("unlabeled", None, "train"),
             ("random_unlabeled", None, "train")]
    for prefix in ("cardiac_udc", *SYNTH_FAMILIES):
        for split, part, mode in parts:
            name = f"{prefix}_{split}_{part}" if part else f"{prefix}_{split}"
            if name in DatasetCatalog:
                continue
            DatasetCatalog.register(name, lambda p=prefix, s=split, q=part: load_split(p, s, q))
            MetadataCatalog.set(name, classes=list(CLASSES), colors=list(COLORS), family=prefix, split=split,
                                part=part, mode=mode, labeled=not split.endswith("unlabeled"))


register_all()
