"""SAM2 on tensors: several objects per video, box or mask prompts on any frames, propagation forward and
backward, with gradients.

    model = build_sam2_video_model("cpu_tiny", image_size=128)
    adapter = SAM2VideoAdapter(model)
    logits, aux = adapter.segment(video, prompts={"boxes": boxes}, prompt_frames=[0, 5], train=True)

``segment(video, prompts, prompt_frames, train=False) -> (logits, aux)``

- ``video``: T×3×H×W (or 1×T×3×H×W) float, already normalised with the ImageNet mean/std (``normalize`` does it
  for frames in [0, 1]); any H, W (frames are resized to the model's ``image_size``², as the package does).
- ``prompts``: exactly one of
  ``{"boxes": P×K×4}`` xyxy in pixels of the input frames (SAM2 encodes a box as two points with labels 2, 3), or
  ``{"masks": P×K×H×W}`` bool/float at the input resolution (ground-truth masks; an all-zero mask says "absent").
  Object k (0-based) is SAM2's object id k + 1 (for CardiacUDC: 1 LV, 2 LA, 3 RA, 4 RV).
- ``prompt_frames``: P distinct frame indices in [0, T) that carry the prompts (a sequence, a 1-D tensor or an int).
- ``train``: True runs with autograd (differentiable w.r.t. every parameter with ``requires_grad``); False runs
  under ``torch.no_grad()``. Dropout and SAM2's training-time memory rules follow ``adapter.train()/.eval()``.

Returns ``logits`` T×K×H×W (mask logits at the input resolution; > 0 = object) and ``aux``:
``multimask_logits`` list of T tensors K×M×H×W (M = 3 candidates on tracked frames, 1 on box frames; the chosen
mask is the candidate with the highest predicted IoU), ``ious`` list of T tensors K×M (predicted IoU),
``object_score_logits`` T×K (> 0 = object present), ``prompted`` T bool, ``mask_prompted`` T bool (frames whose
output is the given mask itself; ``SAM2Loss`` skips them).

Order of work (as the package's predictor with ``propagate_in_video`` forward, then reverse): every prompted frame
is segmented from its prompt alone (no memory) and encoded into a conditioning memory; then frames
``min(prompt_frames)+1 .. T-1`` are tracked forward and ``min(prompt_frames)-1 .. 0`` backward, each attending to
all conditioning memories, the ``num_maskmem - 1`` nearest tracked frames and the object pointers. Every frame is
computed once.

Why the adapter drives ``SAM2Base._track_step`` itself instead of the predictor's public methods: those run under
``torch.inference_mode()`` (no gradients; ``__wrapped__`` would get around it), take a video path only, loop over
objects one at a time, cache the image features of one frame (the backward pass re-encodes every frame), store
memories as bf16 and drop the multimask logits and IoUs the training loss needs. Here the T frames go through the
image encoder in chunks once, the K objects are the batch dimension of every step (as in the package's
``SAM2Train``), memories stay fp32, and a ground-truth mask is encoded into memory at full resolution
(``_encode_new_memory`` with the mask itself; the predictor's ``add_new_mask`` encodes its 1/4-resolution
logits). ``init_state_from_tensor`` builds the predictor's inference state from the same tensor for code that
wants the package's interactive API (clicks, ``propagate_in_video``) instead.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from core.errors import MedVidSegError
from models.backbones.timm_backbone import IMAGENET_MEAN, IMAGENET_STD

# SAM2's logits for a given mask (``_use_mask_as_output``): sigmoid(±10) ≈ 1 / 0
MASK_LOGIT_SCALE, MASK_LOGIT_BIAS = 20.0, -10.0


class PromptError(MedVidSegError, ValueError):
    """Prompts or frames the adapter cannot use; the message names the argument and what was expected."""


def normalize(video: torch.Tensor) -> torch.Tensor:
    """Frames in [0, 1] (…×3×H×W) -> ImageNet-normalised frames, what SAM2's image encoder was trained on."""
    mean = video.new_tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = video.new_tensor(IMAGENET_STD).view(3, 1, 1)
    return (video - mean) / std


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False,
                         antialias=x.shape[-2] > size[0] or x.shape[-1] > size[1])


class SAM2VideoAdapter(nn.Module):
    """Wraps a SAM2 video model (``build_sam2_video_model``); see the module docstring for ``segment``."""

    def __init__(self, model: nn.Module, frame_batch: int = 8, motion: dict | None = None):
        """model: a ``SAM2Base`` (normally the ``MotionAwareSAM2`` of ``build_sam2_video_model``).
        frame_batch: frames per image-encoder call (memory vs speed).
        motion: None, or ``SamuraiMotion`` settings (``kf_score_weight``, ``stable_frames``, ``stable_iou``, ...):
        SAMURAI's motion-aware mask choice, with fresh Kalman tracks for every object at the start of the forward
        and of the backward pass (needs a ``MotionAwareSAM2``). The memory selector is the model's
        (``model.memory_selector``)."""
        super().__init__()
        self.model = model
        self.frame_batch = frame_batch
        self.motion = dict(motion) if motion is not None else None
        #: SamuraiMotion's counts summed over every pass since the last reset (frames, stable, changed)
        self.motion_counts = {"frames": 0, "stable": 0, "changed": 0}
        if self.motion is not None and not hasattr(model, "motion"):
            raise PromptError(f"motion needs a MotionAwareSAM2 (build_sam2_video_model), got {type(model).__name__}")

    @property
    def image_size(self) -> int:
        return self.model.image_size

    # ---- inputs -------------------------------------------------------------------------------------------
    def _check(self, video: torch.Tensor, prompts: dict, prompt_frames: Sequence[int]) -> tuple:
        if video.dim() == 5:
            if video.shape[0] != 1:
                raise PromptError(f"video: SAM2VideoAdapter segments one video at a time (B=1), got batch "
                                  f"{video.shape[0]}")
            video = video[0]
        if video.dim() != 4 or video.shape[1] != 3:
            raise PromptError(f"video must be T×3×H×W (normalised frames), got shape {tuple(video.shape)}")
        t, _, h, w = video.shape
        if not isinstance(prompts, dict) or len(set(prompts) & {"boxes", "masks"}) != 1 or len(prompts) != 1:
            raise PromptError(f"prompts must be {{'boxes': P×K×4}} or {{'masks': P×K×H×W}}, got keys "
                              f"{sorted(prompts) if isinstance(prompts, dict) else type(prompts).__name__}")
        if torch.is_tensor(prompt_frames):
            prompt_frames = prompt_frames.reshape(-1).tolist()
        frames = [int(prompt_frames)] if isinstance(prompt_frames, int) else [int(f) for f in prompt_frames]
        if not frames or len(set(frames)) != len(frames):
            raise PromptError(f"prompt_frames must be distinct frame indices, got {frames}")
        bad = [f for f in frames if not 0 <= f < t]
        if bad:
            raise PromptError(f"prompt_frames {bad} outside the video (frames 0..{t - 1})")
        kind, value = next(iter(prompts.items()))
        want = (len(frames), None, 4) if kind == "boxes" else (len(frames), None, h, w)
        if value.dim() != len(want) or any(s is not None and s != v for s, v in zip(want, value.shape)):
            shape = "P×K×4" if kind == "boxes" else f"P×K×{h}×{w}"
            raise PromptError(f"prompts['{kind}'] must be {shape} with P = {len(frames)} prompt frames, got shape "
                              f"{tuple(value.shape)}")
        if kind == "boxes" and not torch.isfinite(value).all():
            raise PromptError("prompts['boxes'] holds non-finite values (give an absent object an empty mask "
                              "prompt instead of a box)")
        return video, kind, value, frames

    def _point_inputs(self, boxes: torch.Tensor, h: int, w: int) -> dict:
        """K×4 xyxy boxes in input pixels -> SAM2 point inputs: two corners with labels 2, 3 at image_size scale."""
        s = self.image_size
        scale = boxes.new_tensor([s / w, s / h])
        coords = boxes.float().view(-1, 2, 2) * scale  # K×2×2
        labels = torch.tensor([[2, 3]], dtype=torch.int32, device=boxes.device).expand(coords.shape[0], 2)
        return {"point_coords": coords, "point_labels": labels}

    # ---- image features -----------------------------------------------------------------------------------
    def _frame_features(self, frames: torch.Tensor) -> list[dict]:
        """T×3×S×S -> per frame the backbone output dict (batch 1) of ``forward_image``."""
        out = []
        for chunk in frames.split(self.frame_batch):
            bb = self.model.forward_image(chunk)
            for i in range(chunk.shape[0]):
                out.append({"backbone_fpn": [f[i:i + 1] for f in bb["backbone_fpn"]],
                            "vision_pos_enc": [p[i:i + 1] for p in bb["vision_pos_enc"]]})
        return out

    def _expanded(self, feats: dict, k: int) -> tuple[list, list, list]:
        """One frame's features expanded to the K objects: (vision_feats, vision_pos_embeds, feat_sizes), each
        level (HW)×K×C as ``_prepare_backbone_features`` returns them."""
        expanded = {key: [x.expand(k, -1, -1, -1) for x in feats[key]] for key in ("backbone_fpn", "vision_pos_enc")}
        _, vision_feats, vision_pos, sizes = self.model._prepare_backbone_features(expanded)
        return vision_feats, vision_pos, sizes

    # ---- one frame ------------------------------------------------------------------------------------------
    def _step(self, frame_idx: int, feats: tuple, output_dict: dict, num_frames: int, reverse: bool,
              point_inputs: dict | None = None, mask_inputs: torch.Tensor | None = None) -> tuple[dict, tuple]:
        """Segment one frame for all K objects and encode its memory. Returns (the frame's entry for
        ``output_dict``, SAM head outputs (low_res_multimasks, high_res_multimasks, ious, low_res_masks,
        high_res_masks, obj_ptr, object_score_logits))."""
        m = self.model
        vision_feats, vision_pos, sizes = feats
        is_cond = point_inputs is not None or mask_inputs is not None
        current_out, sam_outputs, _, _ = m._track_step(
            frame_idx, is_cond, vision_feats, vision_pos, sizes, point_inputs, mask_inputs, output_dict,
            num_frames, reverse, None)
        _, _, _, low_res, high_res, obj_ptr, obj_score = sam_outputs
        current_out.update(pred_masks=low_res, pred_masks_high_res=high_res, obj_ptr=obj_ptr,
                           object_score_logits=obj_score)
        if m.num_maskmem > 0:
            # a given mask is encoded at full resolution as its own logits (±10), not from 1/4-resolution logits
            mem_logits = high_res if mask_inputs is None else mask_inputs * MASK_LOGIT_SCALE + MASK_LOGIT_BIAS
            if mask_inputs is not None:
                obj_score = mask_inputs.flatten(1).gt(0.5).any(1, keepdim=True).float() * MASK_LOGIT_SCALE \
                    + MASK_LOGIT_BIAS
            current_out["maskmem_features"], current_out["maskmem_pos_enc"] = m._encode_new_memory(
                vision_feats, sizes, mem_logits, obj_score, is_mask_from_pts=point_inputs is not None)
        else:
            current_out["maskmem_features"] = current_out["maskmem_pos_enc"] = None
        return current_out, sam_outputs

    # ---- the video ------------------------------------------------------------------------------------------
    def segment(self, video: torch.Tensor, prompts: dict, prompt_frames: Sequence[int],
                train: bool = False) -> tuple[torch.Tensor, dict[str, Any]]:
        """See the module docstring: (logits T×K×H×W, aux)."""
        video, kind, value, frames = self._check(video, prompts, prompt_frames)
        with torch.set_grad_enabled(train):
            return self._segment(video, kind, value, frames)

    def _segment(self, video: torch.Tensor, kind: str, value: torch.Tensor,
                 frames: list[int]) -> tuple[torch.Tensor, dict]:
        t, _, h, w = video.shape
        k, s = value.shape[1], self.image_size
        device = next(self.model.parameters()).device
        video, value = video.to(device), value.to(device)
        per_frame = self._frame_features(_resize(video.float(), (s, s)))
        output_dict: dict = {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}
        results: dict[int, tuple] = {}  # frame -> (logits K×H×W, multimask K×M×H×W, ious K×M, object score K)

        def keep(i: int, sam_outputs: tuple, given: torch.Tensor | None = None) -> None:
            low_multi, _, ious, low, _, _, obj_score = sam_outputs
            logits = _resize(low, (h, w))[:, 0] if given is None else given
            results[i] = (logits, _resize(low_multi, (h, w)), ious, obj_score[:, 0])

        for p, i in sorted(enumerate(frames), key=lambda pi: pi[1]):
            feats = self._expanded(per_frame[i], k)
            if kind == "boxes":
                out, sam_outputs = self._step(i, feats, output_dict, t, False,
                                              point_inputs=self._point_inputs(value[p], h, w))
                keep(i, sam_outputs)
            else:
                mask = value[p].float().unsqueeze(1)  # K×1×H×W
                out, sam_outputs = self._step(i, feats, output_dict, t, False, mask_inputs=_resize(mask, (s, s)))
                keep(i, sam_outputs, given=mask[:, 0] * MASK_LOGIT_SCALE + MASK_LOGIT_BIAS)
            output_dict["cond_frame_outputs"][i] = out
        first = min(frames)
        for reverse, order in ((False, range(first + 1, t)), (True, range(first - 1, -1, -1))):
            if self.motion is not None:  # one Kalman track per object and per pass, in the direction of tracking
                from models.sam2.samurai import SamuraiMotion

                self.model.motion = SamuraiMotion(k, **self.motion)
            try:
                for i in order:
                    if i in output_dict["cond_frame_outputs"]:
                        continue
                    out, sam_outputs = self._step(i, self._expanded(per_frame[i], k), output_dict, t, reverse)
                    output_dict["non_cond_frame_outputs"][i] = out
                    keep(i, sam_outputs)
            finally:
                if self.motion is not None:
                    for key, v in self.model.motion.counts.items():
                        self.motion_counts[key] = self.motion_counts.get(key, 0) + v
                    self.model.motion = None
        logits = torch.stack([results[i][0] for i in range(t)])
        prompted = torch.zeros(t, dtype=torch.bool, device=device)
        prompted[frames] = True
        aux = {"multimask_logits": [results[i][1] for i in range(t)], "ious": [results[i][2] for i in range(t)],
               "object_score_logits": torch.stack([results[i][3] for i in range(t)]),
               "prompted": prompted, "mask_prompted": prompted & (kind == "masks")}
        return logits, aux


@torch.no_grad()
def init_state_from_tensor(predictor: nn.Module, video: torch.Tensor) -> dict:
    """The package predictor's inference state (``SAM2VideoPredictor.init_state``'s keys) for a normalised
    T×3×H×W clip, without its JPEG folder: frames resized to image_size², original H, W kept for box
    normalisation and output size. Use with ``add_new_points_or_box`` / ``add_new_mask`` / ``propagate_in_video``."""
    if video.dim() != 4 or video.shape[1] != 3:
        raise PromptError(f"video must be T×3×H×W (normalised frames), got shape {tuple(video.shape)}")
    device = next(predictor.parameters()).device
    s = predictor.image_size
    state: dict[str, Any] = {
        "images": _resize(video.float().to(device), (s, s)), "num_frames": video.shape[0],
        "offload_video_to_cpu": False, "offload_state_to_cpu": False,
        "video_height": video.shape[-2], "video_width": video.shape[-1],
        "device": device, "storage_device": device,
        "point_inputs_per_obj": {}, "mask_inputs_per_obj": {}, "cached_features": {}, "constants": {},
        "obj_id_to_idx": OrderedDict(), "obj_idx_to_id": OrderedDict(), "obj_ids": [],
        "output_dict_per_obj": {}, "temp_output_dict_per_obj": {}, "frames_tracked_per_obj": {},
    }
    predictor._get_image_feature(state, frame_idx=0, batch_size=1)  # warm-up, as init_state does
    return state
