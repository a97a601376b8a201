"""Hilbert Selective Scan (LGRNet, MICCAI 2024): a bidirectional Mamba-style selective scan over the T×n_q grid of
frame bottleneck queries, visited along a generalized Hilbert curve (or zigzag/raster for the ablations).

Initialisation follows Mamba / VMamba's SS2D (A_log = log(1..N), D = 1, dt ~ logU[dt_min, dt_max] through the
softplus-inverted bias). The parameters carry ``_no_reinit`` so a global xavier init leaves them alone (the original
code overwrote them, REFERENCE.md §3.8 item 4) and ``_no_weight_decay`` (A_log, D) as in Mamba.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from core.errors import ConfigError
from core.registry import forwards
from models.layers import FFN, sine_embed
from models.ops.hilbert import curve_order
from models.ops.selective_scan import selective_scan

SCAN_ORDERS = ("hilbert", "zigzag", "raster")


class HilbertSelectiveScan(nn.Module):
    """x (B, T, Q, C) -> (B, T, Q, C): in_proj -> depthwise 3×3 conv + SiLU over the (T, Q) grid -> selective scan
    along the curve and its reverse (K = 2 directions, summed) -> LayerNorm · SiLU(z) -> out_proj.
    No residual: the caller adds it."""

    def __init__(self, d_model: int, d_inner: int = 128, d_state: int = 16, dt_rank: int | None = 4,
                 d_conv: int = 3, scan_order: str = "hilbert", directions: int = 2, dt_min: float = 1e-3,
                 dt_max: float = 0.1, dt_init_floor: float = 1e-4, impl: str = "auto"):
        super().__init__()
        if scan_order not in SCAN_ORDERS:
            raise ConfigError(f"model.encoder.scan.scan_order must be one of {SCAN_ORDERS}, got {scan_order!r}")
        if directions not in (1, 2):
            raise ConfigError(f"model.encoder.scan.directions must be 1 or 2, got {directions}")
        self.d_inner, self.d_state, self.k = d_inner, d_state, directions
        self.dt_rank = dt_rank or math.ceil(d_model / 16)
        self.scan_order, self.impl = scan_order, impl
        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=False)
        self.conv = nn.Conv2d(d_inner, d_inner, d_conv, padding=d_conv // 2, groups=d_inner)
        k, r, n = directions, self.dt_rank, d_state
        bound = d_inner ** -0.5
        self.x_proj_weight = nn.Parameter(torch.empty(k, r + 2 * n, d_inner).uniform_(-bound, bound))
        self.dt_projs_weight = nn.Parameter(torch.empty(k, d_inner, r).uniform_(-r ** -0.5, r ** -0.5))
        dt = torch.exp(torch.rand(k, d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        self.dt_projs_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1(dt)
        self.A_logs = nn.Parameter(torch.log(torch.arange(1, n + 1, dtype=torch.float32)).repeat(k * d_inner, 1))
        self.Ds = nn.Parameter(torch.ones(k * d_inner))
        for p in (self.x_proj_weight, self.dt_projs_weight, self.dt_projs_bias, self.A_logs, self.Ds):
            p._no_reinit = True
        self.A_logs._no_weight_decay = True
        self.Ds._no_weight_decay = True
        self.out_norm = nn.LayerNorm(d_inner)
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)

    def visit_order(self, t: int, q: int) -> torch.Tensor:
        """Flat indices of the (T, Q) grid in visit order. The query axis is always the curve's major axis, as in
        the original (``gilbert2d_widthBigger(n_q, T)``): by default the longer side would be, which turned the
        curve when a clip has more frames than queries (11-frame evaluation clips against 7-frame training clips
        with 10 queries)."""
        return curve_order((t, q), self.scan_order, major_axis=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, q, _ = x.shape
        xs, z = self.in_proj(x).chunk(2, dim=-1)  # (B, T, Q, d_inner) each
        xs = F.silu(self.conv(xs.permute(0, 3, 1, 2).contiguous()))  # (B, d_inner, T, Q)
        perm = self.visit_order(t, q).to(x.device)
        seq = xs.flatten(2)[..., perm]  # (B, d_inner, L) in curve order
        seqs = torch.stack([seq, seq.flip(-1)], 1) if self.k == 2 else seq[:, None]  # (B, K, d_inner, L)
        length = seq.shape[-1]
        x_dbl = torch.einsum("bkdl,kcd->bkcl", seqs, self.x_proj_weight)
        dts, bs, cs = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=2)
        dts = torch.einsum("bkrl,kdr->bkdl", dts, self.dt_projs_weight)
        y = selective_scan(
            seqs.reshape(b, -1, length).float(), dts.reshape(b, -1, length).float(), -torch.exp(self.A_logs.float()),
            bs.float().contiguous(), cs.float().contiguous(), self.Ds.float(), z=None,
            delta_bias=self.dt_projs_bias.reshape(-1).float(), delta_softplus=True, impl=self.impl,
        ).view(b, self.k, self.d_inner, length)
        y_seq = y[:, 0] + (y[:, 1].flip(-1) if self.k == 2 else 0)  # back to forward curve order
        out = torch.empty_like(y_seq)
        out[..., perm] = y_seq  # scatter to grid order (B, d_inner, T·Q)
        out = out.view(b, self.d_inner, t, q).permute(0, 2, 3, 1).to(x.dtype)  # (B, T, Q, d_inner)
        return self.out_proj(self.out_norm(out) * F.silu(z))


@forwards(HilbertSelectiveScan)
class HilbertScanStage(nn.Module):
    """``num_layers`` × (scan + residual + LayerNorm), then one FFN, over frame queries (B, T, Q, C); the query
    position (learned per query + 1D temporal sine) is added to each scan's input."""

    def __init__(self, d_model: int, num_layers: int = 3, ffn_dim: int = 2048, dropout: float = 0.0, **scan_kw):
        super().__init__()
        self.scans = nn.ModuleList(HilbertSelectiveScan(d_model, **scan_kw) for _ in range(num_layers))
        self.norms = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(num_layers))
        self.ffn = FFN(d_model, ffn_dim, dropout)

    def forward(self, queries: torch.Tensor, query_pos: torch.Tensor) -> torch.Tensor:
        t = queries.shape[1]
        tpos = sine_embed(torch.arange(t, device=queries.device), queries.shape[-1])[None, :, None]  # 1×T×1×C
        for scan, norm in zip(self.scans, self.norms):
            queries = norm(queries + scan(queries + query_pos + tpos))
        return self.ffn(queries)
