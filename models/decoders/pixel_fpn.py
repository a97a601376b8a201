"""FPN step to stride 4: the encoder's finest level (stride 8) upsampled + a lateral projection of res2."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from core.registry import DECODERS
from models.layers import group_norm


@DECODERS.register()
class PixelFPN(nn.Module):
    """(res2 (N, C2, H/4, W/4), finest encoder level (N, C, H/8, W/8)) -> mask features (N, C, H/4, W/4)."""

    def __init__(self, in_channels: int, d_model: int):
        super().__init__()
        self.lateral = nn.Sequential(nn.Conv2d(in_channels, d_model, 1, bias=False), group_norm(d_model))
        self.out = nn.Sequential(nn.Conv2d(d_model, d_model, 3, padding=1, bias=False), group_norm(d_model),
                                 nn.ReLU(inplace=True))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, a=1)

    def forward(self, res2: torch.Tensor, finest: torch.Tensor) -> torch.Tensor:
        x = self.lateral(res2) + F.interpolate(finest, size=res2.shape[-2:], mode="bilinear", align_corners=False)
        return self.out(x)
