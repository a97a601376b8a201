import pytest
import torch
import torch.nn.functional as F

from models.losses.seg_losses import CEDiceLoss, soft_dice_loss_per_frame


def test_soft_dice_per_frame_hand_values():
    target = torch.tensor([[[1, 1], [0, 0]], [[2, 0], [0, 0]]])  # 2 frames, 2×2, K=2
    perfect = F.one_hot(target, 3).permute(0, 3, 1, 2).float() * 50.0
    loss = soft_dice_loss_per_frame(perfect, target, smooth=1.0)
    assert torch.allclose(loss, torch.zeros(2), atol=1e-4)
    # uniform prediction: p = 1/3 everywhere; frame 0, class 1: I = 2/3, P = 4/3, G = 2 -> (4/3+1)/(10/3+1)
    uniform = torch.zeros(1, 3, 2, 2)
    d1 = (2 * (2 / 3) + 1) / (4 / 3 + 2 + 1)
    d2 = (0 + 1) / (4 / 3 + 0 + 1)
    assert soft_dice_loss_per_frame(uniform, target[:1]).item() == pytest.approx(1 - (d1 + d2) / 2, rel=1e-6)


def test_weighted_loss_is_mean_of_clip_losses():
    torch.manual_seed(0)
    logits, target = torch.randn(4, 5, 8, 8), torch.randint(0, 5, (4, 8, 8))
    crit = CEDiceLoss(4)
    full = crit(logits, target)
    halves = [crit(logits[i:i + 2], target[i:i + 2]) for i in (0, 2)]
    for k in full:  # mean over a batch == mean of the two half-batch means (what DDP averages)
        assert full[k].item() == pytest.approx((halves[0][k] + halves[1][k]).item() / 2, rel=1e-6)
    w = torch.tensor([0.5, 0.25, 0.25, 0.0])
    out = crit(logits, target, w)
    ce = F.cross_entropy(logits, target, reduction="none").mean((1, 2))
    assert out["loss_ce"].item() == pytest.approx((ce * w).sum().item(), rel=1e-6)
