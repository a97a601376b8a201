"""Episode augmentation for in-context training (``data_schedule/mappers/episode_augment.py``): reproducible from
the generator, in-task draws differ per image while a task draw is shared, labels follow the geometry, edge labels
are the class's boundary band, frames without annotation stay unlabelled, and unknown keys are refused."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from core.errors import ConfigError
from data_schedule.mappers.episode_augment import EpisodeAugment

OFF = dict(p=0.0)


def _episode(t=3, s=4, k=2, h=32):
    """Images whose bright square is exactly class 0's mask (class 1: a smaller square inside it)."""
    g = torch.Generator().manual_seed(0)
    masks = torch.zeros(t + s, k, h, h, dtype=torch.bool)
    for i in range(t + s):
        y, x = 4 + i, 6 + 2 * i % 9
        masks[i, 0, y:y + 12, x:x + 10] = True
        masks[i, 1, y + 3:y + 6, x + 3:x + 6] = True
    masks[1] = False  # the query frame without annotation
    images = 0.1 + 0.8 * masks[:, :1].float().expand(-1, 3, -1, -1) + 0.02 * torch.rand(t + s, 3, h, h, generator=g)
    return dict(video=images[:t].clone(), masks=masks[:t].clone(), has_ann=torch.tensor([True, False, True]),
                support=dict(images=images[t:].clone(), masks=masks[t:].clone(), classes=torch.zeros(s, dtype=torch.long)))


def test_reproducible_and_in_task_draws_differ_per_image():
    aug = EpisodeAugment(in_task=dict(p=1.0, elastic_alpha=0.0, noise_std=(0.0, 0.0)), task=None)
    ep = _episode()
    a, b = aug(ep, 0, np.random.default_rng(5)), aug(ep, 0, np.random.default_rng(5))
    assert torch.equal(a["video"], b["video"]) and torch.equal(a["support"]["masks"], b["support"]["masks"])
    c = aug(ep, 0, np.random.default_rng(6))
    assert not torch.equal(a["video"], c["video"])
    # the same input image, two in-task draws: two different outputs
    twin = _episode()
    twin["support"]["images"][1], twin["support"]["masks"][1] = twin["support"]["images"][0], twin["support"]["masks"][0]
    out = aug(twin, 0, np.random.default_rng(0))
    assert not torch.equal(out["support"]["masks"][0], out["support"]["masks"][1])
    assert a["video"].shape == ep["video"].shape and 0 <= a["video"].min() and a["video"].max() <= 1
    assert not a["masks"][1].any()  # the unannotated frame stays unlabelled
    # geometry: the mask still sits on the bright pixels (mean inside ≫ mean outside) after affine + intensity ops
    imgs, m = a["support"]["images"][:, 0], a["support"]["masks"][:, 0]
    assert (imgs[m].mean() - imgs[~m].mean()) > 0.3


def test_a_task_draw_is_shared_and_flips_images_and_labels_alike():
    flip = EpisodeAugment(task=dict(p=1.0, vflip=False, invert=False, edge_labels=False, degrees=0.0, scale=(1, 1),
                                    translate=0.0, brightness=0.0, contrast=0.0, blur_sigma=(1e-3, 1e-3),
                                    noise_std=(0.0, 0.0)))
    ep = _episode()
    out = flip(ep, 0, np.random.default_rng(0))
    assert torch.equal(out["masks"], ep["masks"].flip(-1))
    assert torch.equal(out["support"]["masks"], ep["support"]["masks"].flip(-1))
    assert torch.allclose(out["video"], ep["video"].flip(-1), atol=1e-3)
    inv = EpisodeAugment(task=dict(p=1.0, hflip=False, vflip=False, edge_labels=False, degrees=0.0, scale=(1, 1),
                                   translate=0.0, brightness=0.0, contrast=0.0, blur_sigma=(1e-3, 1e-3),
                                   noise_std=(0.0, 0.0)))
    out = inv(ep, 0, np.random.default_rng(0))
    assert torch.allclose(out["support"]["images"], 1 - ep["support"]["images"], atol=1e-3)


def test_edge_labels_are_the_boundary_band_of_the_task_class_only():
    edge = EpisodeAugment(task=dict(p=1.0, hflip=False, vflip=False, invert=False, degrees=0.0, scale=(1, 1),
                                    translate=0.0, brightness=0.0, contrast=0.0, blur_sigma=(1e-3, 1e-3),
                                    noise_std=(0.0, 0.0), edge_width=1))
    ep = _episode()
    out = edge(ep, 0, np.random.default_rng(0))
    m, e = ep["support"]["masks"][0, 0], out["support"]["masks"][0, 0]
    ys, xs = m.nonzero(as_tuple=True)
    y0, y1, x0, x1 = ys.min(), ys.max(), xs.min(), xs.max()
    assert e[y0, x0 + 4] and e[y0 - 1, x0 + 4] and not e[y0 + 2, x0 + 4]  # the band spans the border, 1 px each side
    assert not e[(y0 + y1) // 2, (x0 + x1) // 2]  # the interior is gone
    assert e.sum() == 14 * 12 - 10 * 8  # 12×10 box: 3×3 dilation (14×12) minus 3×3 erosion (10×8)
    assert torch.equal(out["support"]["masks"][:, 1], ep["support"]["masks"][:, 1])  # class 1 untouched


def test_bad_settings():
    with pytest.raises(ConfigError, match=r"mapper.augment.in_task: unknown key\(s\) \['degree'\].*degrees"):
        EpisodeAugment(in_task=dict(degree=5))
    with pytest.raises(ConfigError, match=r"task.p must be in \[0, 1\]"):
        EpisodeAugment(task=dict(p=2))
    assert EpisodeAugment(in_task=OFF).in_task["p"] == 0.0
