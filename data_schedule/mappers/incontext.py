"""Mappers for in-context segmentation of volumes (CT as videos of slices): a query plus a ``support`` set of
labelled slices from other volumes (``data_schedule/support``).

Both add to the usual sample (``core.structures.Sample``) the field

    support   dict   images  float32 S×3×H×W [0, 1]   support slices at the mapper's ``size``
                     masks   bool    S×K×H×W           their ground truth, every class
                     classes long    S                 the class each slice was drawn for (0-based)

- ``InContextTrainMapper`` (seed 001's single-class protocol): per sample one class ``c`` is drawn among those the
  query volume shows, ``clip_len`` slices containing it are drawn from the query volume (``slices="random"``:
  seed 001's random slices, kept in slice order; ``"contiguous"``: ``clip_len`` consecutive slices overlapping
  the class's extent, so its ends and the slices beyond them, where it is absent, are seen too) and
  ``support_size`` slices containing it come from the support sampler; every support slice is drawn for ``c``.
  In ``"random"`` mode every query slice shows the class (seed 001 drops the others), so the model never sees it
  absent; a class the volume has on fewer than ``clip_len`` slices falls back to a contiguous window.
  ``augment=dict(in_task=..., task=...)``: UniverSeg's episode augmentation (``episode_augment.py``): a draw per
  image, and one for the whole task.
- ``InContextEvalMapper``: the whole query volume (``VideoEvalMapper``: every annotated slice scored, ``gt_full``
  at native size) and, for every class in turn, ``support_size`` slices of it (deterministic), so S = K ·
  ``support_size``, grouped by class. ``queries="annotated"``: only the video's annotated frames, in order (echo,
  where 5-7 of ~60 frames are labelled; every one scored). ``support_draw=d``: the support of draw ``d`` (the
  sampler gets a generator seeded by the query's video id, ``d`` and the class: ``random_slices`` and
  ``fixed_volume`` then pick at random, the same picks for every model), for ensembles over support draws;
  None: the sampler's deterministic default.

Randomness comes from the sample's seed (training) or is absent (evaluation), as in the clip mappers.
"""
from __future__ import annotations

import zlib

import numpy as np
import torch
from torchvision.transforms import v2

from core.errors import ConfigError
from core.registry import MAPPERS, SUPPORT_SAMPLERS, build
from data_schedule.mappers.clip_mapper import VideoEvalMapper, _read_clip, _to_sample, annotated_frames
from data_schedule.sources.nifti import DataError
from data_schedule.support import SupportError, class_slices

SLICE_DRAWS = ("random", "contiguous")
QUERY_FRAMES = ("all", "annotated")


def _resized(frames: torch.Tensor, labels: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    frames = v2.functional.resize(frames, list(size), antialias=True)
    labels = v2.functional.resize(labels[:, None], list(size), interpolation=v2.InterpolationMode.NEAREST)[:, 0]
    return frames, labels


class _Support:
    """Reads the support slices a sampler picks, at the mapper's size."""

    def __init__(self, support: dict | None, support_size: int, size: tuple[int, int], num_classes: int,
                 transforms):
        if support is None or not support.get("name"):
            raise ConfigError("mapper.support must name a support sampler, e.g. support=dict(name='fixed_volume', "
                              "dataset='ct_synth_train')")
        if int(support_size) < 1:
            raise ConfigError(f"mapper.support_size must be >= 1, got {support_size}")
        self.sampler = build(SUPPORT_SAMPLERS, dict(support), key="mapper.support")
        self.support_size, self.size, self.num_classes, self.transforms = int(support_size), size, num_classes, \
            transforms

    def read(self, picks: list[tuple[dict, int]], cls: list[int]) -> dict:
        images, masks = [], []
        i = 0
        while i < len(picks):  # consecutive picks of one volume in one read
            vol = picks[i][0]
            j = i
            while j < len(picks) and picks[j][0] is vol:
                j += 1
            frames, labels, _, meta = _read_clip(vol, [s for _, s in picks[i:j]], self.transforms)
            frames, labels = _resized(frames, labels, self.size)
            part = _to_sample(frames, labels, torch.ones(j - i, dtype=torch.bool), [s for _, s in picks[i:j]],
                              self.num_classes, {**meta, "frame_idx": picks[i][1]}, None)
            for n, (vol_, t) in enumerate(picks[i:j]):
                if not part["masks"][n, cls[i + n]].any():
                    raise SupportError(f"support slice {t} of {vol_['video_id']!r} shows class {cls[i + n]} at "
                                       f"native size but not at the mapper's size {tuple(self.size)}; raise "
                                       f"support.min_pixels (now {self.sampler.min_pixels}) or the mapper's size")
            images.append(part["video"])
            masks.append(part["masks"])
            i = j
        return {"images": torch.cat(images), "masks": torch.cat(masks),
                "classes": torch.tensor(cls, dtype=torch.long)}


@MAPPERS.register()
class InContextTrainMapper:
    """Seed 001's single-class training samples (see the module docstring)."""

    def __init__(self, clip_len: int = 8, size: list[int] = (128, 128), num_classes: int = 4,
                 support: dict | None = None, support_size: int = 4, slices: str = "random",
                 transforms: list[dict] | None = None, augment: dict | None = None):
        from data_schedule.mappers.episode_augment import EpisodeAugment
        from data_schedule.transforms import build_transforms

        if clip_len < 1:
            raise ConfigError(f"mapper clip_len must be >= 1, got {clip_len}")
        if slices not in SLICE_DRAWS:
            raise ConfigError(f"mapper.slices must be one of {', '.join(SLICE_DRAWS)}, got {slices!r}")
        self.clip_len, self.size, self.num_classes, self.slices = int(clip_len), tuple(size), int(num_classes), slices
        self.transforms = None if transforms is None else build_transforms(transforms)
        self.support = _Support(support, support_size, self.size, self.num_classes, self.transforms)
        augment = dict(augment or {})
        unknown = sorted(set(augment) - {"in_task", "task"})
        if unknown:
            raise ConfigError(f"mapper.augment: unknown key(s) {unknown}; expected in_task and/or task")
        self.augment = EpisodeAugment(**augment) if augment else None

    def _query_slices(self, have: list[int], n: int, rng: np.random.Generator) -> list[int]:
        if self.slices == "random" and len(have) >= self.clip_len:
            return sorted(rng.choice(have, self.clip_len, replace=False).tolist())
        # consecutive slices overlapping the class's extent: its ends and the slices beyond them are seen too
        lo, hi = have[0], have[-1]
        start = int(rng.integers(max(lo - self.clip_len + 1, 0), min(hi, n - self.clip_len) + 1))
        return list(range(start, start + self.clip_len))

    def __call__(self, meta: dict, seed: int) -> dict:
        rng = np.random.default_rng(seed)
        n = int(meta["num_frames"])
        if n < self.clip_len:
            raise DataError(f"{meta['video_id']}: {n} slices, fewer than the mapper's clip_len={self.clip_len}")
        per_class = class_slices(meta, self.num_classes)
        present = [k for k, s in enumerate(per_class) if s]
        if not present:
            raise DataError(f"{meta['video_id']}: no slice shows any class; an in-context training volume needs "
                            f"foreground (leave it out of data.train)")
        c = int(rng.choice(present))
        indices = self._query_slices(per_class[c], n, rng)
        frames, labels, has_ann, clip_meta = _read_clip(meta, indices, self.transforms)
        frames, labels = _resized(frames, labels, self.size)
        sample = _to_sample(frames, labels, has_ann, indices, self.num_classes, clip_meta, None)
        picks = self.support.sampler(meta, c, self.support.support_size, rng, indices, self.num_classes)
        sample["support"] = self.support.read(picks, [c] * len(picks))
        if self.augment is not None:
            sample = self.augment(sample, c, rng)
        return sample


@MAPPERS.register()
class InContextEvalMapper(VideoEvalMapper):
    """The whole query volume, with ``support_size`` support slices for every class (see the module docstring)."""

    def __init__(self, size: list[int] = (128, 128), num_classes: int = 4, support: dict | None = None,
                 support_size: int = 4, max_frames: int | None = None, transforms: list[dict] | None = None,
                 score: str = "annotated", queries: str = "all", support_draw: int | None = None):
        super().__init__(size, num_classes, max_frames, transforms, score)
        self.support = _Support(support, support_size, self.size, self.num_classes, self.transforms)
        if queries not in QUERY_FRAMES:
            raise ConfigError(f"mapper.queries must be one of {', '.join(QUERY_FRAMES)}, got {queries!r}")
        if support_draw is not None and int(support_draw) < 0:
            raise ConfigError(f"mapper.support_draw must be None or >= 0, got {support_draw}")
        self.queries, self.support_draw = queries, None if support_draw is None else int(support_draw)

    def _rng(self, meta: dict, c: int) -> np.random.Generator | None:
        if self.support_draw is None:
            return None  # the sampler's deterministic default
        return np.random.default_rng([zlib.crc32(str(meta["video_id"]).encode()), self.support_draw, c])

    def __call__(self, meta: dict, seed: int | None = None) -> dict:
        if self.queries == "annotated":  # only the scored frames, in frame order, each scored
            frames = annotated_frames(meta)
            if not frames:
                raise DataError(f"{meta['video_id']}: mapper.queries='annotated' but the video has no annotated "
                                f"frame")
            sample = self._scored_sample(meta, frames, list(range(len(frames))))
        else:
            sample = super().__call__(meta, seed)
        picks, cls = [], []
        everything = [int(f) for f in sample["frame_idx"].tolist()]
        for c in range(self.num_classes):
            got = self.support.sampler(meta, c, self.support.support_size, self._rng(meta, c), everything,
                                       self.num_classes)
            picks += got
            cls += [c] * len(got)
        sample["support"] = self.support.read(picks, cls)
        return sample
