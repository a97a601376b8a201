"""Per-frame, per-class box prediction: BOX-SAM2's first stage (seed 000: "box prediction + box-promptable SAM2").

    head = VideoBoxHead(num_classes=4)                  # timm backbone, one query per class, temporal mixing
    out = head(video)                                   # video B×T×3×H×W in [0, 1]
    out["boxes"]      B×T×K×4  xyxy in pixels of the input (x1, y1 exclusive), float
    out["presence"]   B×T×K    logits: is class k visible on frame t
    losses = head.losses(out, masks, has_ann)           # L1 + GIoU on present classes, BCE on presence

Design: the frame's stride-16 and stride-32 features (projected to ``dim`` and summed after upsampling) are read by
``K`` learned class queries through cross-attention (one query per chamber, as a DETR decoder without matching:
the class fixes the query, so no Hungarian step is needed); the query embeddings are then mixed over time by a
depth-wise temporal convolution (a chamber moves little between neighbouring frames), and MLPs give a normalised
(cx, cy, w, h) box and a presence logit. Boxes targets come from the masks (``boxes_from_masks``); the loss weights
are DETR's (L1 5, GIoU 2) on normalised coordinates, presence BCE 1 (Carion et al. 2020, facebookresearch/detr).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import box_convert, generalized_box_iou_loss, masks_to_boxes

from core.errors import ConfigError
from models.backbones.timm_backbone import TimmBackbone
from models.layers import FFN, MLP, PostNormAttention, group_norm, sine_pos_2d


ABSENT_BOX = (0.0, 0.0, 1.0, 1.0)  # a one-pixel box stands in for a class absent on a box-prompted frame


def boxes_from_masks(masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``masks`` (..., H, W) bool -> (boxes (..., 4) xyxy float in pixels with x1, y1 one past the last pixel,
    present (...) bool). Absent masks get a zero box."""
    flat = masks.reshape(-1, *masks.shape[-2:])
    present = flat.flatten(1).any(1)
    boxes = torch.zeros(flat.shape[0], 4, device=masks.device)
    if present.any():
        b = masks_to_boxes(flat[present])  # inclusive pixel coordinates of the extreme pixels
        boxes[present] = b + torch.tensor([0.0, 0.0, 1.0, 1.0], device=masks.device)
    return boxes.reshape(*masks.shape[:-2], 4), present.reshape(masks.shape[:-2])


def jitter_boxes(boxes: torch.Tensor, sigma_px: float, size: tuple[int, int],
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Each coordinate moved by N(0, sigma_px²) pixels, then clipped to the image (H, W) with at least one pixel
    of width and height: the box-noise axis of BOX-SAM2's robustness curve, and its stage-2 training input."""
    if sigma_px <= 0:
        return boxes
    noise = torch.randn(boxes.shape, generator=generator, device="cpu").to(boxes.device) * sigma_px
    b = boxes + noise
    h, w = size
    x0 = b[..., 0].clamp(0, w - 1)
    y0 = b[..., 1].clamp(0, h - 1)
    x1 = torch.maximum(b[..., 2].clamp(1, w), x0 + 1)
    y1 = torch.maximum(b[..., 3].clamp(1, h), y0 + 1)
    return torch.stack([x0, y0, x1, y1], -1)


class VideoBoxHead(nn.Module):
    def __init__(self, num_classes: int = 4, backbone: str = "mobilenetv3_small_100", dim: int = 96,
                 num_heads: int = 4, temporal_kernel: int = 3, norm: str = "group",
                 pretrained_path: str | None = None, l1_weight: float = 5.0, giou_weight: float = 2.0,
                 presence_weight: float = 1.0):
        """
        num_classes: K (one box per class per frame). backbone: timm model (random init; ``pretrained_path`` a
            local state dict). dim: query / feature width. temporal_kernel: frames mixed per query (odd; 1 = none).
        norm: the backbone's normalisation ("group" keeps DDP on CPU exact).
        """
        super().__init__()
        if temporal_kernel < 1 or temporal_kernel % 2 == 0:
            raise ConfigError(f"box_head.temporal_kernel must be odd and >= 1, got {temporal_kernel}")
        self.num_classes, self.dim = num_classes, dim
        self.backbone = TimmBackbone(backbone, strides=(16, 32), pretrained_path=pretrained_path, norm=norm)
        c16, c32 = (self.backbone.channels[n] for n in self.backbone.names)
        self.proj16 = nn.Sequential(nn.Conv2d(c16, dim, 1), group_norm(dim))
        self.proj32 = nn.Sequential(nn.Conv2d(c32, dim, 1), group_norm(dim))
        self.queries = nn.Embedding(num_classes, dim)
        self.cross = PostNormAttention(dim, num_heads)
        self.self_attn = PostNormAttention(dim, num_heads)
        self.ffn = FFN(dim, 2 * dim)
        self.temporal = nn.Conv1d(dim, dim, temporal_kernel, padding=temporal_kernel // 2, groups=dim)
        self.temporal_norm = nn.LayerNorm(dim)
        self.box_mlp = MLP(dim, dim, 4, 3)
        self.presence = nn.Linear(dim, 1)
        self.weights = dict(l1=l1_weight, giou=giou_weight, presence=presence_weight)

    def forward(self, video: torch.Tensor) -> dict[str, torch.Tensor]:
        b, t, _, h, w = video.shape
        feats = self.backbone(video.flatten(0, 1))
        f16, f32 = (feats[n] for n in self.backbone.names)
        feat = self.proj16(f16) + F.interpolate(self.proj32(f32), size=f16.shape[-2:], mode="nearest")
        n, d, fh, fw = feat.shape
        mem = feat.flatten(2).transpose(1, 2)  # N×(fh·fw)×D
        pos = sine_pos_2d(fh, fw, d, device=feat.device).unsqueeze(0)
        q = self.queries.weight.unsqueeze(0).expand(n, -1, -1)  # N×K×D, one query per class
        q = self.cross(q, mem, pos_mem=pos)
        q = self.ffn(self.self_attn(q, q))
        # temporal mixing per class: (B·K)×D×T depth-wise convolution, residual
        qt = q.unflatten(0, (b, t)).permute(0, 2, 3, 1).reshape(b * self.num_classes, d, t)
        qt = qt + self.temporal(qt)
        q = self.temporal_norm(qt.reshape(b, self.num_classes, d, t).permute(0, 3, 1, 2))  # B×T×K×D
        cxcywh = self.box_mlp(q).sigmoid()
        scale = torch.tensor([w, h, w, h], dtype=cxcywh.dtype, device=cxcywh.device)
        boxes = box_convert(cxcywh, "cxcywh", "xyxy") * scale
        return {"boxes": boxes, "presence": self.presence(q).squeeze(-1), "boxes_norm": cxcywh}

    def losses(self, out: dict, masks: torch.Tensor, has_ann: torch.Tensor) -> dict[str, torch.Tensor]:
        """L1 (normalised cxcywh) and GIoU on the (frame, class) pairs whose class is present on an annotated frame;
        presence BCE on every annotated (frame, class). Each clip weighs the same (mean of per-clip means), as the
        segmentation losses, so DDP's gradient average equals the single-process batch."""
        b, t, k = out["presence"].shape
        h, w = masks.shape[-2:]
        gt_xyxy, present = boxes_from_masks(masks)  # B×T×K×4, B×T×K
        ann = has_ann[:, :, None].expand(b, t, k)
        pos = present & ann
        scale = torch.tensor([w, h, w, h], dtype=gt_xyxy.dtype, device=gt_xyxy.device)
        gt_norm = box_convert(gt_xyxy / scale, "xyxy", "cxcywh")
        clip_w = 1.0 / b
        l1 = F.l1_loss(out["boxes_norm"], gt_norm, reduction="none").sum(-1)  # B×T×K
        giou = generalized_box_iou_loss(box_convert(out["boxes_norm"], "cxcywh", "xyxy").reshape(-1, 4),
                                        (gt_xyxy / scale).reshape(-1, 4), reduction="none").reshape(b, t, k)
        bce = F.binary_cross_entropy_with_logits(out["presence"], present.float(), reduction="none")

        def clip_mean(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
            per_clip = (x * m).flatten(1).sum(1) / m.flatten(1).sum(1).clamp(min=1)
            return per_clip.sum() * clip_w

        return {"loss_box_l1": self.weights["l1"] * clip_mean(l1, pos),
                "loss_box_giou": self.weights["giou"] * clip_mean(giou, pos),
                "loss_box_presence": self.weights["presence"] * clip_mean(bce, ann)}
