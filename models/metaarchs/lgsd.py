"""Local-to-Global Self-Distillation (LGSD, seed 000) around LGRNet: DINO-style self-distillation on unlabelled
clips (Caron et al., DINO, ICCV 2021, arXiv 2104.14294) added to LGRNet's supervised loss.

    student = LGRNet (trained), teacher = EMA of the student (never trained by gradients)
    labelled batch   -> student -> supervised set-criterion losses (as LGRNet alone)
    unlabelled batch -> G global views (long span, large crops) and L local views (short span, small crops)
                        teacher sees the global views, the student sees all views;
                        view embedding = frame bottleneck queries averaged over the view's frames, the n_q queries
                        concatenated (B, n_q·C) -> projection head -> K logits          (tokens="pooled")
                        or each of the n_q query slots a token (B, n_q, C) -> the same head on every token
                        -> (B, n_q, K), slot s distilled into slot s (iBOT-style)       (tokens="slots")
                        loss_lgsd = weight · DINO cross-entropy (each teacher global view -> every other student
                        view, teacher centred and sharpened)
    after each optimizer step: teacher <- m·teacher + (1 − m)·student (m on a cosine 'momentum' -> 1), by the
                        trainer's EMAHook, which the model contributes (``hooks()``)

The queries are averaged over time but not over the query index: each query is a learned slot, so slot identity
is comparable across views; the head standardises them over the batch first (``head_input_norm``, see
``DINOHead``), all student views in one call. ``lgsd_target_entropy`` (logged) is the teacher targets' mean
entropy: log K means they went uniform; ``lgsd_target_spread`` is how much they differ between samples (0: all
alike). Teacher temperature warms up linearly (``teacher_temp`` -> ``teacher_temp_final``
over ``teacher_temp_warmup`` of training, on the trainer's iteration that the EMAHook passes to ``set_progress``),
as in DINO. The teacher always runs in eval mode (BatchNorm running
statistics, copied from the student at each EMA step). Checkpoints hold both networks, both heads and the
centre (they are submodules / buffers); evaluation and FLOP/parameter counts use the student, or the teacher with
``lgsd.eval_with="teacher"``.

Config: ``model = dict(name="LGSD", <LGRNet arguments>, lgsd=dict(...))`` — every key but ``lgsd`` goes to the
student, so an LGSD config is a few lines on top of an LGRNet one.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from core.errors import ConfigError
from core.registry import MODELS, call, did_you_mean, forwards
from models.base import MetaArch
from models.losses.dino import DINOHead, DINOLoss, linear_warmup
from models.metaarchs.lgrnet import LGRNet

DEFAULTS = dict(
    weight=1.0,                 # loss_lgsd = weight · DINO loss
    out_dim=256,                # K, the projection head's output distribution (DINO: 65536 for ImageNet)
    hidden_dim=512, bottleneck_dim=128, head_layers=3,
    head_input_norm=True,       # standardise the pooled queries over the batch before the head (see DINOHead)
    tokens="pooled",            # "pooled": one vector per view | "slots": every frame-query slot a token (iBOT)
    head_norm_stats="running",  # "running": student standardised over all its views at once, the eval-mode teacher
                                # by the running statistics | "per_view": global and local views each by their
                                # own batch statistics, in the teacher too (see distillation_loss)
    student_temp=0.1,
    teacher_temp=0.04, teacher_temp_final=0.07, teacher_temp_warmup=0.3,  # warm-up: fraction of max_iter
    center_momentum=0.9,
    momentum=0.99, momentum_final=1.0,  # EMA momentum, cosine over training (DINO: 0.996 -> 1 over 100 epochs)
    eval_with="student",        # "student" | "teacher": the network that predict() (evaluation) runs
)


@MODELS.register()
@forwards(LGRNet)
class LGSD(MetaArch):
    requires = frozenset({"unlabeled"})  # the trainer refuses to run it without data.unlabeled

    def __init__(self, lgsd: dict | None = None, **student):
        super().__init__()
        unknown = sorted(set(lgsd or {}) - set(DEFAULTS))
        if unknown:
            raise ConfigError(f"model.lgsd: unknown keys {unknown}; {did_you_mean(unknown[0], DEFAULTS)}")
        self.cfg = {**DEFAULTS, **(lgsd or {})}
        if self.cfg["eval_with"] not in ("student", "teacher"):
            raise ConfigError(f"model.lgsd.eval_with must be 'student' or 'teacher', got {self.cfg['eval_with']!r}")
        if self.cfg["tokens"] not in ("pooled", "slots"):
            raise ConfigError(f"model.lgsd.tokens must be 'pooled' or 'slots', got {self.cfg['tokens']!r}")
        if self.cfg["head_norm_stats"] not in ("running", "per_view"):
            raise ConfigError(f"model.lgsd.head_norm_stats must be 'running' or 'per_view', got "
                              f"{self.cfg['head_norm_stats']!r}")
        self.per_view = self.cfg["head_norm_stats"] == "per_view"
        self.student = call(LGRNet, student)
        enc = self.student.encoder
        n_q = enc.query_feat.num_embeddings
        slots = n_q if self.cfg["tokens"] == "slots" else 0
        in_dim = enc.d_model if slots else n_q * enc.d_model
        self.student_head = DINOHead(in_dim, self.cfg["out_dim"], self.cfg["hidden_dim"],
                                     self.cfg["bottleneck_dim"], self.cfg["head_layers"],
                                     self.cfg["head_input_norm"], tokens=slots,
                                     norm_stats="batch" if self.per_view else "running")
        self.teacher = copy.deepcopy(self.student)
        self.teacher_head = copy.deepcopy(self.student_head)
        for p in list(self.teacher.parameters()) + list(self.teacher_head.parameters()):
            p.requires_grad_(False)
        self.dino = DINOLoss(self.cfg["out_dim"], self.cfg["student_temp"], self.cfg["center_momentum"],
                             tokens=slots)
        self.num_classes = self.student.num_classes
        self.iteration, self.max_iter = 0, 1  # set through set_progress (by the EMAHook) for the schedules
        self.train()  # puts the teacher in eval mode

    # ---- trainer protocol -----------------------------------------------------------------------------
    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()  # the teacher never uses batch statistics or dropout
        self.teacher_head.eval()
        return self

    def hooks(self) -> list:
        """The EMA teacher update, with the momentum schedule, driving the teacher temperature and logging the
        schedules (``lgsd_momentum``, ``lgsd_teacher_temp``, ``lgsd_target_entropy``, ``lgsd_target_spread``)."""
        from trainers.hooks import EMAHook  # imported when the trainer asks: models import nothing of trainers

        return [EMAHook({"teacher": "student", "teacher_head": "student_head"}, self.cfg["momentum"],
                        self.cfg["momentum_final"], scalar_prefix="lgsd", progress=self.set_progress,
                        scalars=self.schedule_scalars)]

    def frozen_state_keys(self) -> set[str]:
        """None of LGSD's parameters is a frozen base: the teacher's move by the EMA."""
        return {k for k in super().frozen_state_keys() if not k.startswith(("teacher.", "teacher_head."))}

    def set_progress(self, iteration: int, max_iter: int) -> None:
        """The trainer's 0-based iteration and ``train.max_iter``: drive the teacher temperature schedule."""
        self.iteration, self.max_iter = iteration, max_iter

    def teacher_temp(self) -> float:
        warm = int(round(self.cfg["teacher_temp_warmup"] * self.max_iter))
        return linear_warmup(self.cfg["teacher_temp"], self.cfg["teacher_temp_final"], self.iteration, warm)

    def schedule_scalars(self) -> dict[str, float]:
        """Logged each step (after the EMAHook's ``lgsd_momentum``): the teacher temperature and the teacher
        targets' mean entropy (log K = collapsed to uniform) and spread."""
        out = {"lgsd_teacher_temp": self.teacher_temp()}
        if self.dino.last_target_entropy is not None:
            out["lgsd_target_entropy"] = self.dino.last_target_entropy
            out["lgsd_target_spread"] = self.dino.last_target_spread
        return out

    def inference_model(self) -> nn.Module:
        """The network evaluation runs (parameter counts report this one)."""
        return self.teacher if self.cfg["eval_with"] == "teacher" else self.student

    # ---- forward ----------------------------------------------------------------------------------------
    def _features(self, net: LGRNet, views: torch.Tensor) -> torch.Tensor:
        """views (B, V, T, 3, H, W) -> frame queries averaged over each view's frames, view-major within each
        clip: (B·V, n_q·C) pooled, or (B·V, n_q, C) with ``tokens="slots"``."""
        q = net.frame_queries(views.flatten(0, 1)).mean(1)  # (B·V, n_q, C)
        return q if self.cfg["tokens"] == "slots" else q.flatten(1)

    @staticmethod
    def _per_view(logits: torch.Tensor, b: int) -> list[torch.Tensor]:
        return list(logits.unflatten(0, (b, -1)).unbind(1))  # V tensors (B, [n_q,] K)

    def distillation_loss(self, unlabeled: dict) -> torch.Tensor:
        """"running": the student head standardises all its views in one call (one set of batch statistics), the
        eval-mode teacher head by its running statistics. Those mix global and local views, which differ
        systematically (on EchoSynth v2 their mean is ~4 global-view standard deviations from the global views'
        mean), so every teacher input carries a large common offset. "per_view": the global views and the local
        views are standardised each by their own batch, the teacher's global views by theirs."""
        glob = unlabeled["global"]
        b, n_global = glob.shape[:2]
        feats = self._features(self.student, glob)
        if "local" in unlabeled and self.per_view:
            loc = self._features(self.student, unlabeled["local"])
            student = self._per_view(self.student_head(feats), b) + self._per_view(self.student_head(loc), b)
        elif "local" in unlabeled:  # one head call for all views: one set of batch statistics in the head
            loc = self._features(self.student, unlabeled["local"])
            logits = self.student_head(torch.cat([feats, loc]))
            student = self._per_view(logits[:len(feats)], b) + self._per_view(logits[len(feats):], b)
        else:
            student = self._per_view(self.student_head(feats), b)
        with torch.no_grad():
            teacher = self._per_view(self.teacher_head(self._features(self.teacher, glob)), b)
        return self.dino(student, teacher, self.teacher_temp())

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        losses = self.student(batch)
        unlabeled = batch.get("unlabeled")
        if unlabeled is not None and self.cfg["weight"] > 0:
            losses["loss_lgsd"] = self.cfg["weight"] * self.distillation_loss(unlabeled)
        return losses

    @torch.no_grad()
    def predict(self, batch: dict) -> dict[str, torch.Tensor]:
        return self.inference_model().predict(batch)
