"""BOX-SAM2 (seed 000: "Cardiac Video Segmentation == Box Prediction + Box-Promptable SAM2 Segmentation").

Two stages in one model: ``VideoBoxHead`` predicts, per frame, one box per class (the four chambers) and whether
the class is visible; SAM2 (``models/sam2``, the ``sam2`` package) segments every class from its box prompt, the
K classes being SAM2's objects 1..K, and propagates through its memory to frames that carry no prompt.

    model = dict(name="BoxSAM2", num_classes=4, sam2=dict(config="cpu_tiny", image_size=128),
                 boxes="predicted", prompt_frames="all", stage="joint", sam2_train="full")

Evaluation (``predict``):
- ``boxes``: "predicted" (the box head's) or "gt" (boxes of the ground-truth masks, on annotated frames only: the
  upper bound of the decomposition, what SAM2 gives when the boxes are right); ``box_jitter_px`` adds Gaussian
  noise of that many pixels to every coordinate (the robustness curve; a fixed generator per sample, so the
  noise is the same at every evaluation and on any number of processes).
- ``prompt_frames``: "all" (every frame that has a box: all frames with predicted boxes, the annotated ones with
  GT boxes), "reference" (only the scored frames, else the clip's centre, then SAM2 propagates forward and
  backward), or "every" (frames 0, k, 2k, ... with ``prompt_every`` = k, then propagation).
- Output ``probs`` B×T×K×H×W: SAM2's per-object sigmoids, divided by their sum where it exceeds 1 (so background
  = 1 − Σ stays ≥ 0 for the evaluator's argmax) and zeroed where the class is judged absent (the box head's
  presence < 0.5 on a box-prompted frame, SAM2's object score < 0 elsewhere); ``boxes`` B×T×K×4 (the prompts
  used, xyxy pixels; the box head's on every frame in "predicted" mode) and ``scores`` B×T×K (presence).

Training (``forward``): ``stage`` chooses what learns — "box_head" (L1 + GIoU + presence BCE; SAM2 is not run),
"sam2" (SAM2's published loss on box-prompted annotated frames; the box head is not run), "joint" (both, summed).
SAM2 is trained on GT boxes jittered by ``train_box_jitter_px`` (the two-stage recipe: stage 1 the box head,
stage 2 SAM2 on noisy GT boxes, ``init_from`` loading stage 1's checkpoint), and only on the annotated frames of a
clip: those are the only frames with a loss, and a box-prompted frame does not depend on the others, so the
unannotated frames are not computed. ``sam2_train``: "full", "frozen" or "lora" (peft adapters on the memory
attention and mask decoder projections, ``lora`` settings; only they train).
"""
from __future__ import annotations

from pathlib import Path

import torch

from core.errors import CheckpointError, ConfigError
from core.registry import MODELS
from models.base import MetaArch, check_choice
from models.heads.box_head import ABSENT_BOX, VideoBoxHead, boxes_from_masks, jitter_boxes
from models.sam2.build import build_sam2_video_model
from models.sam2.lora import add_lora
from models.sam2.loss import SAM2Loss
from models.sam2.video import SAM2VideoAdapter, normalize

BOX_MODES = ("predicted", "gt")
PROMPT_MODES = ("all", "reference", "every")
STAGES = ("joint", "box_head", "sam2")
SAM2_TRAIN = ("full", "frozen", "lora")



@MODELS.register()
class BoxSAM2(MetaArch):
    def __init__(self, num_classes: int = 4, box_head: dict | None = None, sam2: dict | None = None,
                 boxes: str = "predicted", box_jitter_px: float = 0.0, prompt_frames: str = "all",
                 prompt_every: int = 4, stage: str = "joint", sam2_train: str = "full",
                 train_box_jitter_px: float = 4.0, lora: dict | None = None, sam2_loss: dict | None = None,
                 box_weight: float = 1.0, sam2_weight: float = 1.0, presence_threshold: float = 0.5,
                 init_from: str | None = None):
        super().__init__()
        self.num_classes = num_classes
        self.boxes = check_choice("boxes", boxes, BOX_MODES)
        self.prompt_frames = check_choice("prompt_frames", prompt_frames, PROMPT_MODES)
        self.stage = check_choice("stage", stage, STAGES)
        self.sam2_train = check_choice("sam2_train", sam2_train, SAM2_TRAIN)
        if prompt_every < 1:
            raise ConfigError(f"model.prompt_every must be >= 1, got {prompt_every}")
        self.prompt_every, self.box_jitter_px = int(prompt_every), float(box_jitter_px)
        self.train_box_jitter_px, self.presence_threshold = float(train_box_jitter_px), float(presence_threshold)
        self.box_weight, self.sam2_weight = float(box_weight), float(sam2_weight)
        self.box_head = VideoBoxHead(num_classes=num_classes, **(box_head or {}))
        self.sam2 = SAM2VideoAdapter(build_sam2_video_model(**{"config": "cpu_tiny", "image_size": 128,
                                                               **(sam2 or {})}))
        self.sam2_criterion = SAM2Loss(**(sam2_loss or {}))
        if init_from:
            self._load_init(init_from)
        if self.sam2_train == "lora":
            add_lora(self.sam2.model, **{"target": "attention", "r": 8, "alpha": 16.0, **(lora or {})})
        elif lora:
            raise ConfigError(f"model.lora is set but model.sam2_train={sam2_train!r}; use sam2_train='lora'")
        if self.sam2_train == "frozen" or self.stage == "box_head":
            self.sam2.requires_grad_(False)
        if self.stage == "sam2":
            self.box_head.requires_grad_(False)
        sam2_frozen_part = self.sam2_train in ("frozen", "lora") or self.stage == "box_head"
        self.frozen_base_path = (sam2 or {}).get("checkpoint") if sam2_frozen_part else None

    @property
    def trains(self) -> bool:
        """False when nothing is left to train (e.g. a released SAM2 frozen, prompted with GT boxes): evaluate it
        with ``--trainer_mode eval --config_file C`` and no checkpoint."""
        return any(p.requires_grad for p in self.parameters())

    def _load_init(self, path: str) -> None:
        """Weights of an earlier BoxSAM2 run (a checkpoint's ``model``, e.g. stage 1 of the two-stage recipe)."""
        p = Path(path)
        if not p.is_file():
            raise CheckpointError(f"model.init_from: checkpoint not found: {p}")
        ckpt = torch.load(p, map_location="cpu", weights_only=False)
        state = ckpt.get("model", ckpt)
        missing, unexpected = self.load_state_dict(state, strict=False)
        if unexpected or len(missing) == len(self.state_dict()):
            raise CheckpointError(f"model.init_from {p}: not a BoxSAM2 checkpoint of this configuration "
                                  f"({len(missing)} missing, {len(unexpected)} unexpected keys, e.g. "
                                  f"{(unexpected or missing)[:3]})")

    # ------------------------------------------------------------------------------------------------ training
    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        video, masks, has_ann = batch["video"], batch["masks"], batch["has_ann"]  # B×T×3×H×W, B×T×K×H×W, B×T
        losses: dict[str, torch.Tensor] = {}
        if self.stage in ("joint", "box_head"):
            out = self.box_head(video)
            losses.update({k: self.box_weight * v for k, v in self.box_head.losses(out, masks, has_ann).items()})
        if self.stage in ("joint", "sam2"):
            losses.update(self._sam2_losses(video, masks, has_ann))
        return losses

    def _sam2_losses(self, video: torch.Tensor, masks: torch.Tensor, has_ann: torch.Tensor) -> dict:
        b, _, _, h, w = video.shape
        total: dict[str, torch.Tensor] = {}
        for i in range(b):  # one video at a time (SAM2's objects are its batch)
            frames = has_ann[i].nonzero()[:, 0]
            if len(frames) == 0:
                continue
            gt = masks[i, frames]  # F×K×H×W
            boxes, present = boxes_from_masks(gt)
            boxes = jitter_boxes(boxes, self.train_box_jitter_px, (h, w))  # global RNG: restored on resume
            boxes = torch.where(present[..., None], boxes, boxes.new_tensor(ABSENT_BOX))
            _, aux = self.sam2.segment(normalize(video[i, frames]), {"boxes": boxes}, list(range(len(frames))),
                                       train=True)
            for k, v in self.sam2_criterion(aux, gt).items():
                total[k] = total.get(k, 0) + v / b  # each clip weighs 1/B, as the other models' losses
        if not total:  # no annotated frame in the batch: zero losses that still reach every SAM2 parameter
            total = self.sam2_criterion.zeros(self.sam2.parameters(), video)
        return {f"{k}_sam2": self.sam2_weight * v for k, v in total.items()}

    # ------------------------------------------------------------------------------------------------ inference
    def _prompt_frames(self, t: int, available: torch.Tensor, scored: torch.Tensor | None) -> list[int]:
        """Frames of a clip that get box prompts, among ``available`` (T bool: frames that have a box)."""
        if self.prompt_frames == "all":
            chosen = available
        elif self.prompt_frames == "reference":
            chosen = torch.zeros_like(available)
            if scored is not None and scored.any():
                chosen |= scored
            else:
                chosen[t // 2] = True
            chosen &= available
        else:
            chosen = torch.zeros_like(available)
            chosen[:: self.prompt_every] = True
            chosen &= available
        frames = chosen.nonzero()[:, 0].tolist()
        if not frames:  # e.g. "reference" on a frame without a GT box: the nearest frame that has one
            have = available.nonzero()[:, 0]
            if len(have) == 0:
                return []
            frames = [int(have[(have - t // 2).abs().argmin()])]
        return frames

    @torch.no_grad()
    def predict(self, batch: dict) -> dict[str, torch.Tensor]:
        video = batch["video"]
        b, t, _, h, w = video.shape
        k = self.num_classes
        head = self.box_head(video)
        pred_boxes, presence = head["boxes"], head["presence"].sigmoid()  # B×T×K×4, B×T×K
        if self.boxes == "gt":
            if "masks" not in batch:
                raise ConfigError("model.boxes='gt' needs ground-truth masks in the batch (an evaluation sample)")
            boxes, gt_present = boxes_from_masks(batch["masks"])
            available = batch["has_ann"].bool()
            presence = gt_present.float()
        else:
            boxes, available = pred_boxes, torch.ones(b, t, dtype=torch.bool, device=video.device)
        probs = video.new_zeros(b, t, k, h, w)
        used = boxes.new_zeros(b, t, k, 4)
        for i in range(b):
            scored = batch["scored"][i].bool() if "scored" in batch else None
            frames = self._prompt_frames(t, available[i], scored)
            if not frames:
                continue
            bx = boxes[i, frames]
            if self.box_jitter_px > 0:
                seed = int(batch["meta"][i].get("sample_id", i)) if "meta" in batch else i
                bx = jitter_boxes(bx, self.box_jitter_px, (h, w), torch.Generator().manual_seed(seed))
            here = presence[i, frames] >= self.presence_threshold  # F×K
            bx = torch.where(here[..., None], bx, bx.new_tensor(ABSENT_BOX))
            logits, aux = self.sam2.segment(normalize(video[i]), {"boxes": bx}, frames)
            p = logits.sigmoid()  # T×K×H×W
            visible = (aux["object_score_logits"].to(p.device) > 0).float()  # T×K
            visible[frames] = here.float()
            p = p * visible[..., None, None]
            total = p.sum(1, keepdim=True)
            probs[i] = torch.where(total > 1, p / total.clamp(min=1e-6), p)
            used[i] = pred_boxes[i] if self.boxes == "predicted" else boxes[i]
            used[i, frames] = bx
        return {"probs": probs, "boxes": used, "scores": presence}
