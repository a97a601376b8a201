"""models/heads/box_head.py: boxes from masks match hand-placed rectangles, jitter keeps boxes inside the image with
the asked spread, the head's shapes, its losses on known inputs (zero at a perfect prediction, absent classes
supervise only presence), and training lowers the loss."""
import math

import torch

from models.heads.box_head import VideoBoxHead, boxes_from_masks, jitter_boxes


def test_boxes_from_masks_are_the_rectangles_and_absent_classes_are_flagged():
    masks = torch.zeros(2, 3, 16, 20, dtype=torch.bool)
    masks[0, 0, 2:5, 3:9] = True  # rows 2..4, columns 3..8
    masks[1, 2, 0:16, 19] = True
    boxes, present = boxes_from_masks(masks)
    assert present.tolist() == [[True, False, False], [False, False, True]]
    assert boxes[0, 0].tolist() == [3, 2, 9, 5] and boxes[1, 2].tolist() == [19, 0, 20, 16]
    assert not boxes[0, 1].any()


def test_jitter_spread_and_clipping():
    boxes = torch.tensor([[10.0, 10.0, 30.0, 30.0]]).repeat(4000, 1)
    g = torch.Generator().manual_seed(0)
    j = jitter_boxes(boxes, 3.0, (40, 40), generator=g)
    assert abs((j[:, 0] - 10).std().item() - 3.0) < 0.15 and abs((j - boxes).mean().item()) < 0.1
    edge = jitter_boxes(torch.tensor([[0.0, 0.0, 40.0, 40.0]]).repeat(500, 1), 5.0, (40, 40), generator=g)
    assert edge.min() >= 0 and edge[:, 2:].max() <= 40 and ((edge[:, 2:] - edge[:, :2]) >= 1).all()
    assert jitter_boxes(boxes, 0, (40, 40)) is boxes


def _batch(b=2, t=3, k=2, h=64, w=64):
    masks = torch.zeros(b, t, k, h, w, dtype=torch.bool)
    for i in range(t):
        masks[:, i, 0, 8 + i:30 + i, 10:40] = True
        masks[:, i, 1, 36:60, 20 + 2 * i:50] = True
    masks[-1, :, 1] = False  # class 1 absent from the last clip
    return torch.rand(b, t, 3, h, w), masks, torch.ones(b, t, dtype=torch.bool)


def test_shapes_and_loss_zero_at_the_target():
    torch.manual_seed(0)
    head = VideoBoxHead(num_classes=2, dim=32, num_heads=2)
    video, masks, has_ann = _batch()
    out = head(video)
    assert out["boxes"].shape == (2, 3, 2, 4) and out["presence"].shape == (2, 3, 2)
    assert (out["boxes"][..., 2:] >= out["boxes"][..., :2]).all() and out["boxes"].max() <= 64
    losses = head.losses(out, masks, has_ann)
    assert set(losses) == {"loss_box_l1", "loss_box_giou", "loss_box_presence"}
    # a perfect prediction: L1 and GIoU zero, presence only through a confident logit
    gt, present = boxes_from_masks(masks)
    scale = torch.tensor([64.0, 64, 64, 64])
    cx, cy = (gt[..., 0] + gt[..., 2]) / 2 / 64, (gt[..., 1] + gt[..., 3]) / 2 / 64
    wh = (gt[..., 2:] - gt[..., :2]) / scale[:2]
    perfect = {"boxes_norm": torch.stack([cx, cy, wh[..., 0], wh[..., 1]], -1),
               "presence": torch.where(present, 20.0, -20.0), "boxes": gt}
    zero = head.losses(perfect, masks, has_ann)
    assert zero["loss_box_l1"].item() < 1e-6 and zero["loss_box_giou"].item() < 1e-5  # GIoU: float32 eps
    assert zero["loss_box_presence"].item() < 1e-6
    # presence: a 0 logit everywhere costs ln 2 per (frame, class), weight 1
    half = dict(perfect, presence=torch.zeros(2, 3, 2))
    assert math.isclose(head.losses(half, masks, has_ann)["loss_box_presence"].item(), math.log(2), rel_tol=1e-5)
    # not-annotated frames count nowhere
    none = head.losses(out, masks, torch.zeros(2, 3, dtype=torch.bool))
    assert all(v.item() == 0 for v in none.values())


def test_a_few_steps_lower_the_loss():
    torch.manual_seed(0)
    head = VideoBoxHead(num_classes=2, dim=32, num_heads=2)
    video, masks, has_ann = _batch(b=1)
    opt = torch.optim.AdamW(head.parameters(), lr=3e-3)
    first = None
    for _ in range(15):
        loss = sum(head.losses(head(video), masks, has_ann).values())
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.6 * first
