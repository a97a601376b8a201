import math

import pytest
import torch

from models.sam2.loss import SAM2Loss, dice_loss, frame_losses, mask_iou, sigmoid_focal_loss

TARGET = torch.tensor([[1.0, 0.0], [0.0, 0.0]])  # one object pixel of four


def test_focal_dice_and_iou_by_hand():
    zeros = torch.zeros(2, 2)
    # p = 0.5 everywhere: ce = ln 2, (1 - p_t)^2 = 1/4; alpha_t = 0.25 on the object pixel, 0.75 on the others
    assert sigmoid_focal_loss(zeros, TARGET).item() == pytest.approx((0.25 + 3 * 0.75) * 0.25 * math.log(2) / 4)
    assert sigmoid_focal_loss(zeros, TARGET, alpha=-1, gamma=0).item() == pytest.approx(math.log(2))  # = BCE
    # Dice: 1 - (2·0.5 + 1) / (2 + 1 + 1)
    assert dice_loss(zeros, TARGET).item() == pytest.approx(0.5)
    assert mask_iou(torch.tensor([[1.0, -1.0], [1.0, -1.0]]), TARGET).item() == pytest.approx(0.5)
    assert mask_iou(-torch.ones(2, 2), torch.zeros(2, 2)).item() == 0.0  # both empty


def test_only_the_best_candidate_is_backpropagated_and_absent_objects_only_train_the_object_score():
    perfect = TARGET * 100 - 50  # ±50: focal and Dice 0
    logits = torch.stack([torch.stack([torch.zeros(2, 2), perfect]),  # object 0: candidate 1 is perfect
                          torch.stack([perfect, torch.zeros(2, 2)])]).requires_grad_()  # object 1: absent
    ious = torch.tensor([[0.5, 0.75], [0.9, 0.1]], requires_grad=True)
    target = torch.stack([TARGET, torch.zeros(2, 2)])
    scores = torch.tensor([0.0, 0.0])
    out = frame_losses(logits, ious, scores, target)
    assert out["focal"].item() == pytest.approx(0.0, abs=1e-12) and out["dice"].item() == pytest.approx(0.0, abs=1e-6)
    # actual IoUs of object 0: [0 (nothing > 0), 1]; L1 to [0.5, 0.75] = [0.5, 0.25], all candidates supervised
    assert out["iou"].item() == pytest.approx(0.375)
    assert frame_losses(logits, ious, scores, target, supervise_all_iou=False)["iou"].item() == pytest.approx(0.25)
    assert out["class"].item() == pytest.approx(2 * math.log(2))  # logit 0 for "present" and for "absent"
    (out["focal"] + out["dice"] + out["iou"]).backward()
    assert logits.grad[1].abs().sum() == 0 and ious.grad[1].abs().sum() == 0  # the absent object: no mask terms
    assert logits.grad[0, 0].abs().sum() == 0  # the worse candidate gets no focal/Dice gradient


def test_sam2_loss_weights_divides_by_objects_and_skips_given_and_unannotated_frames():
    t, k = 3, 2
    masks = torch.zeros(t, k, 2, 2, dtype=torch.bool)
    masks[:, 0] = TARGET.bool()
    aux = {"multimask_logits": [torch.zeros(k, 1, 2, 2)] * t, "ious": [torch.full((k, 1), 0.25)] * t,
           "object_score_logits": torch.zeros(t, k), "mask_prompted": torch.tensor([True, False, False])}
    has_ann = torch.tensor([True, True, False])  # only frame 1 is supervised
    out = SAM2Loss()(aux, masks, has_ann)
    focal = (0.25 + 3 * 0.75) * 0.25 * math.log(2) / 4
    assert out["loss_mask"].item() == pytest.approx(20 * focal / k)
    assert out["loss_dice"].item() == pytest.approx(0.5 / k)
    assert out["loss_iou"].item() == pytest.approx(0.25 / k)  # actual IoU 0 (nothing predicted)
    assert out["loss_class"].item() == pytest.approx(2 * math.log(2) / k)
    # frames add up (SAM2 sums over the frames of a clip)
    both = SAM2Loss()(aux, masks)
    assert both["loss_dice"].item() == pytest.approx(2 * 0.5 / k)
