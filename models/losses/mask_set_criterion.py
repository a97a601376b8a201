"""Mask2Former-style set prediction for video: Hungarian matching of query tubes to object tubes and the losses.

A video decoder predicts, per clip, Q queries each with class logits over K+1 classes (index K = "no object") and
one mask tube over the T frames of the clip. Targets are one tube per object present in the clip. Only some frames
of our clips are annotated (``frame_valid``); unannotated frames contribute nothing to matching costs or losses.

Point handling (shared by matcher and criterion): coordinates are normalised (x, y) in [0, 1]² and one set of 2D
points is used for **all frames** of a tube, so predictions at stride 4 and full-resolution targets are compared at
the same physical locations whatever their sizes. Sampling uses ``padding_mode="border"`` (Mask2Former uses zeros):
with zeros, a mask that touches the image border fades to 0.5 in the outer half pixel, which both adds spurious
target values and makes border points look uncertain to the importance sampling.

Weights follow the LGRNet paper (λ_class 2, λ_dice 5, λ_bce 2) with honest key names; the original code swapped the
"mask_dice"/"mask_ce" keys so BCE effectively got 5 and Dice 2 (REFERENCE §3.8.1). That is not reproduced here.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn

from core import comm
from core.errors import ConfigError
from core.registry import LOSSES, call

__all__ = ["point_sample", "HungarianVideoMatcher", "VideoSetCriterion", "semantic_inference", "build_video_targets"]


def point_sample(input: torch.Tensor, coords: torch.Tensor, padding_mode: str = "border") -> torch.Tensor:
    """Bilinear samples of ``input`` (N, C, H, W) at normalised (x, y) ``coords`` (N, P, 2) in [0, 1] -> (N, C, P).

    Pixel i covers [i/W, (i+1)/W) with its value at the centre (align_corners=False), so the same coordinates mean
    the same place at any resolution. Frames of a tube can be passed as channels to share points across frames.
    """
    grid = (2.0 * coords - 1.0).to(input.dtype).unsqueeze(2)  # N×P×1×2 in grid_sample's [-1, 1] convention
    out = F.grid_sample(input, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)
    return out.squeeze(3)


def _rand(shape: tuple[int, ...], device: torch.device, generator: torch.Generator | None) -> torch.Tensor:
    """Uniform [0, 1) numbers on ``device``; drawn on the generator's own device (a CPU generator cannot fill a CUDA
    tensor) and moved, so a seeded CPU generator gives the same points on any device."""
    if generator is None:
        return torch.rand(shape, device=device)
    return torch.rand(shape, generator=generator, device=generator.device).to(device)


def _frame_valid(target: dict, T: int, device: torch.device) -> torch.Tensor:
    """The target's ``frame_valid`` (T,) bool on ``device``; all frames valid when the key is absent."""
    fv = target.get("frame_valid")
    if fv is None:
        return torch.ones(T, dtype=torch.bool, device=device)
    fv = torch.as_tensor(fv, device=device).bool()
    if fv.shape != (T,):
        raise ValueError(f"frame_valid has shape {tuple(fv.shape)}, expected ({T},) to match pred_masks")
    return fv


def _check_target_masks(masks: torch.Tensor, n: int, T: int) -> None:
    if masks.dim() != 4 or masks.shape[0] != n or masks.shape[1] != T:
        raise ValueError(f"target masks must be (n={n}, T={T}, H, W), got {tuple(masks.shape)}")


class HungarianVideoMatcher(nn.Module):
    """One-to-one assignment of predicted query tubes to target tubes, per clip.

    cost = cost_class·(−p(target class)) + cost_mask·BCE + cost_dice·Dice, where BCE and Dice compare a predicted
    tube with a target tube at ``num_points`` random 2D points shared by all frames, on valid frames only (BCE is
    the mean over points × valid frames). Computed without gradients, in float32 with autocast off.

    forward(outputs {"pred_logits": (B, Q, K+1), "pred_masks": (B, Q, T, h, w)}, targets list of B dicts
    {"labels": (n,) long, "masks": (n, T, H, W) bool/float, "frame_valid": (T,) bool (optional)}, generator=None)
    -> list of B (pred_idx (m,), tgt_idx (m,)) long CPU tensors with m = min(Q, n), sorted by pred_idx.
    """

    def __init__(self, cost_class: float = 2.0, cost_mask: float = 2.0, cost_dice: float = 2.0,
                 num_points: int = 12544):
        super().__init__()
        if num_points < 1:
            raise ConfigError("model.loss num_points must be >= 1")
        self.cost_class, self.cost_mask, self.cost_dice = float(cost_class), float(cost_mask), float(cost_dice)
        self.num_points = int(num_points)

    def pairwise_cost(self, prob: torch.Tensor, labels: torch.Tensor, pred_pts: torch.Tensor,
                      tgt_pts: torch.Tensor) -> torch.Tensor:
        """Cost matrix (Q, n) from class probabilities ``prob`` (Q, K+1), ``labels`` (n,), predicted mask logits at
        sampled points ``pred_pts`` (Q, N) and target values at the same points ``tgt_pts`` (n, N), N = points ×
        valid frames (N = 0: mask terms are 0)."""
        cost = -self.cost_class * prob[:, labels]
        N = pred_pts.shape[1]
        if N == 0:
            return cost
        x, t = pred_pts.float(), tgt_pts.float()
        # BCE(x, t) = t·softplus(−x) + (1 − t)·softplus(x): two matmuls give all Q×n pairs at once.
        bce = (F.softplus(-x) @ t.T + F.softplus(x) @ (1.0 - t).T) / N
        p = x.sigmoid()
        dice = 1.0 - (2.0 * p @ t.T + 1.0) / (p.sum(1, keepdim=True) + t.sum(1)[None, :] + 1.0)
        return cost + self.cost_mask * bce + self.cost_dice * dice

    @torch.no_grad()
    def cost_matrices(self, outputs: dict, targets: list[dict],
                      generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """One float32 cost matrix (Q, n_b) per clip (see class docstring for the inputs)."""
        logits, masks = outputs["pred_logits"], outputs["pred_masks"]
        B, Q, T = masks.shape[:3]
        if len(targets) != B:
            raise ValueError(f"{len(targets)} targets for a batch of {B} clips")
        device, P = masks.device, self.num_points
        out = []
        with torch.autocast(device.type, enabled=False):
            for b, tgt in enumerate(targets):
                labels = torch.as_tensor(tgt["labels"], device=device).long()
                n = labels.numel()
                prob = logits[b].float().softmax(-1)
                if n == 0:
                    out.append(prob.new_zeros(Q, 0))
                    continue
                _check_target_masks(tgt["masks"], n, T)
                vidx = _frame_valid(tgt, T, device).nonzero().squeeze(1)
                # Drop unannotated frames before sampling, so nothing on them (even NaN) reaches the cost.
                pm = masks[b][:, vidx].float()                       # Q×Tv×h×w
                tm = tgt["masks"].to(device)[:, vidx].float()        # n×Tv×H×W
                coords = _rand((1, P, 2), device, generator)         # shared by all queries, targets and frames
                pp = point_sample(pm, coords.expand(Q, -1, -1)).flatten(1)  # Q×(Tv·P)
                tp = point_sample(tm, coords.expand(n, -1, -1)).flatten(1)  # n×(Tv·P)
                out.append(self.pairwise_cost(prob, labels, pp, tp))
        return out

    @torch.no_grad()
    def forward(self, outputs: dict, targets: list[dict],
                generator: torch.Generator | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        indices = []
        for b, C in enumerate(self.cost_matrices(outputs, targets, generator)):
            C = C.cpu()
            if not torch.isfinite(C).all():
                raise ValueError(f"non-finite matching cost in clip {b}: are the predictions NaN/inf?")
            rows, cols = linear_sum_assignment(C.numpy())
            indices.append((torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(cols, dtype=torch.long)))
        return indices


@LOSSES.register()
class VideoSetCriterion(nn.Module):
    """Mask2Former set criterion for video tubes: class CE + mask BCE + mask Dice, for the final and aux layers.

    Each decoder layer (final and every ``aux_outputs`` entry) is matched on its own. Losses:

    - ``loss_class``: CE over all B·Q queries (unmatched → no-object class K, whose CE weight is ``eos_coef``),
      PyTorch's weighted mean (divided by the sum of the target weights).
    - ``loss_mask_bce`` / ``loss_mask_dice``: per matched pair on P points chosen by PointRend importance sampling
      (``oversample_ratio``·P uniform 2D candidates, the ``importance_sample_ratio``·P most uncertain ones, the
      rest uniform). A point's uncertainty is −|logit| maximised over the pair's **valid** frames (a point that is
      ambiguous in any annotated frame is worth supervising); the chosen 2D points are then read on every frame.
      BCE = mean over points × valid frames; Dice = 1 − (2Σσ(x)t + 1)/(Σσ(x) + Σt + 1), sums over points ×
      valid frames. Both are summed over pairs and divided by the number of target objects averaged over DDP
      ranks (clamped ≥ 1). Floor: importance points sit on edges, where bilinearly sampled targets are
      fractional, so even perfect binary logits keep a small BCE/Dice (as in Mask2Former).

    forward(outputs, targets, generator=None) -> {"loss_class", "loss_mask_bce", "loss_mask_dice",
    "loss_class_aux{i}", ...} (float32 scalars, each ALREADY multiplied by its weight; aux ones also by
    ``aux_weight``; i indexes ``aux_outputs`` in order). Shapes as in :class:`HungarianVideoMatcher`.
    ``self.weights`` maps the base keys to their weights; :meth:`loss_weight` resolves any returned key.
    """

    BASE_KEYS = ("loss_class", "loss_mask_bce", "loss_mask_dice")

    def __init__(self, num_classes: int, matcher: dict | HungarianVideoMatcher | None = None,
                 weight_class: float = 2.0, weight_dice: float = 5.0, weight_bce: float = 2.0,
                 eos_coef: float = 0.1, num_points: int = 12544, oversample_ratio: float = 3.0,
                 importance_sample_ratio: float = 0.75, aux_weight: float = 1.0):
        super().__init__()
        if oversample_ratio < 1 or not 0 <= importance_sample_ratio <= 1:
            raise ConfigError("model.loss: need oversample_ratio >= 1 and 0 <= importance_sample_ratio <= 1")
        self.num_classes = int(num_classes)
        if isinstance(matcher, HungarianVideoMatcher):
            self.matcher = matcher
        else:
            self.matcher = call(HungarianVideoMatcher, {"num_points": num_points, **dict(matcher or {})},
                                key="matcher")
        self.weights = {"loss_class": float(weight_class), "loss_mask_bce": float(weight_bce),
                        "loss_mask_dice": float(weight_dice)}
        self.aux_weight = float(aux_weight)
        self.eos_coef = float(eos_coef)
        self.num_points, self.oversample_ratio = int(num_points), float(oversample_ratio)
        self.importance_sample_ratio = float(importance_sample_ratio)
        empty_weight = torch.ones(self.num_classes + 1)
        empty_weight[-1] = self.eos_coef
        self.register_buffer("empty_weight", empty_weight, persistent=False)

    def loss_weight(self, key: str) -> float:
        """The factor already applied to ``key`` of the returned dict (e.g. "loss_mask_dice_aux2")."""
        base, sep, _ = key.partition("_aux")
        return self.weights[base] * (self.aux_weight if sep else 1.0)

    # ------------------------------------------------------------------ pieces
    def _sample_points(self, logits: torch.Tensor, valid: torch.Tensor,
                       generator: torch.Generator | None) -> torch.Tensor:
        """Importance-sampled coords (M, P, 2) for mask logits (M, T, h, w) with frame validity (M, T)."""
        M, P = logits.shape[0], self.num_points
        n_imp = int(self.importance_sample_ratio * P)
        coords = _rand((M, max(int(self.oversample_ratio * P), n_imp), 2), logits.device, generator)
        unc = -point_sample(logits, coords).abs()                                     # M×T×(kP)
        unc = unc.masked_fill(~valid[:, :, None], float("-inf")).amax(1)              # M×(kP)
        idx = unc.topk(n_imp, dim=1).indices
        chosen = coords.gather(1, idx[..., None].expand(-1, -1, 2))
        return torch.cat([chosen, _rand((M, P - n_imp, 2), logits.device, generator)], 1)

    def _class_loss(self, logits: torch.Tensor, targets: list[dict], indices: list) -> torch.Tensor:
        logits = logits.float()
        B, Q, C = logits.shape
        if C != self.num_classes + 1:
            raise ValueError(f"pred_logits has {C} classes, expected num_classes + 1 = {self.num_classes + 1}")
        target_classes = torch.full((B, Q), self.num_classes, dtype=torch.long, device=logits.device)
        for b, (pi, ti) in enumerate(indices):
            labels = torch.as_tensor(targets[b]["labels"], device=logits.device).long()
            target_classes[b, pi.to(logits.device)] = labels[ti.to(logits.device)]
        return F.cross_entropy(logits.transpose(1, 2), target_classes, self.empty_weight.to(logits.device))

    def _mask_losses(self, masks: torch.Tensor, targets: list[dict], indices: list, num_masks: torch.Tensor,
                     generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        device, T = masks.device, masks.shape[2]
        src, tgt, valid = [], [], []
        for b, (pi, ti) in enumerate(indices):
            if len(pi) == 0:
                continue
            _check_target_masks(targets[b]["masks"], len(targets[b]["labels"]), T)
            src.append(masks[b][pi.to(device)])
            tgt.append(targets[b]["masks"].to(device)[ti.to(device)])
            valid.append(_frame_valid(targets[b], T, device).expand(len(pi), T))
        if not src:  # keep the graph connected (DDP) while contributing nothing
            zero = masks.sum() * 0.0
            return zero.float(), zero.float()
        src = torch.cat(src).float()                     # M×T×h×w
        tgt = torch.cat(tgt).float()                     # M×T×H×W
        valid = torch.cat(valid)                         # M×T
        # Neutralise unannotated frames up front: whatever they hold (even NaN) then reaches neither the losses
        # nor, through torch.where's backward, the gradient.
        src = torch.where(valid[:, :, None, None], src, 0.0)
        tgt = torch.where(valid[:, :, None, None], tgt, 0.0)
        with torch.no_grad():
            coords = self._sample_points(src.detach(), valid, generator)
            tp = point_sample(tgt, coords)               # M×T×P
        xp = point_sample(src, coords)                   # M×T×P
        v = valid[:, :, None].expand_as(xp)
        n_valid = valid.sum(1).clamp(min=1) * xp.shape[2]
        # Exclude unannotated frames from the sums (their neutral 0 logits would otherwise add BCE ln 2).
        bce = torch.where(v, F.binary_cross_entropy_with_logits(xp, tp, reduction="none"), 0.0).sum((1, 2))
        bce = bce / n_valid
        p, t = torch.where(v, xp.sigmoid(), 0.0), torch.where(v, tp, 0.0)
        dice = 1.0 - (2.0 * (p * t).sum((1, 2)) + 1.0) / (p.sum((1, 2)) + t.sum((1, 2)) + 1.0)
        return bce.sum() / num_masks, dice.sum() / num_masks

    def layer_losses(self, outputs: dict, targets: list[dict], num_masks: torch.Tensor,
                     generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Unweighted losses of one decoder layer (keys ``BASE_KEYS``)."""
        indices = self.matcher(outputs, targets, generator)
        with torch.autocast(outputs["pred_masks"].device.type, enabled=False):
            cls = self._class_loss(outputs["pred_logits"], targets, indices)
            bce, dice = self._mask_losses(outputs["pred_masks"], targets, indices, num_masks, generator)
        return {"loss_class": cls, "loss_mask_bce": bce, "loss_mask_dice": dice}

    def forward(self, outputs: dict[str, Any], targets: list[dict],
                generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        device = outputs["pred_masks"].device
        # Mask2Former's normaliser: objects on this rank, averaged over ranks, so every rank divides by the same
        # number and the DDP-averaged gradient is that of sum(mask losses) / (mean objects per rank).
        num_masks = torch.tensor(float(sum(len(t["labels"]) for t in targets)), device=device)
        num_masks = comm.all_reduce_mean(num_masks).clamp(min=1.0)
        out = {k: self.weights[k] * v for k, v in self.layer_losses(outputs, targets, num_masks, generator).items()}
        for i, aux in enumerate(outputs.get("aux_outputs") or []):
            for k, v in self.layer_losses(aux, targets, num_masks, generator).items():
                out[f"{k}_aux{i}"] = self.aux_weight * self.weights[k] * v
        return out


def semantic_inference(pred_logits: torch.Tensor, pred_masks: torch.Tensor,
                       out_size: tuple[int, int] | None = None) -> torch.Tensor:
    """Mask2Former semantic inference: (B, Q, K+1) logits, (B, Q, T, h, w) mask logits -> (B, T, K, h, w) probs.

    score[b, t, k] = Σ_q softmax(logits)[b, q, k] · σ(mask[b, q, t]), the no-object column dropped, clamped to
    [0, 1] (background implied). ``out_size`` (H, W) bilinearly resizes the mask **logits** first (as Mask2Former
    does before the sigmoid) for the framework's predict() contract "probs (B, T, K, H, W)".
    """
    cls = pred_logits.float().softmax(-1)[..., :-1]
    masks = pred_masks.float()
    if out_size is not None and tuple(masks.shape[-2:]) != tuple(out_size):
        B, Q, T = masks.shape[:3]
        masks = F.interpolate(masks.flatten(0, 1), size=tuple(out_size), mode="bilinear", align_corners=False)
        masks = masks.view(B, Q, T, *masks.shape[-2:])
    return torch.einsum("bqk,bqthw->btkhw", cls, masks.sigmoid()).clamp(0.0, 1.0)


def build_video_targets(masks_TKHW: torch.Tensor, has_ann: torch.Tensor) -> list[dict]:
    """Set targets from per-class masks (B, T, K, H, W) bool (the batch layout; foreground classes only, no
    background channel) and annotation flags (B, T) bool: per clip one target per class present in an annotated
    frame -> [{"labels": (n,) long, "masks": (n, T, H, W) bool (zero on unannotated frames), "frame_valid": (T,) bool}].

    From a label map L (B, T, H, W) with 0 = background: ``F.one_hot(L, K + 1)[..., 1:].permute(0, 1, 4, 2, 3)``.
    """
    masks = masks_TKHW.bool().transpose(1, 2)  # (B, K, T, H, W): one target per class
    has_ann = torch.as_tensor(has_ann, device=masks.device).bool()
    B, K, T = masks.shape[:3]
    if has_ann.shape != (B, T):
        raise ValueError(f"has_ann has shape {tuple(has_ann.shape)}, expected ({B}, {T})")
    out = []
    for b in range(B):
        m = masks[b] & has_ann[b].view(1, T, 1, 1)     # what unannotated frames hold is not ground truth
        present = m.flatten(1).any(1).nonzero().squeeze(1)
        out.append({"labels": present.long(), "masks": m[present], "frame_valid": has_ann[b].clone()})
    return out
