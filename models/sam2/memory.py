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
scorer of another method (e.g. image similarity for in-context segmentation) can use them.
"""
from __future__ import annotations

import math

from core.errors import ConfigError
from core.registry import MEMORY_SELECTORS


class MemorySelector:
    """Base class: ``select(frame_idx, history, num_objects, num_slots) -> list of num_objects lists`` of frame
    indices taken from ``history``, nearest first, at most ``num_slots`` each."""

    def select(self, frame_idx: int, history: list[tuple[int, dict]], num_objects: int,
               num_slots: int) -> list[list[int]]:
        raise NotImplementedError


@MEMORY_SELECTORS.register()
class recent(MemorySelector):
    """The ``num_slots`` nearest tracked frames for every object (SAM2's rule within one direction)."""

    def select(self, frame_idx, history, num_objects, num_slots):
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

    def select(self, frame_idx, history, num_objects, num_slots):
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
