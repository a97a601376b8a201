"""Frame samplers: which video frames make a clip around a reference (annotated) frame.

A frame sampler is ``fn(ref: int, num_frames: int, clip_len: int, rng: np.random.Generator) -> (indices, t)``
where ``indices`` (list of ``clip_len`` frame numbers) is the clip and ``t`` is the position of ``ref`` in it.
Registered in ``SAMPLERS`` so configs name them (``frame_sampler=dict(name="centered")``); later methods add
e.g. hybrid temporal sampling without touching the mapper.
"""
from __future__ import annotations

import numpy as np

from core.registry import SAMPLERS


@SAMPLERS.register()
class centered:
    """A window of consecutive frames centred on ``ref``; indices past either end are clamped to the video
    (the first/last frame repeats), so ``ref`` is always at position ``clip_len // 2`` — the seed protocol's
    "6th of 11 frames" holds even for annotated frames near the ends of a video."""

    def __init__(self, stride: int = 1):
        if stride < 1:
            raise ValueError(f"frame_sampler stride must be >= 1, got {stride}")
        self.stride = stride

    def __call__(self, ref: int, num_frames: int, clip_len: int, rng: np.random.Generator | None = None):
        half = clip_len // 2
        idx = np.clip(ref + self.stride * (np.arange(clip_len) - half), 0, num_frames - 1)
        return [int(i) for i in idx], half
