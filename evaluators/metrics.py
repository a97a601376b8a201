"""Segmentation metrics as pure functions on tensors / arrays (the evaluators wrap them with state).

Conventions
- Label maps are integer tensors with values ``0..K``: 0 is background, ``k`` is foreground class ``k``.
- Per-class outputs have length ``K`` and index ``k - 1`` holds class ``k`` (background is never scored).
- A class absent from both the prediction and the ground truth has no defined score: Dice/IoU are NaN there and
  callers leave it out of means (``np.nanmean``). A class present in only one of them scores 0.
- No smoothing terms: Dice = 2I / (P + G), IoU = I / (P + G - I).
"""
from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

ArrayLike = torch.Tensor | np.ndarray


def probs_to_labels(probs: torch.Tensor) -> torch.Tensor:
    """Per-class foreground probabilities -> label map.

    probs: ``[..., K, H, W]`` float, class ``k`` at channel ``k - 1`` (background excluded).
    Returns ``[..., H, W]`` long in ``0..K``.

    The background probability is ``clamp(1 - sum_k p_k, min=0)`` and the label is the argmax over
    ``[background, p_1, ..., p_K]`` (ties go to the lower label, so to background first).
    - Softmax models (``p`` = the foreground part of a softmax over K + 1 channels): the background term is exactly
      the softmax background, so this is the usual argmax.
    - Independent sigmoids: overlapping classes are resolved by the highest probability; a lone class wins where
      ``p_k > 1 - p_k``, i.e. ``p_k > 0.5`` (the usual threshold); when several classes are on, the background
      term shrinks and the most probable class wins.
    """
    if probs.dim() < 3:
        raise ValueError(f"probs must be [..., K, H, W], got shape {tuple(probs.shape)}")
    probs = probs.float()
    bg = (1.0 - probs.sum(dim=-3, keepdim=True)).clamp_(min=0.0)
    return torch.cat([bg, probs], dim=-3).argmax(dim=-3)


def seg_stats(pred: ArrayLike, gt: ArrayLike, num_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class intersection and areas of two label maps.

    pred, gt: ``(H, W)`` (any equal shape) integer label maps in ``0..K``, torch (any device) or numpy.
    Returns ``(inter, pred_area, gt_area)``: int64 numpy arrays of length ``K`` (classes ``1..K``), in pixels.
    """
    pred = torch.as_tensor(pred).long()
    gt = torch.as_tensor(gt).long().to(pred.device)
    if pred.shape != gt.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and gt {tuple(gt.shape)} must have the same shape")
    n = num_classes + 1
    for name, x in (("pred", pred), ("gt", gt)):
        if x.numel() and (int(x.min()) < 0 or int(x.max()) > num_classes):
            raise ValueError(f"{name} labels must be in 0..{num_classes}, got {int(x.min())}..{int(x.max())}")
    pred, gt = pred.flatten(), gt.flatten()
    pred_area = torch.bincount(pred, minlength=n)[1:]
    gt_area = torch.bincount(gt, minlength=n)[1:]
    inter = torch.bincount(pred[pred == gt], minlength=n)[1:]
    return tuple(x.cpu().numpy().astype(np.int64) for x in (inter, pred_area, gt_area))


def dice_iou(inter: ArrayLike, pred_area: ArrayLike, gt_area: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Dice and IoU from counts (any equal shape, e.g. ``K`` or ``N x K``).

    Returns float64 arrays ``(dice, iou)``: ``2I / (P + G)`` and ``I / (P + G - I)``, NaN where ``P + G == 0``
    (class absent from both prediction and ground truth), 0 where only one of them has the class.
    """
    i, p, g = (np.asarray(x, dtype=np.float64) for x in (inter, pred_area, gt_area))
    total = p + g
    absent = total == 0
    safe = np.where(absent, 1.0, total)
    dice = np.where(absent, np.nan, 2.0 * i / safe)
    iou = np.where(absent, np.nan, i / np.where(absent, 1.0, total - i))
    return dice, iou


def _surface(mask: np.ndarray) -> np.ndarray:
    """Boundary pixels of a boolean mask (pixels with a background neighbour, image border counted as outside)."""
    eroded = ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(mask.ndim, 1),
                                    border_value=0)
    return mask & ~eroded


def _crop_to_union(p: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both masks cropped to the bounding box of ``p | g`` grown by one pixel per side (clipped to the image).

    Exact for HD95: every surface pixel lies in the box, Euclidean distances do not depend on the domain, and the
    one-pixel margin (background) keeps the erosion of ``_surface`` unchanged (at the image border the crop *is*
    the border, as before). On a CT volume (e.g. 200×512×512 with a small organ) the distance transforms then run
    on the organ's box instead of the whole volume."""
    union = p | g
    box = []
    for axis in range(union.ndim):
        hit = np.flatnonzero(union.any(axis=tuple(j for j in range(union.ndim) if j != axis)))
        box.append(slice(max(int(hit[0]) - 1, 0), min(int(hit[-1]) + 2, union.shape[axis])))
    return p[tuple(box)], g[tuple(box)]


def hd95(pred: ArrayLike, gt: ArrayLike, spacing: float | tuple[float, ...] = 1.0,
         missing: float = float("nan")) -> float:
    """95th-percentile symmetric Hausdorff distance between two boolean masks (2D or 3D).

    pred, gt: boolean masks of equal shape (torch or numpy). ``spacing``: pixel size per axis (or one number).
    Distances are measured between mask surfaces with Euclidean distance transforms; the result is
    ``max(p95(d(S_pred -> S_gt)), p95(d(S_gt -> S_pred)))``, in the units of ``spacing``.

    Edge cases (explicit because they bias means, cf. MONAI #9095):
    - both masks empty -> NaN (nothing to measure; leave out of means like Dice).
    - exactly one mask empty (missed structure or false positive) -> ``missing``. The default NaN makes a missed
      structure *disappear* from a nan-mean, which flatters the model; pass a finite penalty (e.g. the image
      diagonal) to count it.
    """
    p = np.asarray(torch.as_tensor(pred).bool().cpu().numpy())
    g = np.asarray(torch.as_tensor(gt).bool().cpu().numpy())
    if p.shape != g.shape:
        raise ValueError(f"pred {p.shape} and gt {g.shape} must have the same shape")
    if not p.any() and not g.any():
        return float("nan")
    if not p.any() or not g.any():
        return float(missing)
    p, g = _crop_to_union(p, g)
    sp, sg = _surface(p), _surface(g)
    # distance of every pixel to the nearest surface pixel of the other mask
    dist_to_g = ndimage.distance_transform_edt(~sg, sampling=spacing)
    dist_to_p = ndimage.distance_transform_edt(~sp, sampling=spacing)
    return float(max(np.percentile(dist_to_g[sp], 95), np.percentile(dist_to_p[sg], 95)))
