"""FPN step to stride 4 (the paper's mask features), optionally one more cheap step to stride 2.

Why the optional stride-2 step: at the CPU-tiny input of 128² the stride-4 mask grid is 32×32; the ground truth
area-averaged to 32×32 and upsampled back keeps mDice 0.981 on EchoSynth test frames, 0.997 at 64×64
(``benchmarks/mask_resolution_oracle.py``), and lgrnet_tiny measured 0.9627 at stride 4 vs 0.9654 at stride 2 with
600 s of training (``benchmarks/lgrnet_vs_unet.py``). At the paper's 336-384² the stride-4 grid is 84-96 cells
wide and the step is not needed (paper-scale configs keep ``mask_stride=4``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from core.registry import DECODERS
from models.layers import group_norm


@DECODERS.register()
class PixelFPN(nn.Module):
    """(res2 (N, C2, H/4, W/4), finest encoder level (N, C, H/8, W/8)[, res1 (N, C1, H/2, W/2)]) ->
    mask features (N, C, H/4, W/4), or (N, C, H/2, W/2) when built with ``res1_channels``.

    Stride 4: 1×1 lateral of res2 + upsampled encoder level, 3×3 conv + GN + ReLU. Stride 2 (optional): 1×1
    lateral of res1 + upsampled stride-4 features, GN + ReLU, then a depthwise 3×3 conv (cheap at 4× the pixels).
    """

    def __init__(self, in_channels: int, d_model: int, res1_channels: int | None = None):
        super().__init__()
        self.lateral = nn.Sequential(nn.Conv2d(in_channels, d_model, 1, bias=False), group_norm(d_model))
        self.out = nn.Sequential(nn.Conv2d(d_model, d_model, 3, padding=1, bias=False), group_norm(d_model),
                                 nn.ReLU(inplace=True))
        self.fine = None
        if res1_channels:
            self.fine_lateral = nn.Conv2d(res1_channels, d_model, 1, bias=False)
            self.fine = nn.Sequential(group_norm(d_model), nn.ReLU(inplace=True),
                                      nn.Conv2d(d_model, d_model, 3, padding=1, groups=d_model))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, a=1)

    def forward(self, res2: torch.Tensor, finest: torch.Tensor, res1: torch.Tensor | None = None) -> torch.Tensor:
        x = self.lateral(res2) + F.interpolate(finest, size=res2.shape[-2:], mode="bilinear", align_corners=False)
        x = self.out(x)
        if self.fine is None:
            return x
        if res1 is None:
            raise ValueError("PixelFPN was built with res1_channels (mask_stride=2) but got no res1 features")
        up = F.interpolate(x, size=res1.shape[-2:], mode="bilinear", align_corners=False)
        return self.fine(self.fine_lateral(res1) + up)
