"""Pure metric functions against hand-computed values (evaluators/metrics.py)."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from evaluators.metrics import dice_iou, hd95, probs_to_labels, seg_stats

# 4×4 example, K = 4. Class 1: P = 4, G = 4, I = 3. Class 2: P = 3, G = 4, I = 3.
# Class 3: absent from both. Class 4: GT only (P = 0, G = 1).
PRED = torch.tensor([[1, 1, 0, 0],
                     [1, 1, 0, 0],
                     [0, 0, 2, 2],
                     [0, 0, 2, 0]])
GT = torch.tensor([[1, 1, 1, 0],
                   [1, 0, 0, 0],
                   [0, 0, 2, 2],
                   [4, 0, 2, 2]])


def one_hot_probs(labels: torch.Tensor, k: int) -> torch.Tensor:
    """labels [..., H, W] in 0..K -> probs [..., K, H, W] (background dropped)."""
    return F.one_hot(labels.long(), k + 1).movedim(-1, -3)[..., 1:, :, :].float()


def test_seg_stats_hand_computed_counts():
    inter, pred_area, gt_area = seg_stats(PRED, GT, num_classes=4)
    assert inter.dtype == pred_area.dtype == gt_area.dtype == np.int64
    assert inter.tolist() == [3, 3, 0, 0]
    assert pred_area.tolist() == [4, 3, 0, 0]
    assert gt_area.tolist() == [4, 4, 0, 1]


def test_seg_stats_accepts_numpy_and_rejects_bad_input():
    inter, _, _ = seg_stats(PRED.numpy(), GT.numpy().astype(np.int32), 4)
    assert inter.tolist() == [3, 3, 0, 0]
    with pytest.raises(ValueError, match="same shape"):
        seg_stats(PRED, GT[:3], 4)
    with pytest.raises(ValueError, match="0..3"):
        seg_stats(PRED, GT, 3)  # GT holds label 4


def test_dice_iou_hand_computed_with_absent_class_nan_and_missed_class_zero():
    dice, iou = dice_iou(*seg_stats(PRED, GT, 4))
    assert dice.dtype == iou.dtype == np.float64
    assert dice[0] == pytest.approx(2 * 3 / (4 + 4)) and iou[0] == pytest.approx(3 / (4 + 4 - 3))
    assert dice[1] == pytest.approx(2 * 3 / (3 + 4)) and iou[1] == pytest.approx(3 / (3 + 4 - 3))
    assert math.isnan(dice[2]) and math.isnan(iou[2])  # absent from both: undefined
    assert dice[3] == 0.0 and iou[3] == 0.0  # empty prediction, non-empty GT
    # the NaN class is left out of the mean: (0.75 + 6/7 + 0) / 3
    assert np.nanmean(dice) == pytest.approx((0.75 + 6 / 7 + 0) / 3)


def test_dice_iou_perfect_and_false_positive_and_batched():
    dice, iou = dice_iou(np.array([[5, 0]]), np.array([[5, 2]]), np.array([[5, 0]]))  # N×K = 1×2
    assert dice.shape == (1, 2)
    assert dice.tolist() == [[1.0, 0.0]] and iou.tolist() == [[1.0, 0.0]]


def test_probs_to_labels_softmax_equals_argmax_over_all_channels():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 5, 6, 7, generator=g)  # B×T×(K+1)×H×W, K = 4
    sm = logits.softmax(dim=2)
    labels = probs_to_labels(sm[:, :, 1:])
    assert labels.shape == (2, 3, 6, 7) and labels.dtype == torch.long
    assert torch.equal(labels, sm.argmax(dim=2))


def test_probs_to_labels_independent_sigmoids():
    # one pixel per column, K = 3: probabilities of classes 1..3
    p = torch.tensor([[0.6, 0.4, 0.7, 0.1, 0.3],
                      [0.0, 0.0, 0.8, 0.1, 0.45],
                      [0.0, 0.0, 0.0, 0.2, 0.0]])[:, None, :]  # K×1×5
    labels = probs_to_labels(p)[0].tolist()
    # 0.6 alone beats background 0.4; 0.4 alone loses to 0.6; overlap -> most probable; all low -> background;
    # 0.3 + 0.45 leave background 0.25, so the most probable class (2) wins although below 0.5.
    assert labels == [1, 0, 2, 0, 2]


def test_resize_path_bilinear_upsampling_of_one_hot_probs_is_nearest():
    g = torch.Generator().manual_seed(1)
    small = torch.randint(0, 5, (8, 8), generator=g)
    gt = small.repeat_interleave(2, 0).repeat_interleave(2, 1)  # 16×16, each label a 2×2 block
    probs = one_hot_probs(small, 4)  # 4×8×8
    up = F.interpolate(probs[None], size=(16, 16), mode="bilinear", align_corners=False)[0]
    pred = probs_to_labels(up)
    assert torch.equal(pred, gt)
    dice, iou = dice_iou(*seg_stats(pred, gt, 4))
    present = ~np.isnan(dice)
    assert present.any() and np.all(dice[present] == 1.0) and np.all(iou[present] == 1.0)


def test_hd95_known_distance_and_empty_cases():
    a = np.zeros((20, 20), bool)
    b = np.zeros((20, 20), bool)
    a[5:10, 5:10] = True
    b[5:10, 8:13] = True  # same square shifted 3 columns
    assert hd95(a, b) == pytest.approx(3.0)
    assert hd95(a, b, spacing=(1.0, 0.5)) == pytest.approx(1.5)
    assert hd95(a, a) == 0.0
    empty = np.zeros_like(a)
    assert math.isnan(hd95(empty, empty))
    assert math.isnan(hd95(empty, b))  # missed structure: NaN by default ...
    assert hd95(empty, b, missing=28.3) == 28.3  # ... or an explicit penalty


def test_hd95_crop_to_the_masks_box_is_exact_at_the_border_and_inside():
    """hd95 runs its distance transforms on the masks' bounding box (plus one pixel); same value as the full grid."""
    from scipy import ndimage

    from evaluators.metrics import _surface

    def full_grid(p, g, spacing):
        sp, sg = _surface(p), _surface(g)
        to_g = ndimage.distance_transform_edt(~sg, sampling=spacing)
        to_p = ndimage.distance_transform_edt(~sp, sampling=spacing)
        return max(np.percentile(to_g[sp], 95), np.percentile(to_p[sg], 95))

    rng = np.random.default_rng(0)
    for shape in [(9, 12), (6, 10, 11), (5, 7, 9)]:
        for corner in (0, 2):  # touching the image border, and inside it
            p, g = np.zeros(shape, bool), np.zeros(shape, bool)
            p[tuple(slice(corner, corner + 4) for _ in shape)] = True
            g[tuple(slice(corner + 1, corner + 5) for _ in shape)] = True
            p &= rng.random(shape) > 0.2
            spacing = tuple(rng.uniform(0.3, 3.0, size=len(shape)))
            assert hd95(p, g, spacing=spacing) == pytest.approx(full_grid(p, g, spacing))
