"""The model protocol: what every meta-architecture (``MODELS`` registry) offers the trainer, the evaluation and the
tools. A meta-architecture derives from :class:`MetaArch` and overrides what it has; the defaults describe a model
that trains every parameter, needs nothing beyond the labelled clip, contributes no hooks and has no stateful
video API. The trainer and the evaluation read only these members (no ``hasattr`` probing), and
``tests/models/test_model_contract.py`` runs every registered model through them.

Batches are ``core.structures.Batch`` (time-major: ``video`` B×T×3×H×W in [0, 1], ``masks`` B×T×K×H×W bool,
``has_ann`` / ``scored`` B×T, ``meta`` list of B dicts; optional ``unlabeled``, ``support``, ``prompts``).

    member                               when / by whom                     default
    forward(batch) -> {loss_name: 0-d}   every training micro-batch         (abstract) weighted losses; the
                                                                            trainer sums them
    predict(batch) -> {"probs": B×T×K×H×W evaluation, tools (no grad,       (abstract) per-class probabilities in
                       [, "boxes": B×T×K×4 eval mode)                        [0, 1] at the input size; boxes
                        , "scores": B×T×K]}                                  (x0, y0, x1, y1) in input pixels
    requires: frozenset[str]             trainer / evaluation check         frozenset(): subset of REQUIREMENTS
                                         each batch (check_batch)
    trains: bool                         Trainer refuses False; eval needs  True
                                         no --eval_path when False
    hooks() -> list[hook | dict]         Trainer, once at construction      []: e.g. LGSD's EMAHook
    trainable_parameters()               the optimizer's parameters         requires_grad parameters
        -> iterator of (name, Parameter)
    frozen_state_keys() -> set[str]      train.checkpoint.state=trainable   state-dict keys of the parameters
                                         leaves these out of checkpoints    outside trainable_parameters()
    frozen_base_path: str | None         recorded (with its sha256) in a    None: the frozen base is the
                                         trainable-only checkpoint          seeded random init
    inference_model() -> nn.Module       parameter counts                   self (LGSD: student or teacher)
    checkpoint_names: frozenset[str]     checkpoints of these model names   frozenset(): only its own name
                                         load too (SAMURAI loads SAM2's)
    has_video_api: bool                  whole-video evaluation uses the    True when init_video is overridden
                                         video API instead of predict
    init_video(video, meta) -> state     see below
    add_prompts(state, frame_idx, prompts)
    propagate(state, reverse=False) -> iterator of (frame_idx, {"probs": K×H×W, ...})

The stateful video API (optional; SAM2 and SAMURAI implement it) follows sam2's video predictor
(``init_state`` / ``add_new_points_or_box`` / ``propagate_in_video``) with our tensors: ``init_video`` takes one
video ``T×3×H×W`` float in [0, 1] (already at the model's input size, on the model's device) and its meta dict,
and returns an opaque state object the model owns (memory bank, cached features); ``add_prompts`` records
prompts on frame ``frame_idx`` (0-based within the video): a dict with any of ``boxes`` K×4 (x0, y0, x1, y1 in
input pixels, NaN rows = class not prompted), ``points`` K×P×2 with ``point_labels`` K×P, ``masks`` K×H×W bool;
``propagate`` yields ``(frame_idx, {"probs": K×H×W[, "boxes": K×4, "scores": K]})`` from the earliest prompted
frame to the end (``reverse=True``: down to frame 0). :func:`trainers.video_inference.predict_with_video_api`
drives it for a batch (see there which frames get prompts).
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from core.errors import ConfigError

REQUIREMENTS = frozenset({"unlabeled", "support", "prompts"})
# Fields the evaluation must provide too (unlabelled clips are a training-time input only).
EVAL_REQUIREMENTS = frozenset({"support", "prompts"})


class MetaArch(nn.Module):
    """Base class of every meta-architecture; see the module docstring for the protocol."""

    requires: ClassVar[frozenset[str]] = frozenset()
    trains: ClassVar[bool] = True
    frozen_base_path: str | None = None  # set by a model that loads its frozen weights from a local file
    #: other registered names whose checkpoints this model loads (same state dict, other inference rules)
    checkpoint_names: ClassVar[frozenset[str]] = frozenset()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        req = frozenset(cls.requires)
        unknown = sorted(req - REQUIREMENTS)
        if unknown:
            raise TypeError(f"{cls.__name__}.requires: unknown requirement(s) {unknown}; known: "
                            f"{sorted(REQUIREMENTS)}")
        cls.requires = req

    # ---- training and prediction ------------------------------------------------------------------------
    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        """batch (training, with the fields in ``requires``) -> {loss name: weighted 0-d tensor}."""
        raise NotImplementedError(f"{type(self).__name__} does not train (trains={self.trains})")

    def predict(self, batch: dict) -> dict[str, torch.Tensor]:
        """batch -> {"probs": B×T×K×H×W in [0, 1] (optional "boxes" B×T×K×4, "scores" B×T×K)}."""
        raise NotImplementedError(f"{type(self).__name__} has no predict()")

    def hooks(self) -> list:
        """Trainer hooks this model contributes (``trainers.hooks.HookBase`` instances or ``dict(name=...)``
        entries of the ``HOOKS`` registry), registered with the trainer's own; e.g. an EMA teacher's update."""
        return []

    def trainable_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """(name, parameter) pairs the optimizer updates."""
        return ((n, p) for n, p in self.named_parameters() if p.requires_grad)

    def frozen_state_keys(self) -> set[str]:
        """State-dict keys that training never changes (the frozen base): a checkpoint with
        ``train.checkpoint.state="trainable"`` leaves them out. Buffers always count as trained state (BatchNorm
        statistics move in training); a model whose non-trainable parameters move otherwise (an EMA teacher) must
        leave those out of this set."""
        trainable = {n for n, _ in self.trainable_parameters()}
        return {n for n, _ in self.named_parameters() if n not in trainable}

    def inference_model(self) -> nn.Module:
        """The network ``predict`` runs (what ``#params`` counts); LGSD answers its student or teacher."""
        return self

    # ---- optional stateful video API --------------------------------------------------------------------
    @property
    def has_video_api(self) -> bool:
        """True when the model implements ``init_video`` / ``add_prompts`` / ``propagate``."""
        return type(self).init_video is not MetaArch.init_video

    def init_video(self, video: torch.Tensor, meta: Mapping) -> Any:
        """video T×3×H×W float in [0, 1] (one video, model input size, model device), its meta -> state."""
        raise NotImplementedError(f"{type(self).__name__} has no stateful video API")

    def add_prompts(self, state: Any, frame_idx: int, prompts: Mapping[str, torch.Tensor]) -> None:
        """Prompts on frame ``frame_idx``: ``boxes`` K×4, ``points`` K×P×2 + ``point_labels`` K×P, ``masks``
        K×H×W (any subset)."""
        raise NotImplementedError(f"{type(self).__name__} has no stateful video API")

    def propagate(self, state: Any, reverse: bool = False) -> Iterator[tuple[int, dict[str, torch.Tensor]]]:
        """Yield ``(frame_idx, {"probs": K×H×W, ...})`` from the earliest prompted frame forwards (``reverse``:
        backwards to frame 0)."""
        raise NotImplementedError(f"{type(self).__name__} has no stateful video API")


def check_choice(key: str, value: Any, allowed: tuple) -> Any:
    """``value`` of config key ``model.<key>`` if it is one of ``allowed``, else a one-line ConfigError listing them."""
    if value not in allowed:
        raise ConfigError(f"model.{key} must be one of {', '.join(allowed)}; got {value!r}")
    return value


def check_batch(model: MetaArch, batch: Mapping, training: bool) -> None:
    """Refuse a batch without a field the model ``requires`` (in training: all of them; in evaluation:
    ``support`` and ``prompts``), naming the fields and where they come from."""
    needed = model.requires if training else model.requires & EVAL_REQUIREMENTS
    missing = sorted(needed - set(batch))
    if missing:
        where = ("data.unlabeled (names, mapper, ratio > 0)" if missing == ["unlabeled"] else
                 "a mapper that provides them")
        raise ConfigError(f"model {type(model).__name__!r} requires {missing} in every "
                          f"{'training' if training else 'evaluation'} batch, which has only "
                          f"{sorted(k for k in batch if k != 'meta')}: set {where}")
