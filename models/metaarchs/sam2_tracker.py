"""Promptable video trackers on our SAM2 adapter: ``SAM2`` (the package's model) and ``SAMURAI`` (seed 003: SAM2
plus a Kalman motion model that re-scores the candidate masks and a motion-aware memory selector; see
``models/sam2/samurai.py`` and ``models/sam2/memory.py``). Same parameters and state dict: a checkpoint trained
as one evaluates as the other.

    model = dict(name="SAMURAI", num_classes=4, sam2=dict(config="cpu_tiny", image_size=128, checkpoint=None),
                 prompt="mask", prompt_frame="first", motion=dict(kf_score_weight=0.15),
                 memory_selector=dict(name="samurai"), sam2_train="lora", lora=dict(target="samurai"))

Evaluation (``predict``, the semi-automatic protocol of video object segmentation): every class of a video is
prompted once, on one annotated frame (``prompt_frame``: "first" annotated frame, "ed" = the meta's end-diastolic
frame when the video has it, "middle" annotated frame, or an integer k = the k-th annotated frame), by its
ground-truth mask (``prompt="mask"``) or box (``"box"``; ``box_jitter_px`` adds seeded noise); SAM2 tracks it
forwards to the end and backwards to frame 0. The prompted frame leaves the scoring (the output's ``scored``), so
every scored frame is a tracked one. ``probs`` B×T×K×H×W: per-object sigmoids zeroed where SAM2's object score
is < 0, divided by their sum where it exceeds 1. A class absent on the prompt frame gets an empty mask prompt.
The stateful video API (``init_video`` / ``add_prompts`` / ``propagate``, ``models/base.py``) takes prompts from
the caller instead (masks or boxes on any frames), for interactive use and tools; the evaluation uses it only for
batches that carry ``prompts``. Use it with the whole-video protocol
(``evaluate=[dict(..., per_video=True, mapper=dict(name="VideoEvalMapper"))]``): an 11-frame test clip has a
single annotated frame, the one that would be prompted.

Training (``forward``, SAM2 itself; the motion model and the memory selector are inference rules, so SAM2 and
SAMURAI train identically): per clip, one annotated frame (chosen at random) is prompted by the training prompt
(``train_prompt``: "mask", "box" with ``train_box_jitter_px`` noise, or "mixed": either, at random, as SAM2's
own training mixes prompt types) and the clip is tracked with gradients;
SAM2's published loss (``models/sam2/loss.py``) is taken on the other annotated frames (and on a box-prompted
frame). Clips need two annotated frames: the ``annotated_pair`` frame sampler gives them. ``sam2_train``:
"full", "frozen" (nothing trains: zero-shot evaluation without a checkpoint), "lora" (peft adapters, ``lora``:
``target`` a preset of ``models/sam2/lora.py`` — "samurai" is seed 003's — ``r``, ``alpha``, ``dropout``;
adapters-only checkpoints with ``train.checkpoint.state="trainable"``), "decoder" (mask decoder and memory
modules train, image encoder frozen).
"""
from __future__ import annotations

import torch

from core.errors import ConfigError
from core.registry import MEMORY_SELECTORS, MODELS, build
from models.base import MetaArch, check_choice
from models.heads.box_head import ABSENT_BOX, boxes_from_masks, jitter_boxes
from models.sam2 import memory  # noqa: F401  (registers the memory selectors)
from models.sam2.build import build_sam2_video_model
from models.sam2.lora import SAMURAI_LORA, add_lora
from models.sam2.loss import SAM2Loss
from models.sam2.video import SAM2VideoAdapter, normalize

PROMPTS = ("mask", "box")
TRAIN_PROMPTS = ("mask", "box", "mixed")
PROMPT_FRAMES = ("first", "ed", "middle")
SAM2_TRAIN = ("full", "frozen", "lora", "decoder")
ENCODER_PREFIXES = ("image_encoder.",)
SAMURAI_MOTION = {"kf_score_weight": 0.15, "stable_frames": 15, "stable_iou": 0.3}



class SAM2Family(MetaArch):
    """What the SAM2-based meta-architectures share: the package's model on our adapter, an optional memory
    selector and motion model, SAM2's loss, and which parameters train (``sam2_train``: full / frozen / lora /
    decoder)."""

    #: SAM2's per-frame Python control flow defeats fvcore's tracer (it fails after minutes): the FLOP count goes
    #: straight to torch's dispatch-level counter (``models/complexity.py``), which gave these models' numbers anyway
    fvcore_traceable = False

    def _init_sam2(self, sam2: dict | None, sam2_train: str, lora: dict | None, sam2_loss: dict | None,
                   motion: dict | None, selector: dict | None, frame_batch: int) -> None:
        self.sam2_train = check_choice("sam2_train", sam2_train, SAM2_TRAIN)
        net = build_sam2_video_model(**{"config": "cpu_tiny", "image_size": 128, **(sam2 or {})})
        net.memory_selector = None if not selector else build(MEMORY_SELECTORS, dict(selector),
                                                              key="model.memory_selector")
        self.sam2 = SAM2VideoAdapter(net, frame_batch=frame_batch, motion=dict(motion) if motion else None)
        self.sam2_criterion = SAM2Loss(**(sam2_loss or {}))
        if self.sam2_train == "lora":
            add_lora(net, **{**SAMURAI_LORA, **(lora or {})})
        elif lora:
            raise ConfigError(f"model.lora is set but model.sam2_train={sam2_train!r}; use sam2_train='lora'")
        if self.sam2_train == "frozen":
            net.requires_grad_(False)
        elif self.sam2_train == "decoder":
            for n, p in net.named_parameters():
                p.requires_grad_(not n.startswith(ENCODER_PREFIXES))
        self.frozen_base_path = (sam2 or {}).get("checkpoint") if self.sam2_train != "full" else None

    @property
    def trains(self) -> bool:
        return any(p.requires_grad for p in self.parameters())

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        """Training with SAM2's own rules: the motion model and the memory selector are inference rules."""
        net, motion = self.sam2.model, self.sam2.motion
        selector, net.memory_selector, self.sam2.motion = net.memory_selector, None, None
        try:
            return self._losses(batch)
        finally:
            net.memory_selector, self.sam2.motion = selector, motion

    def _losses(self, batch: dict) -> dict[str, torch.Tensor]:
        raise NotImplementedError


@MODELS.register()
class SAM2(SAM2Family):
    """SAM2 as a promptable tracker (see the module docstring)."""

    default_motion: dict | None = None
    default_selector: dict | None = None
    checkpoint_names = frozenset({"SAM2", "SAMURAI"})

    def __init__(self, num_classes: int = 4, sam2: dict | None = None, prompt: str = "mask",
                 prompt_frame: str | int = "first", box_jitter_px: float = 0.0, train_prompt: str = "mask",
                 train_box_jitter_px: float = 4.0, sam2_train: str = "full", lora: dict | None = None,
                 sam2_loss: dict | None = None, motion: dict | None | str = "default",
                 memory_selector: dict | None | str = "default", frame_batch: int = 8):
        super().__init__()
        self.num_classes = int(num_classes)
        self.prompt = check_choice("prompt", prompt, PROMPTS)
        self.train_prompt = check_choice("train_prompt", train_prompt, TRAIN_PROMPTS)
        if isinstance(prompt_frame, bool) or not (isinstance(prompt_frame, int) or prompt_frame in PROMPT_FRAMES):
            raise ConfigError(f"model.prompt_frame must be one of {', '.join(PROMPT_FRAMES)} or an integer (the k-th "
                              f"annotated frame); got {prompt_frame!r}")
        self.prompt_frame = prompt_frame
        self.box_jitter_px, self.train_box_jitter_px = float(box_jitter_px), float(train_box_jitter_px)
        motion = self.default_motion if motion == "default" else motion
        selector = self.default_selector if memory_selector == "default" else memory_selector
        self._init_sam2(sam2, sam2_train, lora, sam2_loss, motion, selector, frame_batch)

    # ------------------------------------------------------------------------------------------------ prompts
    def _prompt_frame(self, has_ann: torch.Tensor, frame_idx: torch.Tensor | None, meta: dict) -> int | None:
        """Clip position of the prompted frame among the annotated ones (None: nothing annotated)."""
        ann = has_ann.nonzero()[:, 0].tolist()
        if not ann:
            return None
        if self.prompt_frame == "first":
            return ann[0]
        if self.prompt_frame == "middle":
            return ann[len(ann) // 2]
        if self.prompt_frame == "ed":
            ed = meta.get("ed") if meta else None
            if ed is not None and frame_idx is not None:
                hits = [t for t in ann if int(frame_idx[t]) == int(ed)]
                if hits:
                    return hits[0]
            return ann[0]
        k = int(self.prompt_frame)
        return ann[min(max(k, -len(ann)), len(ann) - 1)]

    def _prompts(self, masks: torch.Tensor, kind: str, jitter: float, size: tuple[int, int],
                 generator: torch.Generator | None = None) -> dict:
        """Prompts of one frame's GT masks K×H×W: {"masks": 1×K×H×W} or {"boxes": 1×K×4} (absent: a 1-px box)."""
        if kind == "mask":
            return {"masks": masks[None].float()}
        boxes, present = boxes_from_masks(masks[None, None])
        boxes = boxes[0]
        if jitter > 0:
            boxes = jitter_boxes(boxes, jitter, size, generator)
        return {"boxes": torch.where(present[0, ..., None], boxes, boxes.new_tensor(ABSENT_BOX))}

    # ------------------------------------------------------------------------------------------------ training
    def _losses(self, batch: dict) -> dict[str, torch.Tensor]:
        video, masks, has_ann = batch["video"], batch["masks"], batch["has_ann"]
        b, _, _, h, w = video.shape
        total: dict[str, torch.Tensor] = {}
        for i in range(b):
            ann = has_ann[i].nonzero()[:, 0]
            if len(ann) == 0:
                continue
            p = int(ann[int(torch.randint(len(ann), ()))])  # global RNG: restored on resume
            kind = self.train_prompt
            if kind == "mixed":  # SAM2's own training mixes mask and box (or click) prompts
                kind = "mask" if bool(torch.rand(()) < 0.5) else "box"
            if len(ann) == 1:
                kind = "box"  # one annotated frame: the loss is on its box-prompted mask
            prompts = self._prompts(masks[i, p], kind, self.train_box_jitter_px, (h, w))
            _, aux = self.sam2.segment(normalize(video[i]), prompts, [p], train=True)
            for key, v in self.sam2_criterion(aux, masks[i], has_ann[i]).items():
                total[key] = total.get(key, 0) + v / b
        return total or self.sam2_criterion.zeros(self.sam2.parameters(), video)

    # ------------------------------------------------------------------------------------------------ inference
    @torch.no_grad()
    def predict(self, batch: dict) -> dict[str, torch.Tensor]:
        if "masks" not in batch:
            raise ConfigError(f"{type(self).__name__} is prompted with ground-truth masks or boxes: predict needs "
                              "'masks' in the batch (an evaluation sample)")
        video, masks, has_ann = batch["video"], batch["masks"], batch["has_ann"].bool()
        b, t, _, h, w = video.shape
        k = self.num_classes
        probs = video.new_zeros(b, t, k, h, w)
        scored = (batch["scored"].bool() if "scored" in batch else has_ann).clone()
        metas = batch.get("meta") or [{} for _ in range(b)]
        for i in range(b):
            fidx = batch["frame_idx"][i] if "frame_idx" in batch else None
            p = self._prompt_frame(has_ann[i], fidx, metas[i])
            if p is None:
                continue
            g = torch.Generator().manual_seed(int(metas[i].get("sample_id", i))) if self.box_jitter_px > 0 else None
            prompts = self._prompts(masks[i, p], self.prompt, self.box_jitter_px, (h, w), g)
            logits, aux = self.sam2.segment(normalize(video[i]), prompts, [p])
            probs[i] = self._probs(logits, aux, {p: masks[i, p]} if self.prompt == "mask" else {})
            scored[i, p] = False
        return {"probs": probs, "scored": scored}


    @staticmethod
    def _probs(logits: torch.Tensor, aux: dict, given_masks: dict) -> torch.Tensor:
        """Logits T×K×H×W -> probabilities: zero where SAM2's object score is < 0 (on a mask-prompted frame: where
        the given mask is empty), divided by their sum where it exceeds 1."""
        q = logits.sigmoid()
        visible = (aux["object_score_logits"].to(q.device) > 0).float()
        for f, m in given_masks.items():
            visible[f] = m.flatten(1).any(1).float()
        q = q * visible[..., None, None]
        s = q.sum(1, keepdim=True)
        return torch.where(s > 1, q / s.clamp(min=1e-6), q)

    # ------------------------------------------------------------------------------------------------ video API
    def init_video(self, video: torch.Tensor, meta) -> dict:
        """One video T×3×H×W in [0, 1] -> state; prompts are added with ``add_prompts``, then ``propagate``."""
        if video.dim() != 4 or video.shape[1] != 3:
            raise ConfigError(f"init_video: video must be T×3×H×W, got shape {tuple(video.shape)}")
        return {"video": video, "meta": dict(meta or {}), "prompts": {}, "kind": None, "probs": None}

    def add_prompts(self, state: dict, frame_idx: int, prompts) -> None:
        """``masks`` K×H×W (an empty mask: absent there) or ``boxes`` K×4 (x0, y0, x1, y1 pixels; a NaN row: the
        class is absent there); all prompted frames of a video use the same kind. Points are not supported."""
        t = state["video"].shape[0]
        if not 0 <= int(frame_idx) < t:
            raise ConfigError(f"add_prompts: frame {frame_idx} outside the video (0..{t - 1})")
        kinds = [k for k in ("masks", "boxes") if k in prompts]
        unknown = sorted(set(prompts) - {"masks", "boxes"})
        if len(kinds) != 1 or unknown:
            raise ConfigError(f"add_prompts: {type(self).__name__} takes 'masks' (K×H×W) or 'boxes' (K×4) on a "
                              f"frame, got {sorted(prompts)}")
        kind = kinds[0]
        if state["kind"] not in (None, kind):
            raise ConfigError(f"add_prompts: this video has {state['kind']} prompts already; use one kind per video")
        value = prompts[kind].float()
        if kind == "boxes":
            value = torch.where(torch.isnan(value).any(-1, keepdim=True), value.new_tensor(ABSENT_BOX), value)
        state["kind"], state["probs"] = kind, None
        state["prompts"][int(frame_idx)] = value

    def propagate(self, state: dict, reverse: bool = False):
        """Yield ``(frame, {"probs": K×H×W})`` from the earliest prompted frame to the end (``reverse``: from the
        frame before it down to 0). SAM2 runs once over the whole video with every prompt; both passes read it."""
        if not state["prompts"]:
            raise ConfigError(f"{type(self).__name__}.propagate: no prompts (call add_prompts first)")
        if state["probs"] is None:
            frames = sorted(state["prompts"])
            value = torch.stack([state["prompts"][f] for f in frames])
            with torch.no_grad():
                logits, aux = self.sam2.segment(normalize(state["video"]), {state["kind"]: value}, frames)
            given = dict(zip(frames, value)) if state["kind"] == "masks" else {}
            state["probs"] = self._probs(logits, aux, given)
        first = min(state["prompts"])
        order = range(first - 1, -1, -1) if reverse else range(first, state["video"].shape[0])
        for t in order:
            yield t, {"probs": state["probs"][t]}


@MODELS.register()
class SAMURAI(SAM2):
    """SAM2 with SAMURAI's motion-aware mask choice and memory selection (defaults: the published values)."""

    default_motion = SAMURAI_MOTION
    default_selector = {"name": "samurai"}
