"""Views of an unlabelled clip for Local-to-Global Self-Distillation (LGSD, seed 000; DINO-style multi-crop over
time and space, Caron et al. 2021).

From one unlabelled sample (a reference frame of a video) the mapper draws
* ``num_global`` global views: ``clip_len`` frames spread over a long span (``global_span`` frames around the
  reference, strided), large random crops (``global_scale`` of the frame area), resized to ``global_size``;
* ``num_local`` local views: ``clip_len`` consecutive-ish frames over a short span (``local_span``), small crops
  (``local_scale``), resized to ``local_size``.
Each view has its own crop (the same for all its frames) and frame selection; everything is drawn from a
generator seeded by the sample's stream position, so resumed runs see the same views.

Output: ``{"global": G×T×3×Hg×Wg, "local": L×T×3×Hl×Wl, "frame_idx": {"global": G×T, "local": L×T}, "meta"}``.
"""
from __future__ import annotations

import numpy as np
import torch
from torchvision.transforms import v2

from core.errors import ConfigError
from core.registry import MAPPERS
from data_schedule.mappers.clip_mapper import _read_clip
from data_schedule.transforms import build_transforms


def _span_indices(ref: int, num_frames: int, clip_len: int, span: int, rng: np.random.Generator) -> list[int]:
    """``clip_len`` sorted frame numbers evenly spread over a window of ``span`` frames that contains ``ref``
    (window placed at random around it, clamped to the video; frames repeat if the video is shorter)."""
    span = max(1, min(span, num_frames))
    start = int(np.clip(ref - rng.integers(0, span), 0, num_frames - span))
    return [int(round(x)) for x in np.linspace(start, start + span - 1, clip_len)]


@MAPPERS.register()
class LGSDViewMapper:
    def __init__(self, clip_len: int = 4, num_global: int = 2, num_local: int = 4, global_size: list[int] = (128, 128),
                 local_size: list[int] = (64, 64), global_span: int = 32, local_span: int = 6,
                 global_scale: list[float] = (0.5, 1.0), local_scale: list[float] = (0.1, 0.4),
                 num_classes: int | None = None, transforms: list[dict] | None = None):
        # num_classes: given to every mapper, unused (no labels); transforms: as the clip mappers' (None: the
        # register's default_transforms)
        if num_global < 1 or num_local < 0 or clip_len < 1:
            raise ConfigError(f"LGSDViewMapper: need num_global >= 1, num_local >= 0, clip_len >= 1, got "
                              f"{num_global}, {num_local}, {clip_len}")
        if local_span > global_span:
            raise ConfigError(f"LGSDViewMapper: local_span {local_span} must not exceed global_span {global_span}")
        self.clip_len, self.num_global, self.num_local = clip_len, num_global, num_local
        self.global_span, self.local_span = global_span, local_span
        self.global_crop = v2.RandomResizedCrop(tuple(global_size), scale=tuple(global_scale), antialias=True)
        self.local_crop = v2.RandomResizedCrop(tuple(local_size), scale=tuple(local_scale), antialias=True)
        self.transforms = None if transforms is None else build_transforms(transforms)

    def _view(self, meta: dict, span: int, crop, rng: np.random.Generator) -> tuple[torch.Tensor, list[int]]:
        idx = _span_indices(meta["frame_idx"], meta["num_frames"], self.clip_len, span, rng)
        frames = _read_clip({**meta, "labeled": False}, idx, self.transforms)[0]  # T×1×H×W uint8
        with torch.random.fork_rng(devices=[]):  # torchvision draws from the global RNG
            torch.manual_seed(int(rng.integers(0, 2**31 - 1)))
            frames = crop(frames)  # one crop for all frames of the view
        return frames.float().div_(255.0).expand(-1, 3, -1, -1).contiguous(), idx

    def __call__(self, meta: dict, seed: int) -> dict:
        rng = np.random.default_rng(seed)
        g = [self._view(meta, self.global_span, self.global_crop, rng) for _ in range(self.num_global)]
        loc = [self._view(meta, self.local_span, self.local_crop, rng) for _ in range(self.num_local)]
        out = {"global": torch.stack([v for v, _ in g]),
               "frame_idx": {"global": torch.tensor([i for _, i in g]), "local": torch.tensor([i for _, i in loc])},
               "meta": dict(video_id=meta["video_id"], frame_idx=meta["frame_idx"], sample_id=meta["sample_id"])}
        if loc:
            out["local"] = torch.stack([v for v, _ in loc])
        return out
