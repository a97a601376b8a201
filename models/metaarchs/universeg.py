"""UniverSeg (Butoi et al., ICCV 2023, arXiv 2304.06131; seed 004): segment a target image from a support set of
image / label pairs in one forward pass, through CrossConv layers that pair every target with every support item
(REFERENCE §5.4). Written from the paper's description; the published network (4 encoder levels of 64 channels,
3 decoder levels with skips, a 1×1 output) has 1,182,785 parameters, which ``UniverSegNet()`` reproduces (tested).

    net = UniverSegNet(encoder=(64, 64, 64, 64), decoder=(64, 64, 64))
    logits = net(target B×1×H×W, support_images B×S×1×H×W, support_labels B×S×1×H×W)   # B×1×H×W logits

- ``CrossConv``: for target features x (B×Cx×H×W) and support features y (B×S×Cy×H×W), one ``nn.Conv2d`` on every
  pair [x, y_s] concatenated on channels -> B×S×C×H×W. It wraps the convolution (``self.conv``) instead of
  subclassing it, so ``peft`` sees a plain ``nn.Conv2d`` to put LoRA on.
- ``CrossBlock``: CrossConv + LeakyReLU; the target's new features are the mean over the support of the pair
  features, then a 3×3 conv + LeakyReLU; each support item keeps its own pair features through another 3×3 conv +
  LeakyReLU (the two convs are shared over items).
- Encoder levels are followed by 2×2 max pooling (not after the last); decoder levels upsample ×2 (bilinear),
  concatenate the encoder's features of that level (target and support alike) and apply a CrossBlock.

Why written here: the authors' package (``universeg`` on PyPI) ships the network and downloads weights, but no
training code and no hook for our batch and support contracts; the network is small enough to define from the
paper, and that keeps LoRA and checkpoint loading under our control.

``model.name="UniverSeg"`` (``UniverSeg`` below): binary per class, one task per class, every query frame a target.
Inputs are grey in [0, 1] (the first channel of our 3-channel frames). The support comes from the batch's
``support`` field (``data_schedule/mappers/incontext.py``: images S×3×H×W, masks S×K×H×W, classes S); class c uses
the support slices drawn for c. Loss: binary cross-entropy + soft Dice per target. ``predict``: sigmoid
probabilities B×T×K×H×W (classes independent; a class without support items is predicted absent, an empty
support set is an error).

Adaptation: ``checkpoint`` loads start weights from a UniverSeg checkpoint of the same widths (another width is a
one-line error naming both); ``train_mode="lora"`` then freezes them and trains ``peft`` LoRA adapters on the
network's ``nn.Conv2d`` layers (``lora``: ``target`` "convs" — every convolution — or "cross" — the CrossConvs'
only —, a regex or a suffix list; ``r`` 4, ``alpha`` 4, ``dropout``); with ``train.checkpoint.state="trainable"``
checkpoints hold the adapters alone, tied to the start checkpoint by its sha256.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from core.errors import CheckpointError, ConfigError
from core.registry import MODELS
from models.base import MetaArch, check_choice
from models.sam2.loss import dice_loss

TRAIN_MODES = ("full", "lora")
#: LoRA targets (peft regex on full module names): every convolution of the network, or only the CrossConvs'
UNIVERSEG_LORA = {"convs": r"net\..*", "cross": r"net\..*\.cross\.conv"}


class CrossConv(nn.Module):
    """One convolution over every (target, support item) pair; see the module docstring."""

    def __init__(self, target_channels: int, support_channels: int, out_channels: int, kernel_size: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(target_channels + support_channels, out_channels, kernel_size,
                              padding=kernel_size // 2)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        b, s = y.shape[:2]
        pairs = torch.cat([x[:, None].expand(-1, s, -1, -1, -1), y], dim=2)  # B×S×(Cx+Cy)×H×W
        out = self.conv(pairs.flatten(0, 1))
        return out.view(b, s, *out.shape[1:])


class CrossBlock(nn.Module):
    def __init__(self, target_channels: int, support_channels: int, features: int):
        super().__init__()
        self.cross = CrossConv(target_channels, support_channels, features)
        self.target = nn.Conv2d(features, features, 3, padding=1)
        self.support = nn.Conv2d(features, features, 3, padding=1)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pair = F.leaky_relu(self.cross(x, y))  # B×S×C×H×W
        x = F.leaky_relu(self.target(pair.mean(1)))
        ys = F.leaky_relu(self.support(pair.flatten(0, 1)))
        return x, ys.view(pair.shape)


def _per_item(fn, y: torch.Tensor) -> torch.Tensor:
    out = fn(y.flatten(0, 1))
    return out.view(*y.shape[:2], *out.shape[1:])


class UniverSegNet(nn.Module):
    """The UniverSeg network (defaults: the published widths, 1,182,785 parameters)."""

    def __init__(self, encoder: tuple[int, ...] = (64, 64, 64, 64), decoder: tuple[int, ...] = (64, 64, 64)):
        super().__init__()
        if len(decoder) != len(encoder) - 1:
            raise ConfigError(f"UniverSeg needs one decoder level fewer than encoder levels, got encoder {encoder} "
                              f"and decoder {decoder}")
        self.enc = nn.ModuleList()
        cx, cy = 1, 2
        for f in encoder:
            self.enc.append(CrossBlock(cx, cy, f))
            cx = cy = f
        self.dec = nn.ModuleList()
        for f, skip in zip(decoder, reversed(encoder[:-1])):
            self.dec.append(CrossBlock(cx + skip, cy + skip, f))
            cx = cy = f
        self.out = nn.Conv2d(cx, 1, 1)

    def forward(self, target: torch.Tensor, support_images: torch.Tensor, support_labels: torch.Tensor
                ) -> torch.Tensor:
        """target B×1×H×W, support_images / support_labels B×S×1×H×W in [0, 1] -> logits B×1×H×W (H, W
        divisible by 2 ** (levels − 1))."""
        x, y = target, torch.cat([support_images, support_labels], dim=2)
        skips = []
        for i, block in enumerate(self.enc):
            x, y = block(x, y)
            if i < len(self.enc) - 1:
                skips.append((x, y))
                x, y = F.max_pool2d(x, 2), _per_item(lambda t: F.max_pool2d(t, 2), y)
        for block, (sx, sy) in zip(self.dec, reversed(skips)):
            up = lambda t: F.interpolate(t, scale_factor=2, mode="bilinear", align_corners=False)  # noqa: E731
            x, y = torch.cat([up(x), sx], 1), torch.cat([_per_item(up, y), sy], 2)
            x, y = block(x, y)
        return self.out(x)


def widths_of(state: dict) -> tuple[list[int], list[int]]:
    """(encoder, decoder) widths of a UniverSeg state dict (keys ``net.enc.<i>.cross.conv.weight``; a LoRA-wrapped
    one has ``...conv.base_layer.weight``)."""
    def level(prefix: str) -> list[int]:
        out = {}
        for k, v in state.items():
            parts = k.split(".")
            if k.startswith(prefix) and parts[3:5] == ["cross", "conv"] and parts[-1] == "weight" and "lora_" not in k:
                out[int(parts[2])] = int(v.shape[0])
        return [out[i] for i in sorted(out)]
    return level("net.enc."), level("net.dec.")


@MODELS.register()
class UniverSeg(MetaArch):
    """UniverSeg on our support sets (see the module docstring)."""

    requires = frozenset({"support"})
    fvcore_traceable = False  # per-class Python loops over the support: the dispatch FLOP counter counts it

    def __init__(self, num_classes: int = 4, encoder: list[int] = (64, 64, 64, 64), decoder: list[int] = (64, 64, 64),
                 dice_weight: float = 1.0, target_batch: int = 16, checkpoint: str | None = None,
                 train_mode: str = "full", lora: dict | None = None):
        super().__init__()
        self.num_classes, self.dice_weight, self.target_batch = int(num_classes), float(dice_weight), int(target_batch)
        self.net = UniverSegNet(tuple(encoder), tuple(decoder))
        self.levels = len(encoder)
        self.train_mode = check_choice("model.train_mode", train_mode, TRAIN_MODES)
        if checkpoint:
            self._load_start(str(checkpoint))
        if self.train_mode == "lora":
            from models.sam2.lora import add_lora

            if not checkpoint:
                raise ConfigError("model.train_mode='lora' adapts a trained UniverSeg: set model.checkpoint to its "
                                  "checkpoint (e.g. output/<run>/checkpoints/model_final.pth)")
            add_lora(self, **{"target": "convs", "r": 4, "alpha": 4.0, **(lora or {})}, layer_types=(nn.Conv2d,),
                     presets=UNIVERSEG_LORA)
            self.frozen_base_path = str(checkpoint)
        elif lora:
            raise ConfigError(f"model.lora is set but model.train_mode={train_mode!r}; use train_mode='lora'")

    def _load_start(self, path: str) -> None:
        """Start weights: a MedVidSeg UniverSeg checkpoint (its ``net.*`` keys), same widths as the config."""
        from core.checkpoint import load_checkpoint

        state = {k: v for k, v in load_checkpoint(path)["model"].items() if k.startswith("net.")}
        problem = self.checkpoint_mismatch(state)
        if problem:
            raise CheckpointError(f"model.checkpoint {path}: {problem}")
        self.load_state_dict(state)

    def checkpoint_mismatch(self, state: dict) -> str | None:
        """Why ``state`` (a state dict) cannot load into this network's widths, or None (``check_model_matches``
        uses it for a clearer message than a list of keys)."""
        theirs, own = widths_of(state), widths_of(self.state_dict())
        if not theirs[0]:
            return "holds no UniverSeg network (no net.enc.<i>.cross.conv weights)"
        if theirs != own:
            return (f"a UniverSeg of encoder widths {theirs[0]} / decoder {theirs[1]}, but the config builds encoder "
                    f"{own[0]} / decoder {own[1]}; set model.encoder and model.decoder to the checkpoint's")
        return None

    def _support(self, batch: dict, i: int, c: int, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        sup = batch.get("support")
        if not isinstance(sup, dict) or not {"images", "masks", "classes"} <= set(sup):
            got = sorted(sup) if isinstance(sup, dict) else type(sup).__name__
            raise ConfigError(f"UniverSeg needs batch['support'] with images, masks and classes (an in-context mapper), "
                              f"got {got}")
        idx = (sup["classes"][i] == c).nonzero()[:, 0]
        if len(idx) == 0:
            return None
        if sup["images"].shape[-3] != batch["video"].shape[-3]:
            raise ConfigError(f"UniverSeg: support images have {sup['images'].shape[-3]} channels, the target "
                              f"{batch['video'].shape[-3]}; expected the same channel count")
        images, masks = sup["images"][i][idx, :1], sup["masks"][i][idx, c:c + 1].float()
        if tuple(images.shape[-2:]) != (h, w):
            raise ConfigError(f"UniverSeg: support images are {tuple(images.shape[-2:])}, the target {(h, w)}; "
                              f"expected the same size")
        empty = (masks.flatten(1).sum(1) == 0).nonzero()[:, 0].tolist()
        if empty:
            raise ConfigError(f"UniverSeg: support item(s) {idx[empty].tolist()} of sample {i} have an empty mask for "
                              f"class {c}; every support item must show the class")
        return images, masks

    @staticmethod
    def _check_not_empty(batch: dict) -> None:
        sup = batch.get("support")
        if isinstance(sup, dict) and "classes" in sup and sup["classes"].shape[-1] == 0:
            raise ConfigError("UniverSeg: the support set is empty (support size 0); set the mapper's "
                              "support_size >= 1")

    def _logits(self, frames: torch.Tensor, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """T×3×H×W query frames, S support items -> T×H×W logits (targets in chunks of ``target_batch``)."""
        m = 2 ** (self.levels - 1)
        if frames.shape[-2] % m or frames.shape[-1] % m:
            raise ConfigError(f"UniverSeg: frame size {tuple(frames.shape[-2:])} must be divisible by {m}")
        out = []
        for chunk in frames[:, :1].split(self.target_batch):
            n = chunk.shape[0]
            out.append(self.net(chunk, images[None].expand(n, -1, -1, -1, -1),
                                masks[None].expand(n, -1, -1, -1, -1))[:, 0])
        return torch.cat(out)

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        self._check_not_empty(batch)
        video, masks = batch["video"], batch["masks"]
        b, t, _, h, w = video.shape
        bce, dice, n = video.new_zeros(()), video.new_zeros(()), 0
        for i in range(b):
            for c in batch["support"]["classes"][i].unique().tolist():
                ann = batch["has_ann"][i].bool()
                if not ann.any():  # no labelled query frame: nothing to learn from this task
                    continue
                got = self._support(batch, i, int(c), h, w)
                logits = self._logits(video[i][ann], *got)  # only the labelled frames enter the loss
                target = masks[i][ann, int(c)].float()
                bce = bce + F.binary_cross_entropy_with_logits(logits, target)
                dice = dice + dice_loss(logits, target).mean()
                n += 1
        n = max(n, 1)
        return {"loss_bce": bce / n, "loss_dice": self.dice_weight * dice / n}

    @torch.no_grad()
    def predict(self, batch: dict) -> dict[str, torch.Tensor]:
        self._check_not_empty(batch)
        video = batch["video"]
        b, t, _, h, w = video.shape
        probs = video.new_zeros(b, t, self.num_classes, h, w)
        for i in range(b):
            for c in range(self.num_classes):
                got = self._support(batch, i, c, h, w)
                if got is not None:  # a class without support items is predicted absent
                    probs[i, :, c] = self._logits(video[i], *got).sigmoid()
        return {"probs": probs}
