"""Self-distillation pieces for LGSD (Local-to-Global Self-Distillation, seed 000): a DINO-style projection head,
the cross-view distillation loss with teacher centering and sharpening, the EMA teacher update and the cosine /
linear schedules of momentum and teacher temperature (Caron et al., DINO, ICCV 2021, arXiv 2104.14294, §3).

Conventions: each view is a (B, D) feature (e.g. pooled frame bottleneck queries); the head maps it to K logits.
Teacher views are the global views, in the same order as the first ``len(teacher)`` student views.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from core import comm


class DINOHead(nn.Module):
    """(B, in_dim) -> (B, out_dim) logits: MLP (GELU) to a bottleneck, L2 normalisation, weight-normalised
    linear layer without bias (its norm frozen at 1, as in DINO, so the logits stay bounded).

    ``input_norm=True`` standardises each input feature over the batch first (BatchNorm without affine
    parameters; running statistics in eval mode, i.e. in the teacher). Features whose across-sample variation is
    small next to a shared component (LGRNet's frame queries: cosine 0.998 between different clips) otherwise
    reach the head as nearly one vector: the centred teacher targets turn uniform and the loss sits at log K."""

    def __init__(self, in_dim: int, out_dim: int = 1024, hidden_dim: int = 512, bottleneck_dim: int = 128,
                 num_layers: int = 3, input_norm: bool = False):
        super().__init__()
        self.input_norm = nn.BatchNorm1d(in_dim, affine=False) if input_norm else nn.Identity()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [bottleneck_dim]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(dims) - 2:
                layers.append(nn.GELU())
        self.mlp = nn.Sequential(*layers)
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last = nn.utils.parametrizations.weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        self.last.parametrizations.weight.original0.data.fill_(1.0)
        self.last.parametrizations.weight.original0.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last(F.normalize(self.mlp(self.input_norm(x)), dim=-1))


class DINOLoss(nn.Module):
    """Cross-entropy from every teacher (global) view to every other student view.

    loss = mean over pairs (i, j), i teacher view, j student view, j != i, of
           mean_b Σ_k −softmax((t_i − c) / τ_t)_k · log_softmax(s_j / τ_s)_k
    The centre c (a buffer, K) follows the batch mean of the teacher logits with momentum ``center_momentum``
    (all-reduced over processes) after each call in training mode: centering keeps one dimension from dominating,
    the low teacher temperature keeps the targets from going uniform; together they prevent collapse.
    """

    def __init__(self, out_dim: int, student_temp: float = 0.1, center_momentum: float = 0.9):
        super().__init__()
        self.student_temp, self.center_momentum = student_temp, center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))
        self.last_target_entropy: float | None = None  # mean entropy of the last call's targets (a collapse gauge)

    def forward(self, student: list[torch.Tensor], teacher: list[torch.Tensor], teacher_temp: float
                ) -> torch.Tensor:
        if not teacher or len(student) < 2 or len(teacher) > len(student):
            raise ValueError(f"DINOLoss needs 1 <= teacher views <= student views and >= 2 student views, got "
                             f"{len(teacher)} teacher / {len(student)} student")
        targets = [F.softmax((t.detach().float() - self.center) / teacher_temp, dim=-1) for t in teacher]
        with torch.no_grad():
            q = torch.cat(targets)
            self.last_target_entropy = float(-(q * q.clamp_min(1e-12).log()).sum(-1).mean())
        logps = [F.log_softmax(s.float() / self.student_temp, dim=-1) for s in student]
        total, pairs = 0.0, 0
        for i, q in enumerate(targets):
            for j, logp in enumerate(logps):
                if j == i:
                    continue  # a view is not distilled into itself
                total = total + (-q * logp).sum(-1).mean()
                pairs += 1
        if self.training:
            self.update_center(torch.cat([t.detach().float() for t in teacher]))
        return total / pairs

    @torch.no_grad()
    def update_center(self, teacher_logits: torch.Tensor) -> None:
        batch_sum = teacher_logits.sum(0, keepdim=True)
        count = torch.tensor(float(teacher_logits.shape[0]), device=teacher_logits.device)
        if comm.get_world_size() > 1:
            torch.distributed.all_reduce(batch_sum)
            torch.distributed.all_reduce(count)
        self.center.mul_(self.center_momentum).add_(batch_sum / count, alpha=1 - self.center_momentum)


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """teacher ← momentum · teacher + (1 − momentum) · student, parameter by parameter (buffers copied)."""
    for pt, ps in zip(teacher.parameters(), student.parameters()):
        pt.mul_(momentum).add_(ps.detach(), alpha=1 - momentum)
    for bt, bs in zip(teacher.buffers(), student.buffers()):
        bt.copy_(bs)


def cosine_schedule(start: float, end: float, it: int, total: int) -> float:
    """``start`` at it = 0 to ``end`` at it >= total along a half cosine (DINO's EMA momentum 0.996 → 1)."""
    if total <= 0 or it >= total:
        return end
    return end - (end - start) * (math.cos(math.pi * it / total) + 1) / 2


def linear_warmup(start: float, end: float, it: int, warmup: int) -> float:
    """``start`` to ``end`` linearly over ``warmup`` iterations, then ``end`` (DINO's teacher temp 0.04 → 0.07)."""
    if warmup <= 0 or it >= warmup:
        return end
    return start + (end - start) * it / warmup
