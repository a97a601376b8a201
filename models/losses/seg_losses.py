"""Segmentation losses for softmax models (background + K classes)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from core.registry import LOSSES


def soft_dice_loss_per_frame(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """1 − mean soft Dice over the foreground classes, **per frame**: logits N×(K+1)×H×W, target N×H×W -> N.

    Written by hand because library Dice losses (smp, MONAI with batch=True) pool all frames of a batch into one
    Dice; a per-frame value lets the trainer weight samples so that the loss of a batch is the mean of its
    samples' losses, which makes W processes with batch b train exactly like one process with batch W·b.
    ``smooth`` keeps a class that is absent from both target and prediction at loss ≈ 0.
    """
    probs = logits.float().softmax(1)[:, 1:]  # N×K×H×W
    onehot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2)[:, 1:].float()
    inter = (probs * onehot).sum((2, 3))
    denom = probs.sum((2, 3)) + onehot.sum((2, 3))
    return 1.0 - ((2 * inter + smooth) / (denom + smooth)).mean(1)


@LOSSES.register()
class CEDiceLoss(nn.Module):
    """Weighted cross-entropy + soft Dice over foreground classes, both computed per frame.

    forward(logits N×(K+1)×H×W, target N×H×W long in 0..K, frame_weights N or None (None = plain mean))
    -> {"loss_ce", "loss_dice"} (already multiplied by their weights).
    """

    def __init__(self, num_classes: int, ce_weight: float = 1.0, dice_weight: float = 1.0, smooth: float = 1.0):
        super().__init__()
        self.ce_weight, self.dice_weight, self.smooth = ce_weight, dice_weight, smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor,
                frame_weights: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        ce = F.cross_entropy(logits.float(), target, reduction="none").mean((1, 2))  # N
        dice = soft_dice_loss_per_frame(logits, target, self.smooth)  # N
        if frame_weights is None:
            frame_weights = torch.full_like(ce, 1.0 / len(ce))
        return {"loss_ce": self.ce_weight * (ce * frame_weights).sum(),
                "loss_dice": self.dice_weight * (dice * frame_weights).sum()}
