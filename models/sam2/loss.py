"""SAM2's training loss as published (``training/loss_fns.py MultiStepMultiMasksAndIous`` with the weights of the
package's fine-tuning config ``sam2.1_hiera_b+_MOSE_finetune.yaml``), on the adapter's ``aux`` output.

Per supervised frame and object, over its M candidate masks (M = 3 on tracked frames, 1 on box frames):
- focal loss (α 0.25, γ 2, mean over pixels) and Dice loss (smooth 1) of every candidate; only the candidate with
  the lowest ``20·focal + dice`` is back-propagated;
- IoU loss: L1 between the predicted IoU and the actual IoU of the candidate (``pred > 0`` vs the target), for all
  candidates (``supervise_all_iou``, as the published config) or the chosen one only;
- these three only where the object is present in the target (an absent object has no mask to learn);
- object-score loss: BCE of the object-score logit against "present" (the target mask is not empty).
Each term is divided by the number of objects K and summed over frames (SAM2 sums over its 8-frame clips), then
weighted focal 20 : dice 1 : IoU 1 : object score 1.

Frames the loss skips: those without annotation (``has_ann``) and those whose output is the given mask itself
(``aux["mask_prompted"]``: no parameter produced it).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from core.registry import LOSSES


def sigmoid_focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.25,
                       gamma: float = 2.0) -> torch.Tensor:
    """Focal loss (Lin et al. 2017) averaged over the last two (pixel) axes: …×H×W -> …. ``alpha`` < 0: no
    class weighting."""
    p = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = p * target + (1 - p) * (1 - target)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = loss * (alpha * target + (1 - alpha) * (1 - target))
    return loss.flatten(-2).mean(-1)


def dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """1 − soft Dice of sigmoid(logits) over the last two axes: …×H×W -> …."""
    p, t = logits.sigmoid().flatten(-2), target.flatten(-2)
    return 1 - (2 * (p * t).sum(-1) + smooth) / (p.sum(-1) + t.sum(-1) + smooth)


def mask_iou(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """IoU of ``logits > 0`` with ``target > 0`` over the last two axes (0 when both are empty): …×H×W -> …."""
    pred, gt = logits.flatten(-2) > 0, target.flatten(-2) > 0
    inter = (pred & gt).sum(-1).float()
    union = (pred | gt).sum(-1).float()
    return inter / union.clamp(min=1)


def frame_losses(multimask_logits: torch.Tensor, ious: torch.Tensor, object_score_logits: torch.Tensor,
                 target: torch.Tensor, focal_weight: float = 20.0, dice_weight: float = 1.0,
                 focal_alpha: float = 0.25, focal_gamma: float = 2.0,
                 supervise_all_iou: bool = True) -> dict[str, torch.Tensor]:
    """Unweighted losses of one frame, summed over its K objects (not yet divided by K).

    multimask_logits K×M×H×W, ious K×M (predicted), object_score_logits K, target K×H×W (bool or {0, 1}).
    ``focal_weight`` / ``dice_weight`` only choose the candidate to back-propagate. Returns scalars
    ``focal``, ``dice``, ``iou``, ``class``."""
    target = target.float()
    tgt = target.unsqueeze(1).expand_as(multimask_logits)  # K×M×H×W
    focal = sigmoid_focal_loss(multimask_logits, tgt, focal_alpha, focal_gamma)  # K×M
    dice = dice_loss(multimask_logits, tgt)  # K×M
    iou = (ious - mask_iou(multimask_logits, tgt)).abs()  # K×M
    best = (focal_weight * focal + dice_weight * dice).argmin(1, keepdim=True)  # K×1
    present = target.flatten(1).gt(0).any(1).float()  # K
    iou_term = iou.mean(1) if supervise_all_iou else iou.gather(1, best)[:, 0]
    bce = F.binary_cross_entropy_with_logits(object_score_logits.float(), present, reduction="none")
    return {"focal": (focal.gather(1, best)[:, 0] * present).sum(), "dice": (dice.gather(1, best)[:, 0] * present).sum(),
            "iou": (iou_term * present).sum(), "class": bce.sum()}


@LOSSES.register()
class SAM2Loss(nn.Module):
    """forward(aux of ``SAM2VideoAdapter.segment``, masks T×K×H×W, has_ann T or None)
    -> {"loss_mask", "loss_dice", "loss_iou", "loss_class"} (already weighted; their sum is SAM2's loss)."""

    def __init__(self, focal_weight: float = 20.0, dice_weight: float = 1.0, iou_weight: float = 1.0,
                 class_weight: float = 1.0, focal_alpha: float = 0.25, focal_gamma: float = 2.0,
                 supervise_all_iou: bool = True):
        super().__init__()
        self.weights = {"loss_mask": focal_weight, "loss_dice": dice_weight, "loss_iou": iou_weight,
                        "loss_class": class_weight}
        self.focal_alpha, self.focal_gamma, self.supervise_all_iou = focal_alpha, focal_gamma, supervise_all_iou

    def forward(self, aux: dict, masks: torch.Tensor, has_ann: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        t, k = masks.shape[:2]
        use = ~aux["mask_prompted"].to(masks.device)
        if has_ann is not None:
            use &= has_ann.to(masks.device).bool()
        total = {key: masks.new_zeros((), dtype=torch.float32) for key in ("focal", "dice", "iou", "class")}
        for i in use.nonzero()[:, 0].tolist():
            parts = frame_losses(aux["multimask_logits"][i], aux["ious"][i], aux["object_score_logits"][i], masks[i],
                                 self.weights["loss_mask"], self.weights["loss_dice"], self.focal_alpha,
                                 self.focal_gamma, self.supervise_all_iou)
            total = {key: total[key] + parts[key] for key in total}
        names = {"focal": "loss_mask", "dice": "loss_dice", "iou": "loss_iou", "class": "loss_class"}
        return {names[key]: self.weights[names[key]] * v / max(k, 1) for key, v in total.items()}

    def zeros(self, parameters, like: torch.Tensor) -> dict[str, torch.Tensor]:
        """The same loss names, all zero, for a batch with nothing to supervise: the zero still reaches every
        trainable parameter in ``parameters`` (DDP expects a gradient for each)."""
        zero = sum((p.sum() * 0 for p in parameters if p.requires_grad), like.new_zeros(()))
        return {name: zero for name in self.weights}
