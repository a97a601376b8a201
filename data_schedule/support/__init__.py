"""Support sets for in-context segmentation (registry ``SUPPORT_SAMPLERS``): which labelled slices of which
volumes show a model the class it must segment in a query.

    sampler = build(SUPPORT_SAMPLERS, dict(name="fixed_volume", dataset="ct_synth_train"))
    picks = sampler(query_meta, cls=2, size=4, rng=np.random.default_rng(0), query_slices=[10, 11, 12])
    # -> [(support volume's meta, slice index), ...]: 4 slices that contain class 2, in slice order

Samplers (every pick contains the class, on at least ``min_pixels`` native pixels — raise it when the mapper
shrinks the slices, so a sliver does not vanish in the resize; the query's own volume is never its support):
- ``fixed_volume`` (seed 001): one volume of ``dataset`` (``volume``: its video id, default the dataset's first)
  is the support of every query; its slices containing the class, evenly spaced over the class's extent
  (``draw="even"``) or drawn at random (``"random"``); ``"auto"``: random when the caller passes an ``rng``
  (training), even without (evaluation). A query from the support volume itself (in training) takes the next
  volume of the dataset as its support.
- ``random_slices``: ``size`` slices drawn from every slice containing the class in the other volumes of
  ``dataset`` (without an ``rng``: a generator seeded by the query's video id, so evaluation is deterministic).
- ``nearest_position``: the slices containing the class, in the other volumes, whose relative position along the
  axis (slice / (slices − 1)) is nearest the query's (the mean relative position of ``query_slices``; a whole
  query volume sits at ≈ 0.5); ties by volume order, then slice.

Class ``k`` of a slice is ``label ∈ class_values[k]`` (the meta's ``class_values``; default value k + 1), found
from the cached label volume on first use and kept per process (:func:`class_slices`). Errors name the dataset,
the volume and the class: a support volume that lacks the class, fewer slices than ``size`` (``SupportError``).
"""
from __future__ import annotations

import zlib

import numpy as np

from core.catalog import DatasetCatalog, MetadataCatalog
from core.errors import ConfigError
from core.registry import SUPPORT_SAMPLERS
from data_schedule.sources.nifti import DataError

__all__ = ["SupportError", "SupportSampler", "class_slices", "volumes"]

_SLICES: dict[tuple, list[list[int]]] = {}


class SupportError(DataError):
    """A support set that cannot be drawn (the message names the dataset, the volume and the class)."""


def class_values(meta: dict, num_classes: int) -> list[list[int]]:
    """The raw label values of each class (the meta's ``class_values``, default ``[[1], [2], ...]``)."""
    values = meta.get("class_values")
    if values is None:
        return [[k + 1] for k in range(num_classes)]
    if len(values) != num_classes:
        raise ConfigError(f"{meta.get('video_id')}: the dataset has {len(values)} classes (class_values), the "
                          f"mapper's num_classes is {num_classes}")
    return [[int(v) for v in vs] for vs in values]


def class_slices(meta: dict, num_classes: int, min_pixels: int = 1) -> list[list[int]]:
    """For each class, the sorted slices (frames) of the meta's volume that contain it (annotated frames only) on
    at least ``min_pixels`` pixels at native resolution."""
    values = class_values(meta, num_classes)
    key = (meta["cache"].where, meta["video_id"], tuple(map(tuple, values)))
    if key not in _SLICES:  # pixel counts per (slice, class), once per volume and process
        counts: list[list[tuple[int, int]]] = [[] for _ in values]
        for t, lab in sorted(meta["cache"].labels().items()):
            lab = np.asarray(lab)
            present, n = np.unique(lab, return_counts=True)
            for k, vs in enumerate(values):
                c = int(n[np.isin(present, vs)].sum())
                if c:
                    counts[k].append((int(t), c))
        _SLICES[key] = counts
    return [[t for t, c in per if c >= min_pixels] for per in _SLICES[key]]


def volumes(dataset: str) -> list[dict]:
    """One meta per volume of a registered dataset (its first sample's), in the dataset's order."""
    seen: dict[str, dict] = {}
    for m in DatasetCatalog.get(dataset):
        seen.setdefault(m["video_id"], m)
    if not seen:
        raise SupportError(f"support dataset {dataset!r} has no volumes")
    return list(seen.values())


def _class_name(dataset: str, k: int) -> str:
    classes = getattr(MetadataCatalog.get(dataset), "classes", None)
    return f"{classes[k]!r} (class {k})" if classes and k < len(classes) else f"class {k}"


class SupportSampler:
    """``sampler(query, cls, size, rng=None, query_slices=None, num_classes=None) -> [(meta, slice), ...]``:
    ``size`` distinct slices containing class ``cls`` (0-based), grouped by volume and in slice order."""

    def __init__(self, dataset: str, min_pixels: int = 1):
        if int(min_pixels) < 1:
            raise ConfigError(f"support.min_pixels must be >= 1, got {min_pixels}")
        self.min_pixels = int(min_pixels)
        if not dataset:
            raise ConfigError(f"{type(self).__name__}: set the support dataset (support.dataset=<a registered "
                              f"training split>)")
        self.dataset = dataset
        self._volumes: list[dict] | None = None

    @property
    def volumes(self) -> list[dict]:
        if self._volumes is None:  # on first use (in a loader worker), not when the mapper is built
            self._volumes = volumes(self.dataset)
        return self._volumes

    def _others(self, query: dict) -> list[dict]:
        return [v for v in self.volumes if v["video_id"] != query.get("video_id")]

    def _check_size(self, size: int, available: int, where: str, cls: int) -> None:
        if size < 1:
            raise ConfigError(f"support_size must be >= 1, got {size}")
        if available < size:
            raise SupportError(f"support from {where}: {available} slice(s) contain {_class_name(self.dataset, cls)}, "
                               f"support_size asks for {size}")

    def __call__(self, query: dict, cls: int, size: int, rng: np.random.Generator | None = None,
                 query_slices: list[int] | None = None, num_classes: int | None = None) -> list[tuple[dict, int]]:
        raise NotImplementedError


def _k(num_classes: int | None, meta: dict) -> int:
    if num_classes is not None:
        return int(num_classes)
    if meta.get("class_values") is not None:
        return len(meta["class_values"])
    raise ConfigError("support sampler: num_classes is needed for a dataset without class_values")


@SUPPORT_SAMPLERS.register()
class fixed_volume(SupportSampler):
    """Seed 001's support: one training volume for every query (see the module docstring)."""

    def __init__(self, dataset: str = "", volume: str | None = None, draw: str = "auto", min_pixels: int = 1):
        super().__init__(dataset, min_pixels)
        if draw not in ("auto", "even", "random"):
            raise ConfigError(f"support.draw must be auto, even or random, got {draw!r}")
        self.volume, self.draw = volume, draw

    def support_volume(self, query: dict) -> dict:
        vols = self.volumes
        ids = [v["video_id"] for v in vols]
        if self.volume is None:
            i = 0
        elif self.volume in ids:
            i = ids.index(self.volume)
        else:
            from core.registry import did_you_mean

            raise SupportError(f"support.volume {self.volume!r} is not a volume of {self.dataset!r}; "
                               f"{did_you_mean(str(self.volume), ids)}")
        if ids[i] == query.get("video_id"):  # the support volume as a query (training): the next volume helps
            if len(vols) < 2:
                raise SupportError(f"support dataset {self.dataset!r} has one volume, which is the query itself")
            i = (i + 1) % len(vols)
        return vols[i]

    def __call__(self, query, cls, size, rng=None, query_slices=None, num_classes=None):
        vol = self.support_volume(query)
        slices = class_slices(vol, _k(num_classes, vol), self.min_pixels)[cls]
        where = f"volume {vol['video_id']!r} of {self.dataset!r}"
        if not slices:
            raise SupportError(f"support {where} has no slice with {_class_name(self.dataset, cls)}; choose another "
                               f"support volume (support.volume)")
        self._check_size(size, len(slices), where, cls)
        random = self.draw == "random" or (self.draw == "auto" and rng is not None)
        if random:
            if rng is None:
                rng = np.random.default_rng(zlib.crc32(str(query.get("video_id")).encode()))
            picks = sorted(rng.choice(len(slices), size, replace=False).tolist())
        else:
            picks = sorted(set(np.rint(np.linspace(0, len(slices) - 1, size + 2)[1:-1]).astype(int).tolist())) \
                if size < len(slices) else list(range(len(slices)))
            picks = _fill(picks, size, len(slices))
        return [(vol, slices[i]) for i in picks]


def _fill(picks: list[int], size: int, n: int) -> list[int]:
    """Evenly spaced picks made distinct: rounding can merge two; take the nearest unused indices instead."""
    picks = list(dict.fromkeys(picks))
    free = [i for i in range(n) if i not in picks]
    while len(picks) < size:
        centre = (n - 1) / 2
        i = min(free, key=lambda j: abs(j - centre))
        free.remove(i)
        picks.append(i)
    return sorted(picks)


def _pool(sampler: SupportSampler, query: dict, cls: int, num_classes: int | None) -> list[tuple[dict, int]]:
    pool = [(v, s) for v in sampler._others(query)
            for s in class_slices(v, _k(num_classes, v), sampler.min_pixels)[cls]]
    if not pool:
        raise SupportError(f"support dataset {sampler.dataset!r}: no volume other than the query "
                           f"{query.get('video_id')!r} has a slice with {_class_name(sampler.dataset, cls)}")
    return pool


@SUPPORT_SAMPLERS.register()
class random_slices(SupportSampler):
    """``size`` random slices containing the class, from every other volume of ``dataset``."""

    def __init__(self, dataset: str = "", min_pixels: int = 1):
        super().__init__(dataset, min_pixels)

    def __call__(self, query, cls, size, rng=None, query_slices=None, num_classes=None):
        pool = _pool(self, query, cls, num_classes)
        self._check_size(size, len(pool), f"the other volumes of {self.dataset!r}", cls)
        if rng is None:
            rng = np.random.default_rng(zlib.crc32(str(query.get("video_id")).encode()))
        picks = sorted(rng.choice(len(pool), size, replace=False).tolist())
        return [pool[i] for i in picks]


@SUPPORT_SAMPLERS.register()
class nearest_position(SupportSampler):
    """The ``size`` slices containing the class, in the other volumes, nearest the query's relative position."""

    def __init__(self, dataset: str = "", min_pixels: int = 1):
        super().__init__(dataset, min_pixels)

    def __call__(self, query, cls, size, rng=None, query_slices=None, num_classes=None):
        pool = _pool(self, query, cls, num_classes)
        self._check_size(size, len(pool), f"the other volumes of {self.dataset!r}", cls)
        n = max(int(query.get("num_frames", 1)) - 1, 1)
        ref = float(np.mean(query_slices)) / n if query_slices else 0.5

        def rel(item):
            v, s = item
            return s / max(int(v["num_frames"]) - 1, 1)

        order = sorted(range(len(pool)), key=lambda i: (abs(rel(pool[i]) - ref), i))[:size]
        return [pool[i] for i in sorted(order)]
