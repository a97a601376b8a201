"""Augmentation of in-context training episodes (UniverSeg, seed 004; REFERENCE §5.4): an episode is a task — one
class ``c``, the query frames and the support items that show it — and is augmented at two levels.

    aug = EpisodeAugment(in_task=dict(p=0.5), task=dict(p=0.5))
    sample = aug(sample, cls=c, rng=np.random.default_rng(seed))   # sample["video"], ["masks"], ["support"]

- **in-task** (``in_task``): every image of the episode — each query frame and each support item — gets its own
  draw of: affine (rotation ``degrees``, ``scale``, ``translate`` as a fraction of the size), elastic warp
  (``elastic_alpha`` px of displacement, smoothed over ``elastic_grid`` control points), brightness / contrast
  (``brightness``, ``contrast``: the largest change), Gaussian blur (``blur_sigma`` range) and Gaussian noise
  (``noise_std`` range); each op fires with probability ``p``. The labels follow the geometric ops.
- **task** (``task``): one draw for the whole episode, the same for all its images, which makes a new task out of
  an old one: horizontal / vertical flip, intensity inversion (1 − x), edge labels (the class's mask replaced by
  its boundary band, dilation − erosion, ``edge_width`` px), plus the in-task families with one shared draw; each
  fires with probability ``p``.

The paper names these families (in-task: affine, elastic, intensity, blur, noise; task: flips, intensity
inversion, edge labels) but its parameters are only partly published; the defaults below are ours. Everything is
drawn from the mapper's generator (the sample's seed), so episodes are reproducible and resume-exact; the ops
themselves are torchvision's (``v2.functional``).

Frames are T×3×H×W in [0, 1] (grey repeated, so intensity ops act on all three channels alike); masks T×K×H×W
bool, all K classes transformed together (only class ``c``'s edge labels are changed).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from core.errors import ConfigError

IN_TASK_DEFAULTS = dict(p=0.5, degrees=15.0, scale=(0.9, 1.1), translate=0.05, elastic_alpha=3.0, elastic_grid=4,
                        brightness=0.1, contrast=0.2, blur_sigma=(0.1, 1.0), noise_std=(0.0, 0.05))
TASK_DEFAULTS = dict(p=0.5, hflip=True, vflip=True, invert=True, edge_labels=True, edge_width=2, degrees=15.0,
                     scale=(0.9, 1.1), translate=0.05, brightness=0.1, contrast=0.2, blur_sigma=(0.1, 1.0),
                     noise_std=(0.0, 0.05))
NEAREST, BILINEAR = v2.InterpolationMode.NEAREST, v2.InterpolationMode.BILINEAR


def _settings(given: dict | None, defaults: dict, key: str) -> dict | None:
    if given is None or given is False:
        return None
    given = {} if given is True else dict(given)
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        from core.registry import did_you_mean

        raise ConfigError(f"mapper.augment.{key}: unknown key(s) {unknown}; {did_you_mean(unknown[0], defaults)}")
    out = {**defaults, **given}
    if not 0.0 <= float(out["p"]) <= 1.0:
        raise ConfigError(f"mapper.augment.{key}.p must be in [0, 1], got {out['p']}")
    return out


class _Draw:
    """Parameters of one augmentation draw (None: the op does not fire)."""

    def __init__(self, s: dict, rng: np.random.Generator, h: int, w: int, task: bool):
        fire = lambda: bool(rng.random() < s["p"])  # noqa: E731
        self.affine = None
        if fire():
            lo, hi = s["scale"]
            self.affine = dict(angle=float(rng.uniform(-s["degrees"], s["degrees"])),
                               translate=[int(round(rng.uniform(-1, 1) * s["translate"] * w)),
                                          int(round(rng.uniform(-1, 1) * s["translate"] * h))],
                               scale=float(rng.uniform(lo, hi)), shear=[0.0, 0.0])
        self.elastic = None
        if not task and s.get("elastic_alpha", 0) > 0 and fire():
            g = int(s["elastic_grid"])
            coarse = torch.from_numpy(rng.standard_normal((1, 2, g, g)).astype(np.float32))
            # v2.functional.elastic takes a 1×H×W×2 displacement in normalised [-1, 1] units
            field = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=True)
            self.elastic = (field.permute(0, 2, 3, 1) * (2.0 * s["elastic_alpha"] / max(h, w))).contiguous()
        self.gain = self.bias = None
        if fire():
            self.gain = 1.0 + float(rng.uniform(-s["contrast"], s["contrast"]))
            self.bias = float(rng.uniform(-s["brightness"], s["brightness"]))
        self.blur = float(rng.uniform(*s["blur_sigma"])) if fire() else None
        self.noise = None
        if fire():
            std = float(rng.uniform(*s["noise_std"]))
            self.noise = (std, int(rng.integers(2 ** 31)))
        self.hflip = task and s["hflip"] and fire()
        self.vflip = task and s["vflip"] and fire()
        self.invert = task and s["invert"] and fire()
        self.edge = task and s["edge_labels"] and fire()


def _apply(d: _Draw, images: torch.Tensor, masks: torch.Tensor, cls: int, edge_width: int
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """One draw on N×3×H×W images and their N×K×H×W bool masks."""
    if d.hflip:
        images, masks = images.flip(-1), masks.flip(-1)
    if d.vflip:
        images, masks = images.flip(-2), masks.flip(-2)
    if d.affine is not None:
        images = v2.functional.affine(images, **d.affine, interpolation=BILINEAR)
        masks = v2.functional.affine(masks.to(torch.uint8), **d.affine, interpolation=NEAREST).bool()
    if d.elastic is not None:
        images = v2.functional.elastic(images, d.elastic, interpolation=BILINEAR)
        masks = v2.functional.elastic(masks.to(torch.uint8), d.elastic, interpolation=NEAREST).bool()
    if d.gain is not None:
        images = (images - 0.5) * d.gain + 0.5 + d.bias
    if d.blur is not None:
        k = 2 * int(np.ceil(2 * d.blur)) + 1
        images = v2.functional.gaussian_blur(images, [k, k], [d.blur, d.blur])
    if d.noise is not None:
        std, seed = d.noise
        g = torch.Generator().manual_seed(seed)
        images = images + std * torch.randn(images.shape, generator=g)
    images = images.clamp(0.0, 1.0)
    if d.invert:
        images = 1.0 - images
    if d.edge:
        m = masks[:, cls:cls + 1].float()
        r = int(edge_width)
        dil = F.max_pool2d(m, 2 * r + 1, 1, r)
        ero = -F.max_pool2d(-m, 2 * r + 1, 1, r)
        masks = masks.clone()
        masks[:, cls] = (dil - ero)[:, 0] > 0
    return images.contiguous(), masks


class EpisodeAugment:
    """In-task and task augmentation of one in-context episode (see the module docstring)."""

    def __init__(self, in_task: dict | bool | None = None, task: dict | bool | None = None):
        self.in_task = _settings(in_task, IN_TASK_DEFAULTS, "in_task")
        self.task = _settings(task, TASK_DEFAULTS, "task")

    def __call__(self, sample: dict, cls: int, rng: np.random.Generator) -> dict:
        video, masks, sup = sample["video"], sample["masks"], sample["support"]
        h, w = video.shape[-2:]
        n_q = video.shape[0]
        images = torch.cat([video, sup["images"]])
        labels = torch.cat([masks, sup["masks"]])
        if self.in_task is not None:  # every image its own draw
            draws = [_Draw(self.in_task, rng, h, w, task=False) for _ in range(images.shape[0])]
            out = [_apply(d, images[i:i + 1], labels[i:i + 1], cls, 0) for i, d in enumerate(draws)]
            images, labels = torch.cat([o[0] for o in out]), torch.cat([o[1] for o in out])
        if self.task is not None:  # one draw for the whole task
            images, labels = _apply(_Draw(self.task, rng, h, w, task=True), images, labels, cls,
                                    self.task["edge_width"])
        labels[:n_q][~sample["has_ann"]] = False  # frames without annotation stay unlabelled
        sample = dict(sample, video=images[:n_q].contiguous(), masks=labels[:n_q].contiguous())
        sample["support"] = dict(sup, images=images[n_q:].contiguous(), masks=labels[n_q:].contiguous())
        return sample
