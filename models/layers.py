"""Small model utilities shared by meta-architectures."""
from __future__ import annotations

import math

import torch
from torch import nn


def batchnorm_to_groupnorm(module: nn.Module, max_groups: int = 32) -> nn.Module:
    """Replace every BatchNorm2d by a GroupNorm with the same affine shape (in place; returns the module).

    Why by hand: neither timm nor torch offers BN->GN conversion. GroupNorm makes a model's output independent of
    batch composition, so 1 process with batch 2b and 2 DDP processes with batch b train identically on CPU,
    where SyncBatchNorm is unavailable.
    """
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            c = child.num_features
            groups = math.gcd(c, max_groups)
            setattr(module, name, nn.GroupNorm(groups, c, eps=child.eps, affine=child.affine))
        else:
            batchnorm_to_groupnorm(child, max_groups)
    return module


def masks_to_labels(masks: torch.Tensor) -> torch.Tensor:
    """K×... bool one-hot masks (classes 1..K) -> ... long labels in 0..K (0 = background).

    masks: B×K×T×H×W -> B×T×H×W.
    """
    k = masks.shape[1]
    weights = torch.arange(1, k + 1, device=masks.device).view(1, k, *([1] * (masks.dim() - 2)))
    return (masks.long() * weights).amax(1)
