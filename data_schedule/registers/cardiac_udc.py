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
Site_G_100 + Site_R_126, val Site_G_20 + Site_R_52, test Site_G_29; ``site_adapt{n}`` (n in ``ADAPT_VIDEOS``) =
few-shot adaptation to the test site: train on the first n of its labelled videos (name order) and test on the
second half of them (the same held-out videos for every n).
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from core.catalog import BadData, DatasetCatalog, DatasetRoots, MetadataCatalog
from data_schedule.sources.nifti import DataError, load_video

logger = logging.getLogger(__name__)

CLASSES = ["LV", "LA", "RA", "RV"]  # label values 1..4 (REFERENCE 1.1: GraphEcho/GDKVM convention)
COLORS = [(230, 60, 60), (60, 200, 80), (70, 120, 240), (240, 210, 50)]
SITES = ["Site_G_100", "Site_G_20", "Site_G_29", "Site_R_126", "Site_R_52", "Site_R_73"]
RANDOM_SPLIT_SITES = [s for s in SITES if s != "Site_R_73"]  # Site_R_73 has no labels
SITE_SPLIT = {"train": ["Site_G_100", "Site_R_126"], "val": ["Site_G_20", "Site_R_52"], "test": ["Site_G_29"]}
#: few-shot site adaptation (``<family>_site_adapt{n}_train`` / ``_test``): the test site's labelled videos in name
#: order, the first half the adaptation pool (its first n train), the second half the fixed held-out test set
ADAPT_VIDEOS = (1, 2, 4)
RANDOM_SPLIT_SEED = 2024
RANDOM_TRAIN_FRACTION = 0.8
REPO_ROOT = Path(__file__).resolve().parents[2]
#: what a mapper without ``transforms`` applies to these videos (the cache keeps whole frames): the seed project's
#: fan crop. The configs list it explicitly; this default keeps older configs and checkpoints reading the same pixels.
DEFAULT_TRANSFORMS = ({"name": "FanCrop"},)

#: embedded families: (EchoSynth preset, environment variable of the root, default root under the repository)
SYNTH_FAMILIES: dict[str, tuple[str, str, str]] = {
    "echo_synth": ("v2", "ECHO_SYNTH_ROOT", "datasets/echo_synth"),
    "echo_synth_v1": ("v1", "ECHO_SYNTH_V1_ROOT", "datasets/echo_synth_v1"),
}
FAMILIES = ("cardiac_udc", *SYNTH_FAMILIES)


def _resolve_real(base: str | None, how: str) -> Path:
    """``<base>/cardiacUDC_dataset`` of the real data; ``base`` is ``$DATASET_PATH`` or ``data.roots.cardiac_udc``."""
    if not base:
        raise DataError(
            "CardiacUDC root not set: export DATASET_PATH=/path/holding/cardiacUDC_dataset (or set "
            "data.roots.cardiac_udc), or use the embedded echo_synth_* datasets instead")
    root = Path(base) / "cardiacUDC_dataset"
    if not root.is_dir():
        raise DataError(f"CardiacUDC folder not found: {root} ({how.lstrip('$')}={base}); expected "
                        f"{root}/Site_G_100/..., or use the embedded echo_synth_* datasets")
    return root


def _resolve_synth(preset: str):
    def resolve(base: str | None, how: str) -> Path:
        """The embedded copy, generated on first use (EchoSynth v2 for ``echo_synth``, v1 for ``echo_synth_v1``)."""
        from data_schedule.synthetic.echo_synth import ensure_echo_synth

        return Path(ensure_echo_synth(base, preset=preset))
    return resolve


def _check(root: Path) -> dict:
    from data_schedule.check_data import scan_cardiac_udc

    return scan_cardiac_udc(root, num_classes=len(CLASSES))


def _register_roots() -> None:
    if "cardiac_udc" not in DatasetRoots.families():
        DatasetRoots.register("cardiac_udc", _resolve_real, env="DATASET_PATH", check=_check)
    for family, (preset, env, default) in SYNTH_FAMILIES.items():
        if family not in DatasetRoots.families():
            DatasetRoots.register(family, _resolve_synth(preset), env=env, default=str(REPO_ROOT / default),
                                  check=_check)


def dataset_root(prefix: str) -> Path:
    """The ``cardiacUDC_dataset`` folder of a family (``core.catalog.DatasetRoots``)."""
    return DatasetRoots.get(prefix)


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


def _decode(entries: list[dict], may_skip: bool = False) -> list[dict]:
    """Attach the decoded/cached video (frames, annotated frames, fan box) to each entry."""
    out = []
    for e in entries:
        try:
            v = load_video(e["image_path"], e["label_path"], num_classes=len(CLASSES))
        except DataError as err:
            if not (may_skip and BadData.may_skip()):
                raise
            logger.warning(f"Skipping a bad training video (data.bad_sample_policy=skip): {err}")
            BadData.record(e["image_path"], str(err))
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
                annotated_frames=list(v["annotated_frames"]), labeled=labeled, cache=v["cache"],
                default_transforms=DEFAULT_TRANSFORMS)


def annotated_samples(videos: list[dict]) -> list[dict]:
    """One sample per annotated frame of each labelled video (train and test protocols)."""
    return [_meta(v, f, True) for v in videos for f in v["annotated_frames"]]


def unlabeled_samples(videos: list[dict]) -> list[dict]:
    """One sample per frame of every video."""
    return [_meta(v, f, False) for v in videos for f in range(v["num_frames"])]


def load_split(prefix: str, split: str, part: str) -> list[dict]:
    root = dataset_root(prefix)
    train = part in ("train", None)
    if split.startswith("site_adapt"):  # site_adapt{n}: few-shot adaptation to the test site
        videos = [v for v in _decode(list_videos(root, SITE_SPLIT["test"]), may_skip=False) if v["annotated_frames"]]
        n, pool = int(split[len("site_adapt"):]), len(videos) // 2
        if n > pool:
            raise DataError(f"{prefix}_{split}_{part}: {n} adaptation videos asked, the test site has {pool} "
                            f"(half of its {len(videos)} labelled videos)")
        samples = annotated_samples(videos[:n] if part == "train" else videos[pool:])
    elif split == "site":
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
    """Record every family's root and every split name in the catalogs; nothing is read until a name is used."""
    _register_roots()
    parts = [("random", "train", "train"), ("random", "test", "evaluate"), ("site", "train", "train"),
             ("site", "val", "evaluate"), ("site", "test", "evaluate"), ("unlabeled", None, "train"),
             ("random_unlabeled", None, "train")]
    parts += [(f"site_adapt{n}", part, mode) for n in ADAPT_VIDEOS for part, mode in (("train", "train"),
                                                                                      ("test", "evaluate"))]
    for prefix in FAMILIES:
        for split, part, mode in parts:
            name = f"{prefix}_{split}_{part}" if part else f"{prefix}_{split}"
            if name in DatasetCatalog:
                continue
            DatasetCatalog.register(name, lambda p=prefix, s=split, q=part: load_split(p, s, q))
            MetadataCatalog.set(name, classes=list(CLASSES), colors=list(COLORS), family=prefix, split=split,
                                part=part, mode=mode, labeled=not split.endswith("unlabeled"),
                                default_transforms=[dict(t) for t in DEFAULT_TRANSFORMS])


register_all()
