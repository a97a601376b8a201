"""Memory selectors: which past frames a SAM2-family tracker attends to (registry ``MEMORY_SELECTORS``).

SAM2 keeps the conditioning (prompted) frames and the ``num_maskmem - 1`` frames just before the current one.
A selector replaces the second part: from the frames already tracked in the current direction it chooses, per
object, up to ``num_slots`` memories. ``MotionAwareSAM2._prepare_memory_conditioned_features``
(``models/sam2/samurai.py``) places the chosen frames, nearest first, in the slots SAM2 would have filled with
frames t∓1, t∓2, ... (so the nearest chosen memory gets the temporal encoding of the previous frame, as
SAMURAI does), keeps the object pointers SAM2 would have used, and leaves unused slots empty.

    selector = build(MEMORY_SELECTORS, dict(name="samurai", iou_threshold=0.5))
    frames = selector.select(frame_idx, history, num_objects=4, num_slots=6)   # list of 4 lists of frame indices

``history``: the frames tracked in the current direction, nearest first, ``[(frame_idx, out), ...]``, stopping
at the first frame that is a conditioning frame or not tracked yet (so a backward pass never reads the forward
pass's frames). Each ``out`` holds per object (K rows): ``best_iou`` K (the predicted IoU of the chosen mask),
``object_score_logits`` K×1, ``kf_score`` K (IoU of the chosen mask's box with the Kalman prediction; NaN
before the track is stable or without a motion model), plus SAM2's own entries (``maskmem_features``, ...), so a
scorer of another method can use them: with a selector set, every frame also carries ``image_embed`` K×C (its
lowest-resolution image features averaged over positions), and a selector with ``uses_current`` receives the
current frame's (``current=`` K×C).

Selectors (``select(..., current=None)``): ``recent`` (SAM2), ``samurai`` (SAMURAI's thresholds), and for in-context
segmentation (seed 001) ``score`` (predicted IoU, object score, mask confidence and recency, weighted), ``similarity``
(cosine similarity of image embeddings to the current frame) and ``oracle`` (Dice of each memory's mask against the
ground truth: an upper bound a model cannot reach at test time; the model hands it the targets). Every selector
counts how often its choice differs from SAM2's nearest frames (``counts``).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from core.errors import ConfigError
from core.registry import MEMORY_SELECTORS


class MemorySelector:
    """Base class: ``select(frame_idx, history, num_objects, num_slots) -> list of num_objects lists`` of frame
    indices taken from ``history``, nearest first, at most ``num_slots`` each. A selector with ``uses_current``
    also gets ``current=`` (the current frame's image embedding, K×C)."""

    uses_current: bool = False

    def select(self, frame_idx: int, history: list[tuple[int, dict]], num_objects: int,
               num_slots: int, current: torch.Tensor | None = None) -> list[list[int]]:
        raise NotImplementedError


@MEMORY_SELECTORS.register()
class recent(MemorySelector):
    """The ``num_slots`` nearest tracked frames for every object (SAM2's rule within one direction)."""

    def select(self, frame_idx, history, num_objects, num_slots, current=None):
        frames = [f for f, _ in history[:num_slots]]
        return [list(frames) for _ in range(num_objects)]


def _value(out: dict, key: str, k: int) -> float:
    v = out.get(key)
    if v is None:
        return math.nan
    return float(v.reshape(-1)[k])


@MEMORY_SELECTORS.register()
class samurai(MemorySelector):
    """SAMURAI's motion-aware memory (arXiv 2411.11922; REFERENCE §5.3): walking back from the previous frame,
    keep frames whose chosen mask has predicted IoU > ``iou_threshold``, object score logit >
    ``obj_score_threshold`` and, once the Kalman track is stable, a motion score (``kf_score``) >
    ``kf_score_threshold``; the previous frame is always kept; the ``num_slots`` nearest kept frames become the
    memories. ``max_look_back``: frames examined (the issue's 15; SAMURAI's code walks back until it has 15
    valid frames, which ``None`` reproduces — only the nearest ``num_slots`` are used either way). SAMURAI's
    code never examines frames 0-1 and fails on a conditioning frame inside the look-back; here the history
    ends at the prompt, in either direction."""

    def __init__(self, iou_threshold: float = 0.5, obj_score_threshold: float = 0.0,
                 kf_score_threshold: float = 0.0, max_look_back: int | None = 15, keep_previous: bool = True):
        if max_look_back is not None and max_look_back < 1:
            raise ConfigError(f"memory_selector.max_look_back must be >= 1 or None, got {max_look_back}")
        self.iou_threshold, self.obj_score_threshold = float(iou_threshold), float(obj_score_threshold)
        self.kf_score_threshold, self.max_look_back = float(kf_score_threshold), max_look_back
        self.keep_previous = bool(keep_previous)
        #: object-frames examined / failing the tests, and choices that differ from SAM2's nearest frames
        self.counts = {"examined": 0, "rejected": 0, "choices": 0, "differs": 0}

    def valid(self, out: dict, k: int) -> bool:
        """Whether object ``k`` of a tracked frame passes the three tests (a NaN motion score passes)."""
        kf = _value(out, "kf_score", k)
        return (_value(out, "best_iou", k) > self.iou_threshold
                and _value(out, "object_score_logits", k) > self.obj_score_threshold
                and (math.isnan(kf) or kf > self.kf_score_threshold))

    def select(self, frame_idx, history, num_objects, num_slots, current=None):
        window = history if self.max_look_back is None else history[: self.max_look_back]
        chosen = []
        for k in range(num_objects):
            keep = [f for f, out in window if self.valid(out, k)]
            self.counts["examined"] += len(window)
            self.counts["rejected"] += len(window) - len(keep)
            if self.max_look_back is None:
                keep = keep[:15]
            if self.keep_previous and window and window[0][0] not in keep:
                keep = [window[0][0]] + keep  # the previous frame always (SAMURAI appends it last = nearest)
            chosen.append(keep[:num_slots])
            self.counts["choices"] += 1
            self.counts["differs"] += int(chosen[-1] != [f for f, _ in history[:num_slots]])
        return chosen


def mask_confidence(out: dict, k: int) -> float:
    """How decided object ``k``'s predicted mask is: the mean of 2p − 1 over its foreground pixels (p = sigmoid of
    SAM2's low-resolution mask logits, foreground p > 0.5), 0 for an empty mask. Ours: seed 001 names "mask
    confidence" without a formula."""
    logits = out.get("pred_masks")
    if logits is None:
        return 0.0
    p = logits[k].detach().float().sigmoid()
    fg = p > 0.5
    return float((2 * p[fg] - 1).mean()) if bool(fg.any()) else 0.0


class _Scored(MemorySelector):
    """Top-``num_slots`` frames of the history (within ``max_look_back`` frames, None = all) by a per-frame score,
    returned nearest first; ties go to the nearer frame. Subclasses define ``score(history, k, current)``."""

    def __init__(self, max_look_back: int | None = None):
        if max_look_back is not None and max_look_back < 1:
            raise ConfigError(f"memory_selector.max_look_back must be >= 1 or None, got {max_look_back}")
        self.max_look_back = max_look_back
        self.counts = {"choices": 0, "differs": 0}

    def score(self, window: list[tuple[int, dict]], k: int, current: torch.Tensor | None) -> list[float]:
        raise NotImplementedError

    def select(self, frame_idx, history, num_objects, num_slots, current=None):
        window = history if self.max_look_back is None else history[: self.max_look_back]
        nearest = [f for f, _ in history[:num_slots]]
        chosen = []
        for k in range(num_objects):
            scores = self.score(window, k, current)
            order = sorted(range(len(window)), key=lambda d: (-scores[d], d))[:num_slots]
            chosen.append([window[d][0] for d in sorted(order)])
            self.counts["choices"] += 1
            self.counts["differs"] += int(chosen[-1] != nearest)
        return chosen


def _recency(d: int, tau: float) -> float:
    """exp(−d / tau) for the frame d + 1 steps back (the previous frame scores 1)."""
    return math.exp(-d / tau)


@MEMORY_SELECTORS.register()
class score(_Scored):
    """Seed 001's memory scorer (branch 3, "mask confidence, IoU and recency"; no public code, so the formula is
    ours): per object, each tracked frame scores the weighted mean of its predicted IoU (``best_iou``), its object
    presence probability (sigmoid of the object score logit), its mask confidence (:func:`mask_confidence`) and
    its recency exp(−d / ``recency_tau``) (d = 0 for the previous frame); the ``num_slots`` best frames are the
    memories. A weight of 0 drops a term; recency alone reproduces ``recent``."""

    def __init__(self, iou_weight: float = 1.0, object_weight: float = 1.0, confidence_weight: float = 1.0,
                 recency_weight: float = 1.0, recency_tau: float = 4.0, max_look_back: int | None = None):
        super().__init__(max_look_back)
        weights = dict(iou_weight=iou_weight, object_weight=object_weight, confidence_weight=confidence_weight,
                       recency_weight=recency_weight)
        bad = {k: v for k, v in weights.items() if not v >= 0}
        if bad or sum(weights.values()) <= 0:
            raise ConfigError(f"memory_selector weights must be >= 0 and not all 0, got {weights}")
        if not recency_tau > 0:
            raise ConfigError(f"memory_selector.recency_tau must be > 0, got {recency_tau}")
        self.weights = {k: float(v) for k, v in weights.items()}
        self.tau = float(recency_tau)

    def terms(self, d: int, out: dict, k: int) -> dict[str, float]:
        """The four terms of frame ``d + 1`` steps back, each in [0, 1]."""
        iou = _value(out, "best_iou", k)
        obj = _value(out, "object_score_logits", k)
        return {"iou_weight": 0.0 if math.isnan(iou) else min(max(iou, 0.0), 1.0),
                "object_weight": 0.0 if math.isnan(obj) else 1 / (1 + math.exp(-obj)),
                "confidence_weight": mask_confidence(out, k), "recency_weight": _recency(d, self.tau)}

    def score(self, window, k, current):
        total = sum(self.weights.values())
        return [sum(self.weights[n] * v for n, v in self.terms(d, out, k).items()) / total
                for d, (_, out) in enumerate(window)]


@MEMORY_SELECTORS.register()
class similarity(_Scored):
    """Frames whose image looks most like the current one: cosine similarity of ``image_embed`` (the averaged
    lowest-resolution image features) to the current frame's, plus ``recency_weight`` · exp(−d / ``recency_tau``)
    (0: similarity alone). Medical-SAM2's memory bank reads by the same kind of similarity (REFERENCE §5.3b)."""

    uses_current = True

    def __init__(self, recency_weight: float = 0.0, recency_tau: float = 4.0, max_look_back: int | None = None):
        super().__init__(max_look_back)
        if not recency_weight >= 0 or not recency_tau > 0:
            raise ConfigError(f"memory_selector: recency_weight must be >= 0 and recency_tau > 0, got "
                              f"{recency_weight}, {recency_tau}")
        self.recency_weight, self.tau = float(recency_weight), float(recency_tau)

    def score(self, window, k, current):
        if current is None:
            raise ValueError("the similarity memory selector needs the current frame's embedding (current=)")
        out = []
        for d, (_, o) in enumerate(window):
            emb = o.get("image_embed")
            if emb is None:
                raise ValueError("the similarity memory selector needs 'image_embed' in every tracked frame's output "
                                 "(MotionAwareSAM2 stores it while a selector is set)")
            sim = float(F.cosine_similarity(emb[k].float(), current[k].float(), dim=0))
            out.append(sim + self.recency_weight * _recency(d, self.tau))
        return out


@MEMORY_SELECTORS.register()
class oracle(_Scored):
    """Upper bound: frames whose predicted mask agrees best with the ground truth (Dice of the chosen mask at
    ``image_size``, an empty prediction of an absent object scoring 1), ties to the nearer frame. Not a method —
    it reads the targets, which the model sets before each video (``targets``: frames × K × H × W bool, indexed by
    the tracker's frame index) and clears after."""

    def __init__(self, max_look_back: int | None = None):
        super().__init__(max_look_back)
        self.targets: torch.Tensor | None = None

    def score(self, window, k, current):
        if self.targets is None:
            raise ValueError("the oracle memory selector has no targets: the model must set selector.targets "
                             "(only models that have the ground truth at evaluation can use it)")
        out = []
        for f, o in window:
            pred = o["pred_masks_high_res"][k, 0].detach() > 0
            gt = self.targets[f, k].float()[None, None]
            gt = F.interpolate(gt, size=pred.shape, mode="nearest")[0, 0] > 0.5 if gt.shape[-2:] != pred.shape else \
                gt[0, 0] > 0.5
            inter, total = float((pred & gt).sum()), float(pred.sum() + gt.sum())
            out.append(1.0 if total == 0 else 2 * inter / total)
        return out
