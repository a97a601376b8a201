"""Multi-scale image backbone from timm by name (random init; weights only from a local file)."""
from __future__ import annotations

import difflib

import timm
import torch
from torch import nn

from core.errors import ConfigError
from core.registry import BACKBONES
from models.layers import batchnorm_to_groupnorm

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LEVEL_NAMES = {2: "res1", 4: "res2", 8: "res3", 16: "res4", 32: "res5"}


@BACKBONES.register()
class TimmBackbone(nn.Module):
    """Frames -> {("res1": stride 2, if asked,) "res2": stride 4, "res3": 8, "res4": 16, "res5": 32} feature maps, each N×C_l×H_l×W_l.

    ``model`` is a timm model name.

    Any timm model with ``features_only`` support works (``mobilenetv3_small_100`` for CPU, ``caformer_s18``,
    ``pvt_v2_b2``, ``res2net50_26w_4s`` at paper scale). Input: N×3×H×W in [0, 1]; ImageNet normalisation is
    applied here so every backbone sees what its (optional, local) pretrained weights expect.
    """

    def __init__(self, model: str, strides: tuple[int, ...] = (4, 8, 16, 32), pretrained_path: str | None = None,
                 norm: str = "batch", drop_path_rate: float = 0.0):
        super().__init__()
        name = model
        if name not in timm.list_models():
            hits = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(map(repr, hits))}?" if hits else ""
            raise ConfigError(f"model.backbone.model: no timm model {name!r}{hint}")
        if norm not in ("batch", "group"):
            raise ConfigError(f"model.backbone.norm must be 'batch' or 'group', got {norm!r}")
        kwargs = {"drop_path_rate": drop_path_rate} if drop_path_rate else {}
        probe = timm.create_model(name, features_only=True, pretrained=False, **kwargs)
        reductions = probe.feature_info.reduction()
        missing = [s for s in strides if s not in reductions]
        if missing:
            raise ConfigError(f"model.backbone {name!r} has feature strides {reductions}, not {missing}")
        out_indices = tuple(reductions.index(s) for s in strides)
        self.body = timm.create_model(name, features_only=True, pretrained=False, out_indices=out_indices, **kwargs)
        if pretrained_path:
            state = torch.load(pretrained_path, map_location="cpu", weights_only=True)
            state = state.get("state_dict", state.get("model", state))
            missing_keys, _ = self.body.load_state_dict(state, strict=False)
            if len(missing_keys) == len(self.body.state_dict()):
                raise ConfigError(f"model.backbone.pretrained_path {pretrained_path}: no key matches {name}")
        if norm == "group":
            batchnorm_to_groupnorm(self.body)
        self.strides = tuple(strides)
        self.names = tuple(LEVEL_NAMES[s] for s in strides)
        self.channels = dict(zip(self.names, self.body.feature_info.channels()))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, frames: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = self.body((frames - self.mean) / self.std)
        out = {}
        for name, f in zip(self.names, feats):
            if f.shape[1] != self.channels[name]:  # some timm models return NHWC; we hand out NCHW
                f = f.permute(0, 3, 1, 2)
            out[name] = f.contiguous()
        return out
