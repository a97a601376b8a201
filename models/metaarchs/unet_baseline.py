"""Per-frame 2D U-Net baseline (segmentation_models_pytorch, timm encoder by name, random init).

Training uses only the annotated frames of each clip (the others have no labels and a per-frame model gains
nothing from them); prediction runs every frame. Softmax over background + K classes; CE + Dice loss.
"""
from __future__ import annotations

import segmentation_models_pytorch as smp
import torch

from core.errors import ConfigError
from core.registry import LOSSES, MODELS, build
from models.base import MetaArch
from models.layers import batchnorm_to_groupnorm, masks_to_labels

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@MODELS.register()
class UNetBaseline(MetaArch):
    def __init__(self, num_classes: int = 4, encoder: str = "tu-mobilenetv3_small_100", encoder_depth: int = 5,
                 decoder_channels: list[int] = (128, 64, 32, 16, 16), norm: str = "batch",
                 loss: dict | None = None, pretrained_path: str | None = None):
        """
        num_classes: foreground classes K (background is added). encoder: smp/timm encoder name ("tu-<timm>").
        encoder_depth: 5 uses every stage of the timm encoders we tried; smaller depths leave stages that
            timm still builds but never runs (they would break DDP and inflate the parameter count).
        norm: "batch" or "group" (GroupNorm everywhere: batch-size independent, exact DDP equivalence on CPU).
        pretrained_path: optional local state dict for the encoder (nothing is downloaded).
        """
        super().__init__()
        if norm not in ("batch", "group"):
            raise ConfigError(f"model.norm must be 'batch' or 'group', got {norm!r}")
        if len(decoder_channels) != encoder_depth:
            raise ConfigError(f"model.decoder_channels needs one entry per encoder stage ({encoder_depth}), got "
                              f"{list(decoder_channels)}")
        self.num_classes = num_classes
        self.net = smp.Unet(encoder_name=encoder, encoder_depth=encoder_depth, encoder_weights=None,
                            decoder_channels=list(decoder_channels), classes=num_classes + 1)
        if pretrained_path:
            state = torch.load(pretrained_path, map_location="cpu", weights_only=True)
            missing, unexpected = self.net.encoder.load_state_dict(state, strict=False)
            if len(missing) == len(self.net.encoder.state_dict()):
                raise ConfigError(f"model.pretrained_path {pretrained_path}: no key matches the {encoder} encoder")
        if norm == "group":
            batchnorm_to_groupnorm(self.net)
        self.criterion = build(LOSSES, loss or {}, key="loss", default="CEDiceLoss", num_classes=num_classes)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def _logits(self, frames: torch.Tensor) -> torch.Tensor:
        # N×3×H×W in [0, 1] -> N×(K+1)×H×W
        return self.net((frames - self.mean) / self.std)

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        has_ann = batch["has_ann"]  # B×T
        frames = batch["video"][has_ann]  # N×3×H×W (annotated frames only)
        target = masks_to_labels(batch["masks"]).flatten(0, 1)[has_ann.flatten()]  # N×H×W
        # Each clip weighs 1/B, shared by its annotated frames: the loss is the mean of per-clip losses, so DDP's
        # gradient average over W processes equals one process with the W-times larger batch.
        per_clip = has_ann.sum(1, keepdim=True).clamp(min=1).float() * has_ann.shape[0]  # B×1
        weights = (1.0 / per_clip).expand_as(has_ann)[has_ann]  # N
        return self.criterion(self._logits(frames), target, weights)

    @torch.no_grad()
    def predict(self, batch: dict) -> dict[str, torch.Tensor]:
        video = batch["video"]  # B×T×3×H×W
        b, t = video.shape[:2]
        probs = self._logits(video.flatten(0, 1)).float().softmax(1)[:, 1:]  # (B·T)×K×H×W
        return {"probs": probs.unflatten(0, (b, t))}
