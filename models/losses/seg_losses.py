"""Segmentation losses for softmax models (background + K classes)."""
from __future__ import annotations

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch import nn

from core.registry import LOSSES


@LOSSES.register()
class CEDiceLoss(nn.Module):
    """Weighted cross-entropy + multiclass soft Dice (smp's DiceLoss, foreground classes only).

    forward(logits N×(K+1)×H×W, target N×H×W long in 0..K) -> {"loss_ce", "loss_dice"} (already weighted).
    """

    def __init__(self, num_classes: int, ce_weight: float = 1.0, dice_weight: float = 1.0):
        super().__init__()
        self.ce_weight, self.dice_weight = ce_weight, dice_weight
        self.dice = smp.losses.DiceLoss("multiclass", classes=list(range(1, num_classes + 1)), from_logits=True)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loss_ce": self.ce_weight * F.cross_entropy(logits, target),
                "loss_dice": self.dice_weight * self.dice(logits, target)}
