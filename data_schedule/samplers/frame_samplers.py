"""Frame samplers: which video frames make a clip around a reference (annotated) frame.

A frame sampler is ``fn(ref: int, num_frames: int, clip_len: int, rng: np.random.Generator) -> (indices, t)``
where ``indices`` (list of ``clip_len`` frame numbers) is the clip and ``t`` is the position of ``ref`` in it.
Registered in ``SAMPLERS`` so configs name them (``frame_sampler=dict(name="centered")``); later methods add
e.g. hybrid temporal sampling without touching the mapper.
"""
from __future__ import annotations

import numpy as np

from core.errors import ConfigError
from core.registry import SAMPLERS


@SAMPLERS.register()
class centered:
    """A window of consecutive frames centred on ``ref``; indices past either end are clamped to the video
    (the first/last frame repeats), so ``ref`` is always at position ``clip_len // 2`` — the seed protocol's
    "6th of 11 frames" holds even for annotated frames near the ends of a video."""

    def __init__(self, stride: int = 1):
        if stride < 1:
            raise ConfigError(f"frame_sampler stride must be >= 1, got {stride}")
        self.stride = stride

    def __call__(self, ref: int, num_frames: int, clip_len: int, rng: np.random.Generator | None = None):
        half = clip_len // 2
        idx = np.clip(ref + self.stride * (np.arange(clip_len) - half), 0, num_frames - 1)
        return [int(i) for i in idx], half


@SAMPLERS.register()
class hybrid:
    """Hybrid Temporal Sampling (seed 000; LGRNet's ``local_global`` sampler, REFERENCE.md §3.7): a local part —
    ``ref`` and ``clip_len - n_global - 1`` distinct neighbours within ``local_window`` frames of it — plus
    ``n_global = round(global_share · (clip_len - 1))`` global frames drawn at random, without replacement, from
    the rest of the video outside the local window (so their intervals vary from clip to clip), all sorted in time.

    Where the video is too short for distinct frames, the local part repeats clamped neighbours and the global
    part draws from the whole video with replacement; ``ref`` is always in the clip, and ``t`` is its position.
    Deterministic given ``rng`` (the train mapper seeds it by stream position, so resume replays the same
    clips). Evaluation clips are unaffected: the eval mapper keeps its own sampler (``centered``).
    """

    def __init__(self, local_window: int = 3, global_share: float = 0.5):
        if local_window < 1:
            raise ConfigError(f"frame_sampler local_window must be >= 1, got {local_window}")
        if not 0.0 <= global_share <= 1.0:
            raise ConfigError(f"frame_sampler global_share must be in [0, 1], got {global_share}")
        self.local_window, self.global_share = local_window, global_share

    def __call__(self, ref: int, num_frames: int, clip_len: int, rng: np.random.Generator | None = None):
        if rng is None:
            raise ConfigError("the hybrid frame sampler is random: it needs an rng (use it for training clips)")
        n_global = min(clip_len - 1, int(round(self.global_share * (clip_len - 1))))
        n_near = clip_len - 1 - n_global
        lo, hi = max(0, ref - self.local_window), min(num_frames - 1, ref + self.local_window)
        pool = np.array([f for f in range(lo, hi + 1) if f != ref], dtype=np.int64)
        if len(pool) >= n_near:
            near = rng.choice(pool, n_near, replace=False) if n_near else pool[:0]
        else:  # very short video: clamped repeats
            near = np.clip(ref + rng.integers(-self.local_window, self.local_window + 1, n_near), 0, num_frames - 1)
        local = np.concatenate([[ref], near]).astype(np.int64)
        outside = np.array([f for f in range(num_frames) if f < lo or f > hi], dtype=np.int64)
        if len(outside) >= n_global:
            far = rng.choice(outside, n_global, replace=False) if n_global else outside[:0]
        else:
            far = rng.integers(0, num_frames, n_global)
        order = np.sort(np.concatenate([local, far]), kind="stable")
        return [int(i) for i in order], int(np.flatnonzero(order == ref)[0])


@SAMPLERS.register()
class annotated_pair:
    """Training clips for promptable trackers (SAM2, SAMURAI): ``ref`` and one neighbouring annotated frame of the
    same video (the previous or the next annotated frame, chosen at random) with the frames between them, so a
    tracker prompted on one annotated frame has a loss on the other. The clip spans the two frames: consecutive
    frames when they are fewer than ``clip_len`` apart (extended around them, clamped to the video), else
    ``clip_len`` frames evenly spaced from one to the other (both included, no repeats). ``max_gap``: a neighbour
    further away is not used. Without another annotated frame in reach it falls back to ``centered`` (the clip
    then has one annotated frame). The mapper passes ``annotated`` (the video's annotated frames, from the
    register's meta) to samplers with ``uses_annotated = True``."""

    uses_annotated = True

    def __init__(self, max_gap: int | None = None):
        if max_gap is not None and max_gap < 1:
            raise ConfigError(f"frame_sampler max_gap must be >= 1 or None, got {max_gap}")
        self.max_gap = max_gap

    def __call__(self, ref: int, num_frames: int, clip_len: int, rng: np.random.Generator | None = None,
                 annotated: list[int] | None = None):
        if rng is None:
            raise ConfigError("the annotated_pair frame sampler is random: it needs an rng (use it for training)")
        marks = sorted(set(int(a) for a in (annotated or [])))
        before = [a for a in marks if a < ref]
        after = [a for a in marks if a > ref]
        options = ([before[-1]] if before else []) + ([after[0]] if after else [])
        if self.max_gap is not None:
            options = [a for a in options if abs(a - ref) <= self.max_gap]
        if not options:
            return centered()(ref, num_frames, clip_len)
        other = options[int(rng.integers(len(options)))]
        lo, hi = min(ref, other), max(ref, other)
        if hi - lo + 1 <= clip_len:
            start = min(max(0, lo - (clip_len - (hi - lo + 1)) // 2), max(0, num_frames - clip_len))
            idx = np.clip(np.arange(start, start + clip_len), 0, num_frames - 1)
        else:
            idx = np.round(np.linspace(lo, hi, clip_len)).astype(np.int64)
        idx = [int(i) for i in idx]
        return idx, idx.index(ref)
