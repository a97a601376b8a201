"""SAMURAI (Yang et al., arXiv 2411.11922; yangchris11/samurai @ 76ba195) on our SAM2: a Kalman motion model that
re-scores SAM2's candidate masks, and a memory selector that chooses which past frames enter memory — as a
subclass of the package's ``SAM2VideoPredictor`` (the ``sam2`` package itself is unchanged).

``MotionAwareSAM2`` behaves exactly like ``SAM2VideoPredictor`` until it is given a motion model
(``model.motion = SamuraiMotion(...)``) and/or a memory selector (``model.memory_selector``, see
``models/sam2/memory.py``); ``build_sam2_video_model`` builds it for every config (the state dict is the
package's, so any SAM2 checkpoint loads).

Motion-aware mask choice (``SamuraiMotion``, one Kalman track per object and per pass, ``models/sam2/kalman.py``):
on every tracked frame SAM2 proposes M = 3 masks with predicted IoUs. Until a track has ``stable_frames`` (15)
stable frames, the mask with the highest predicted IoU is taken; its box updates the Kalman filter when its
predicted IoU exceeds ``stable_iou`` (0.3), otherwise the stable count resets (and the next frame re-initialises the
track; an empty mask, an object lost, neither starts nor updates a track). Once stable, the mask maximising
``α·IoU(Kalman box, mask box) + (1 − α)·predicted IoU`` is taken (α = ``kf_score_weight``: 0.15 in SAMURAI's code
and its ``l`` config, 0.25 in its t/s/b+ configs), the filter is updated with its box, and a predicted IoU below
``stable_iou`` resets the count. Boxes are those of the candidate masks' logits > 0 at ``image_size``. The motion
score of the chosen mask (``kf_score``, NaN before the track is stable) and its predicted IoU (``best_iou``) are
stored with the frame for the memory selector. Where SAMURAI keeps one filter on the model for batch item 0 and
never resets it (one object, one video, forward only), here every object has its own track, reset at every new pass:
``SAM2VideoAdapter`` starts a fresh set for the forward pass from the prompt and another for the backward pass, so
the constant velocity model runs in the direction of tracking.

Why a forward hook on the mask decoder instead of re-implementing ``_forward_sam_heads``: SAM2's method picks
the mask (and the object pointer's token) by ``argmax`` of the decoder's IoU output; the hook hands it the
motion-aware scores instead, so the package's own code makes the choice, and the override puts the predicted
IoUs back into the returned tuple (the loss and the memory rules use them).
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from core.errors import ConfigError
from models.heads.box_head import boxes_from_masks
from models.sam2.build import import_sam2
from models.sam2.kalman import BoxKalmanFilter, BoxTrack, box_iou

import_sam2()  # imports the package without leaving its global Hydra initialisation behind (see build.py)
from sam2.sam2_video_predictor import SAM2VideoPredictor  # noqa: E402


def mask_boxes(logits: torch.Tensor) -> torch.Tensor:
    """…×H×W logits -> …×4 boxes (x0, y0, x1, y1) of the pixels > 0 (inclusive pixel indices, as SAMURAI);
    an empty mask gives (0, 0, 0, 0)."""
    boxes, present = boxes_from_masks(logits > 0)  # x1, y1 one past the last pixel
    return boxes - boxes.new_tensor([0.0, 0.0, 1.0, 1.0]) * present[..., None]


class SamuraiMotion:
    """Per-object Kalman tracks and SAMURAI's mask choice for one pass over a video (see the module docstring).

    ``choose(multimask_logits K×M×S×S, ious K×M) -> (scores K×M to argmax over, kf_score K)`` is called on every
    tracked frame (multimask output); it advances every track by one frame."""

    def __init__(self, num_objects: int, kf_score_weight: float = 0.15, stable_frames: int = 15,
                 stable_iou: float = 0.3, std_weight_position: float = 1 / 20, std_weight_velocity: float = 1 / 160):
        if not 0.0 <= kf_score_weight <= 1.0:
            raise ConfigError(f"motion.kf_score_weight must be in [0, 1], got {kf_score_weight}")
        if stable_frames < 1:
            raise ConfigError(f"motion.stable_frames must be >= 1, got {stable_frames}")
        self.alpha, self.stable_needed, self.stable_iou = float(kf_score_weight), int(stable_frames), float(stable_iou)
        self.tracks = [BoxTrack(BoxKalmanFilter(std_weight_position, std_weight_velocity)) for _ in range(num_objects)]
        self.stable = [0] * num_objects
        self.num_objects = num_objects
        #: object-frames seen, scored with a stable track, and where the motion term changed SAM2's choice
        self.counts = {"frames": 0, "stable": 0, "changed": 0}

    def reset(self) -> None:
        for tr in self.tracks:
            tr.reset()
        self.stable = [0] * self.num_objects

    @torch.no_grad()
    def choose(self, multimask_logits: torch.Tensor, ious: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k, m = ious.shape
        if k != self.num_objects:
            raise ValueError(f"SamuraiMotion was made for {self.num_objects} objects, got {k}")
        boxes = mask_boxes(multimask_logits).double().cpu().numpy()  # K×M×4
        pred = ious.detach().double().cpu()
        scores = ious.detach().clone()
        kf_score = torch.full((k,), math.nan, dtype=ious.dtype, device=ious.device)
        self.counts["frames"] += k
        for i in range(k):
            tr = self.tracks[i]
            if not tr.initialized or self.stable[i] == 0:
                best = int(ious[i].argmax())  # the argmax SAM2 itself takes on these scores
                if _has_area(boxes[i, best]):  # an empty mask (object lost) starts no track: try the next frame
                    tr.initiate(boxes[i, best])
                    self.stable[i] += 1
            elif self.stable[i] < self.stable_needed:
                tr.predict()
                best = int(ious[i].argmax())
                if pred[i, best] > self.stable_iou and _has_area(boxes[i, best]):
                    tr.update(boxes[i, best])
                    self.stable[i] += 1
                else:
                    self.stable[i] = 0
            else:
                tr.predict()
                kf_iou = torch.as_tensor(box_iou(tr.predicted_box(), boxes[i]), dtype=torch.float64)
                weighted = self.alpha * kf_iou + (1 - self.alpha) * pred[i]
                best = int(weighted.argmax())
                self.counts["stable"] += 1
                self.counts["changed"] += int(best != int(ious[i].argmax()))
                scores[i] = weighted.to(scores.dtype).to(scores.device)
                kf_score[i] = float(kf_iou[best])
                if pred[i, best] < self.stable_iou or not _has_area(boxes[i, best]):
                    self.stable[i] = 0
                else:
                    tr.update(boxes[i, best])
        return scores, kf_score


def image_embedding(vision_feats: list[torch.Tensor]) -> torch.Tensor:
    """K×C: the frame's lowest-resolution image features (the level memory attention conditions), averaged over
    positions; what the ``similarity`` memory selector compares frames by."""
    return vision_feats[-1].detach().mean(0)


def _has_area(box) -> bool:
    """A box the Kalman filter can start from or be updated with: positive width and height (SAMURAI initialises
    from a (0, 0, 0, 0) box when the mask is empty, whose zero covariance makes the next update singular)."""
    return bool(box[2] > box[0] and box[3] > box[1])


class MotionAwareSAM2(SAM2VideoPredictor):
    """``SAM2VideoPredictor`` with an optional motion model (``motion``: a ``SamuraiMotion`` or None) and memory
    selector (``memory_selector``: a ``models.sam2.memory.MemorySelector`` or None). With both None it is the
    package's model, bit for bit. Every frame's output also carries ``best_iou`` (K, predicted IoU of the chosen
    mask) and ``kf_score`` (K, NaN without a stable motion track), and, while a selector is set, ``image_embed``
    (K×C, :func:`image_embedding`; a selector with ``uses_current`` is also given the current frame's)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.motion: SamuraiMotion | None = None
        self.memory_selector = None
        self._choice: dict | None = None
        self._pending_kf: torch.Tensor | None = None

    # ---- mask choice ----------------------------------------------------------------------------------------
    def _rescore_hook(self, module, inputs, output):
        low_res_multimasks, ious, tokens, object_score_logits = output
        self._raw_ious = ious
        if self.pred_obj_scores:
            low_res_multimasks = torch.where(object_score_logits[:, :, None, None] > 0, low_res_multimasks, -1024.0)
        high = F.interpolate(low_res_multimasks.float(), size=(self.image_size, self.image_size), mode="bilinear",
                             align_corners=False)
        scores, self._pending_kf = self.motion.choose(high, ious)
        return output[0], scores, tokens, object_score_logits

    def _forward_sam_heads(self, backbone_features, point_inputs=None, mask_inputs=None, high_res_features=None,
                           multimask_output=False):
        use_motion = self.motion is not None and multimask_output
        self._raw_ious, self._pending_kf = None, None
        handle = self.sam_mask_decoder.register_forward_hook(self._rescore_hook) if use_motion else None
        try:
            out = super()._forward_sam_heads(backbone_features, point_inputs, mask_inputs, high_res_features,
                                             multimask_output)
        finally:
            if handle is not None:
                handle.remove()
        low_multi, high_multi, ious, low, high, obj_ptr, obj_score = out
        if use_motion:
            scores, ious = ious, self._raw_ious
            best = scores.argmax(-1)
        else:
            best = ious.argmax(-1) if multimask_output else torch.zeros(ious.shape[0], dtype=torch.long,
                                                                         device=ious.device)
        kf = self._pending_kf if use_motion else torch.full((ious.shape[0],), math.nan, device=ious.device)
        self._choice = {"best_iou": ious.gather(1, best[:, None])[:, 0].detach(), "kf_score": kf}
        return low_multi, high_multi, ious, low, high, obj_ptr, obj_score

    def _track_step(self, *args: Any, **kwargs: Any):
        self._choice = None
        result = super()._track_step(*args, **kwargs)
        if self._choice is not None:
            result[0].update(self._choice)
        if self.memory_selector is not None:  # what a similarity selector compares (memory.py: image_embed)
            feats = args[2] if len(args) > 2 else kwargs["current_vision_feats"]
            result[0]["image_embed"] = image_embedding(feats)
        return result

    # ---- memory choice --------------------------------------------------------------------------------------
    def _history(self, frame_idx: int, output_dict: dict, num_frames: int, reverse: bool) -> list[tuple[int, dict]]:
        """Frames tracked in this direction before ``frame_idx``, nearest first, up to the first conditioning or
        untracked frame."""
        step = 1 if reverse else -1
        out, f = [], frame_idx + step
        non_cond, cond = output_dict["non_cond_frame_outputs"], output_dict["cond_frame_outputs"]
        while 0 <= f < num_frames and f in non_cond and f not in cond:
            out.append((f, non_cond[f]))
            f += step
        return out

    def _prepare_memory_conditioned_features(self, frame_idx, is_init_cond_frame, current_vision_feats,
                                             current_vision_pos_embeds, feat_sizes, output_dict, num_frames,
                                             track_in_reverse=False):
        if self.memory_selector is None or is_init_cond_frame or self.num_maskmem == 0:
            return super()._prepare_memory_conditioned_features(
                frame_idx, is_init_cond_frame, current_vision_feats, current_vision_pos_embeds, feat_sizes,
                output_dict, num_frames, track_in_reverse)
        stride = 1 if self.training else self.memory_temporal_stride_for_eval
        if stride != 1:
            raise ConfigError(f"a memory selector needs memory_temporal_stride_for_eval 1, got {stride}")
        k = current_vision_feats[-1].size(1)
        slots = self.num_maskmem - 1
        history = self._history(frame_idx, output_dict, num_frames, track_in_reverse)
        extra = {"current": image_embedding(current_vision_feats)} if getattr(self.memory_selector, "uses_current",
                                                                             False) else {}
        chosen = self.memory_selector.select(frame_idx, history, k, slots, **extra)
        by_frame = dict(history)
        groups: dict[tuple[int, ...], list[int]] = {}
        for obj, frames in enumerate(chosen):
            bad = [f for f in frames if f not in by_frame]
            if bad or len(frames) > slots:
                raise ValueError(f"{type(self.memory_selector).__name__} chose frames {frames} for object {obj}; "
                                 f"allowed: at most {slots} of {[f for f, _ in history]}")
            groups.setdefault(tuple(frames), []).append(obj)
        step = 1 if track_in_reverse else -1
        if len(groups) == 1:  # every object chose the same frames: no per-object copies of the memories
            groups = {frames: slice(None) for frames in groups}
        pieces = []
        for frames, objs in groups.items():
            view = self._memory_view(frame_idx, output_dict, list(frames), objs, step, num_frames)
            pix = super()._prepare_memory_conditioned_features(
                frame_idx, False, [x[:, objs] for x in current_vision_feats],
                [x[:, objs] for x in current_vision_pos_embeds], feat_sizes, view, num_frames, track_in_reverse)
            pieces.append((objs, pix))
        if len(pieces) == 1:
            return pieces[0][1]
        first = pieces[0][1]
        out = first.new_empty(k, *first.shape[1:])
        for objs, pix in pieces:
            out[objs] = pix
        return out

    def _memory_view(self, frame_idx: int, output_dict: dict, frames: list[int], objs: list[int] | slice, step: int,
                     num_frames: int) -> dict:
        """``output_dict`` restricted to objects ``objs`` (a list, or ``slice(None)`` for all), where the slots
        SAM2 reads for frame t∓r (r = 1 .. num_maskmem − 1) hold the memory of ``frames[r − 1]`` (or nothing),
        every frame keeping its own object pointer (SAM2 reads those from the same dict, up to
        ``max_obj_ptrs_in_encoder`` frames back). The history a selector chooses from ends at the nearest
        prompt, so with prompts on several frames fewer memories may be chosen than SAM2's slots hold (SAM2
        reads across a prompt, a selector does not)."""
        def part(out: dict, mem_from: dict | None = None) -> dict:
            src = out if mem_from is None else mem_from
            feats = src["maskmem_features"][objs]
            pos = [p[objs] for p in src["maskmem_pos_enc"]]
            return {"maskmem_features": feats, "maskmem_pos_enc": pos, "obj_ptr": out["obj_ptr"][objs]}

        def empty(entry: dict) -> dict:  # zero memory tokens: the slot adds nothing to the attention
            return {**entry, "maskmem_features": entry["maskmem_features"][..., :0, :],
                    "maskmem_pos_enc": [p[..., :0, :] for p in entry["maskmem_pos_enc"]]}

        non_cond = output_dict["non_cond_frame_outputs"]
        reach = self.max_obj_ptrs_in_encoder
        view_non = {f: part(o) for f, o in non_cond.items() if abs(f - frame_idx) < reach}
        for r in range(1, self.num_maskmem):
            pos = frame_idx + step * r
            if pos not in view_non:
                continue
            view_non[pos] = part(non_cond[pos], non_cond[frames[r - 1]]) if r <= len(frames) else empty(view_non[pos])
        return {"cond_frame_outputs": {f: part(o) for f, o in output_dict["cond_frame_outputs"].items()},
                "non_cond_frame_outputs": view_non}
