"""LGRNet (Xu et al., MICCAI 2024, arXiv 2407.05703): Local-Global Reciprocal Network for video segmentation.

backbone (timm, per frame) -> 1×1 projections of res3..res5 to d_model (+ GroupNorm) -> local-global encoder
(CNP, frame queries, Hilbert selective scan, deformable attention) -> FPN to stride 4 -> Mask2Former video decoder
(Q mask tubes over the clip) -> set criterion with Hungarian matching (training) / semantic inference (predict).

Training supervises only annotated frames (``has_ann``); unannotated frames still flow through the temporal
modules, which is what lets a clip model use them.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from core.errors import ConfigError
from core.registry import BACKBONES, DECODERS, ENCODERS, LOSSES, MODELS, build
from models.base import MetaArch
from models.layers import group_norm
from models.losses.mask_set_criterion import build_video_targets, semantic_inference


@MODELS.register()
class LGRNet(MetaArch):
    def __init__(self, num_classes: int = 4, d_model: int = 64,
                 backbone: dict | None = None, encoder: dict | None = None, decoder: dict | None = None,
                 loss: dict | None = None, mask_stride: int = 4):
        """
        backbone: TimmBackbone args (name, norm, pretrained_path, ...). encoder: LocalGlobalEncoder args (besides
        d_model). decoder: VideoMask2FormerDecoder args (besides d_model, num_classes). loss: VideoSetCriterion
        args (weights, matcher, points). mask_stride: 4 (the paper: FPN to stride 4) or 2 (one more cheap FPN
        step on the backbone's stride-2 features, for small inputs; see models/decoders/pixel_fpn.py).
        """
        super().__init__()
        if mask_stride not in (2, 4):
            raise ConfigError(f"model.mask_stride must be 2 or 4, got {mask_stride}")
        self.num_classes, self.mask_stride = num_classes, mask_stride
        strides = (2, 4, 8, 16, 32) if mask_stride == 2 else (4, 8, 16, 32)
        self.backbone = build(BACKBONES, backbone or {}, key="backbone", default="TimmBackbone", strides=strides)
        ch = self.backbone.channels
        self.levels = ("res5", "res4", "res3")  # encoder tokens, coarse to fine
        self.input_proj = nn.ModuleDict({
            name: nn.Sequential(nn.Conv2d(ch[name], d_model, 1), group_norm(d_model)) for name in self.levels})
        for proj in self.input_proj.values():
            nn.init.xavier_uniform_(proj[0].weight, gain=1)
            nn.init.zeros_(proj[0].bias)
        self.encoder = build(ENCODERS, encoder or {}, key="encoder", default="LocalGlobalEncoder", d_model=d_model,
                             n_levels=len(self.levels))
        self.pixel_decoder = build(DECODERS, {"name": "PixelFPN"}, in_channels=ch["res2"], d_model=d_model,
                                   res1_channels=ch.get("res1"))
        self.decoder = build(DECODERS, decoder or {}, key="decoder", default="VideoMask2FormerDecoder",
                             d_model=d_model, num_classes=num_classes, n_levels=len(self.levels))
        self.criterion = build(LOSSES, loss or {}, key="loss", default="VideoSetCriterion", num_classes=num_classes)

    def _encode(self, video: torch.Tensor) -> tuple[dict, list[torch.Tensor], torch.Tensor]:
        """video (B, T, 3, H, W) in [0, 1] -> (backbone features res2..res5, each (B·T, C_l, H_l, W_l); encoder
        outputs coarse to fine, each (B·T, C, H_l, W_l); frame queries (B, T, n_q, C))."""
        b, t = video.shape[:2]
        feats = self.backbone(video.flatten(0, 1))
        enc, queries = self.encoder([self.input_proj[name](feats[name]) for name in self.levels], b, t)
        return feats, enc, queries

    def _run(self, video: torch.Tensor) -> tuple[dict, torch.Tensor]:
        """video (B, T, 3, H, W) in [0, 1] -> (decoder outputs, frame queries (B, T, n_q, C))."""
        feats, enc, queries = self._encode(video)
        mask_features = self.pixel_decoder(feats["res2"], enc[-1], feats.get("res1"))  # (B·T, C, H/s, W/s)
        return self.decoder(enc, mask_features, *video.shape[:2]), queries

    def frame_queries(self, video: torch.Tensor) -> torch.Tensor:
        """video (B, T, 3, H, W) -> the encoder's frame bottleneck queries (B, T, n_q, C), without the pixel
        decoder and mask decoder (LGSD's views need only these)."""
        return self._encode(video)[2]

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        outputs, _ = self._run(batch["video"])
        targets = build_video_targets(batch["masks"], batch["has_ann"])
        return self.criterion(outputs, targets)

    @torch.no_grad()
    def predict(self, batch: dict) -> dict[str, torch.Tensor]:
        video = batch["video"]
        outputs, _ = self._run(video)
        masks = outputs["pred_masks"]  # (B, Q, T, h, w) logits
        b, q, t = masks.shape[:3]
        masks = F.interpolate(masks.flatten(1, 2).float(), size=video.shape[-2:], mode="bilinear",
                              align_corners=False).unflatten(1, (q, t))
        return {"probs": semantic_inference(outputs["pred_logits"].float(), masks)}  # (B, T, K, H, W)
