"""Self-distillation pieces for LGSD (Local-to-Global Self-Distillation, seed 000): a DINO-style projection head,
the cross-view distillation loss with teacher centering and sharpening, the EMA teacher update and the cosine /
linear schedules of momentum and teacher temperature (Caron et al., DINO, ICCV 2021, arXiv 2104.14294, §3).

Conventions: each view is a (B, D) feature (e.g. pooled frame bottleneck queries); the head maps it to K logits.
Teacher views are the global views, in the same order as the first ``len(teacher)`` student views.
"""
from __future__ import annotations

import math

import torch
import torch.distributed.nn.functional as dist_nn
import torch.nn.functional as F
from torch import nn

from core import comm


class SyncBatchNorm1d(nn.BatchNorm1d):
    """``nn.BatchNorm1d`` whose batch statistics are those of the global batch: in training mode under
    torch.distributed with world size > 1, the mean and (biased) variance per feature are all-reduced over the
    ranks, differentiably, so W processes × B samples normalise, back-propagate and update the running statistics
    (unbiased variance, ``momentum``) as one process with W·B. ``torch.nn.SyncBatchNorm`` refuses CPU tensors (GPU /
    XPU / HPU only), hence this small version on ``torch.distributed.nn.functional.all_reduce`` (gloo works); its
    backward sums the gradients over the ranks, which is what the shared statistics need.

    Input (N, C) or (N, C, L). With one process (or in eval mode with running statistics) it *is*
    ``nn.BatchNorm1d``: the parent's forward runs, bit-identical, and the state-dict names are the parent's."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        if not batch_stats or comm.get_world_size() == 1:
            return super().forward(x)
        self._check_input_dim(x)
        dims = [0, *range(2, x.dim())]  # all but the feature dimension
        shape = [1, -1] + [1] * (x.dim() - 2)
        # one all-reduce for the sums and the sample count (ranks may hold different batch sizes)
        stats = dist_nn.all_reduce(torch.cat([x.sum(dims), x.new_tensor([x.numel() / x.shape[1]])]))
        n = float(stats[-1])
        if n <= 1:
            raise ValueError(f"Expected more than 1 value per channel when training, got {n:g} over all ranks")
        mean = stats[:-1] / n
        xc = x - mean.view(shape)
        # two passes (mean, then squared deviations) rather than E[x²] − E[x]²: features sharing a large common
        # component (LGRNet's frame queries) would lose the variance to cancellation
        var = dist_nn.all_reduce(xc.pow(2).sum(dims)) / n
        if self.training and self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                f = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.mul_(1 - f).add_(mean.detach(), alpha=f)
                self.running_var.mul_(1 - f).add_(var.detach() * (n / (n - 1)), alpha=f)  # unbiased, as BatchNorm
        out = xc * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out


class DINOHead(nn.Module):
    """(B, in_dim) -> (B, out_dim) logits: MLP (GELU) to a bottleneck, L2 normalisation, weight-normalised
    linear layer without bias (its norm frozen at 1, as in DINO, so the logits stay bounded).

    ``input_norm=True`` standardises each input feature over the batch first (BatchNorm without affine
    parameters; running statistics in eval mode, i.e. in the teacher). Features whose across-sample variation is
    small next to a shared component (LGRNet's frame queries: cosine 0.998 between different clips) otherwise
    reach the head as nearly one vector: the centred teacher targets turn uniform and the loss sits at log K.
    The statistics are over the global batch under DDP (``SyncBatchNorm1d``), so the head does not depend on how
    the batch is split over processes."""

    def __init__(self, in_dim: int, out_dim: int = 1024, hidden_dim: int = 512, bottleneck_dim: int = 128,
                 num_layers: int = 3, input_norm: bool = False):
        super().__init__()
        self.input_norm = SyncBatchNorm1d(in_dim, affine=False) if input_norm else nn.Identity()
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
        # mean entropy of the last call's targets, over this process's batch only (a logged collapse gauge)
        self.last_target_entropy: float | None = None

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
        """teacher_logits (N, K) of this process; the mean is over all processes' N (sums and counts reduced)."""
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
