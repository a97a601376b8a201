"""Self-distillation pieces for LGSD (Local-to-Global Self-Distillation, seed 000): a DINO-style projection head,
the cross-view distillation loss with teacher centering and sharpening, the EMA teacher update and the cosine /
linear schedules of momentum and teacher temperature (Caron et al., DINO, ICCV 2021, arXiv 2104.14294, §3).

Conventions: each view is a (B, D) feature (e.g. pooled frame bottleneck queries) or, for per-token distillation
(iBOT, Zhou et al., ICLR 2022, arXiv 2111.07832: every token distilled, not one pooled vector), (B, S, D) with S
tokens whose index means the same thing in every view; the head maps the last dimension to K logits. Teacher views
are the global views, in the same order as the first ``len(teacher)`` student views.
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
    the batch is split over processes. ``norm_stats="batch"`` keeps no running statistics: every call, in eval mode
    too, is standardised by its own batch (one call per group of views that should share statistics)."""

    def __init__(self, in_dim: int, out_dim: int = 1024, hidden_dim: int = 512, bottleneck_dim: int = 128,
                 num_layers: int = 3, input_norm: bool = False, tokens: int = 0, norm_stats: str = "running"):
        super().__init__()
        # tokens = S > 0: the input is (B, S, in_dim) and the standardisation is per (token, feature), i.e. over
        # the batch only, so a token's identity (its mean) is taken out before the shared MLP sees it
        self.tokens = tokens
        norm_dim = in_dim * max(tokens, 1)
        if norm_stats not in ("running", "batch"):
            raise ValueError(f"DINOHead norm_stats must be 'running' or 'batch', got {norm_stats!r}")
        # "batch": the statistics of the batch at hand in eval mode too (no running statistics), so an eval-mode
        # teacher standardises its views by their own statistics, as the student does
        self.input_norm = (SyncBatchNorm1d(norm_dim, affine=False, track_running_stats=norm_stats == "running")
                           if input_norm else nn.Identity())
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
        if self.tokens:
            if x.dim() != 3 or x.shape[1] != self.tokens:
                raise ValueError(f"DINOHead with tokens={self.tokens} expects (B, {self.tokens}, D), got "
                                 f"{tuple(x.shape)}")
            x = self.input_norm(x.flatten(1)).view_as(x)
        else:
            x = self.input_norm(x)
        return self.last(F.normalize(self.mlp(x), dim=-1))


class DINOLoss(nn.Module):
    """Cross-entropy from every teacher (global) view to every other student view.

    loss = mean over pairs (i, j), i teacher view, j student view, j != i, of
           mean_b Σ_k −softmax((t_i − c) / τ_t)_k · log_softmax(s_j / τ_s)_k
    The centre c (a buffer, K) follows the batch mean of the teacher logits with momentum ``center_momentum``
    (all-reduced over processes) after each call in training mode: centering keeps one dimension from dominating,
    the low teacher temperature keeps the targets from going uniform; together they prevent collapse.

    ``tokens = S > 0``: views are (B, S, K) and token s of a teacher view is distilled into token s of every other
    student view (the mean is over b and s); each token has its own centre (buffer S × K), since tokens differ
    systematically (learned slots) and one shared centre would leave that difference as a target the student
    can meet from the token's index alone.
    """

    def __init__(self, out_dim: int, student_temp: float = 0.1, center_momentum: float = 0.9, tokens: int = 0):
        super().__init__()
        self.student_temp, self.center_momentum = student_temp, center_momentum
        self.register_buffer("center", torch.zeros(max(tokens, 1), out_dim))
        # collapse gauges of the last call's targets, over this process's batch only (logged): their mean entropy
        # (log K: uniform) and how much they differ between samples, the entropy of the batch-mean target minus
        # the mean entropy (0: every sample gets the same target, uniform or not; at most log of the batch size)
        self.last_target_entropy: float | None = None
        self.last_target_spread: float | None = None

    def forward(self, student: list[torch.Tensor], teacher: list[torch.Tensor], teacher_temp: float
                ) -> torch.Tensor:
        if not teacher or len(student) < 2 or len(teacher) > len(student):
            raise ValueError(f"DINOLoss needs 1 <= teacher views <= student views and >= 2 student views, got "
                             f"{len(teacher)} teacher / {len(student)} student")
        targets = [F.softmax((t.detach().float() - self.center) / teacher_temp, dim=-1) for t in teacher]
        with torch.no_grad():
            q = torch.cat(targets)  # (V·B, [S,] K)

            def entropy(p: torch.Tensor) -> torch.Tensor:
                return -(p * p.clamp_min(1e-12).log()).sum(-1)
            self.last_target_entropy = float(entropy(q).mean())
            self.last_target_spread = float(entropy(q.mean(0)).mean()) - self.last_target_entropy
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
        """teacher_logits (N, K) or (N, S, K) of this process; the mean is over all processes' N (sums and
        counts reduced)."""
        batch_sum = teacher_logits.sum(0).view_as(self.center)
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
