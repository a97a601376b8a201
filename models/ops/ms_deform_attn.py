"""Multi-scale deformable attention (Deformable-DETR semantics): op with three paths + the nn.Module.

Why hand-written: the upstream op (``fundamentalvision/Deformable-DETR models/ops``) is a CUDA extension with no
CPU implementation and cannot be installed here; its PyTorch fallback (``ms_deform_attn_ref`` below, one
``grid_sample`` per level) is slow on CPU. So this module carries

* ``ms_deform_attn_ref``: the per-level ``grid_sample`` formulation, the ground truth for tests;
* the "cpu" path: a sparse-matrix formulation with a hand-written backward (see ``_CPUSampler``);
* the "triton" path: fused Triton kernels in ``models.ops.ms_deform_attn_triton`` (imported lazily, so importing
  this module never imports triton).

Shapes: N batch, S = Σ_l H_l·W_l value tokens, M heads, Dh channels per head, Lq queries, L levels, P points.
Sampling locations are normalised (x, y) in [0, 1] per level; bilinear sampling with zero padding and
align_corners=False (pixel centres at (i + 0.5) / W), exactly ``grid_sample(2·loc − 1, ...)``.
"""
from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import nn

IMPLS = ("auto", "ref", "cpu", "triton")


def ms_deform_attn_ref(value: torch.Tensor, spatial_shapes: torch.Tensor, sampling_locations: torch.Tensor,
                       attention_weights: torch.Tensor) -> torch.Tensor:
    """Reference: per level ``F.grid_sample(2·loc − 1, bilinear, zeros, align_corners=False)``, weight, sum.

    value (N, S, M, Dh); spatial_shapes (L, 2) as (H, W); sampling_locations (N, Lq, M, L, P, 2) as (x, y);
    attention_weights (N, Lq, M, L, P). Returns (N, Lq, M·Dh).
    """
    n, _, m, dh = value.shape
    _, lq, _, n_levels, n_points, _ = sampling_locations.shape
    shapes = [(int(h), int(w)) for h, w in spatial_shapes.tolist()]
    values = value.split([h * w for h, w in shapes], dim=1)
    grids = 2 * sampling_locations - 1
    sampled = []
    for lvl, (h, w) in enumerate(shapes):
        v = values[lvl].flatten(2).transpose(1, 2).reshape(n * m, dh, h, w)  # (N·M, Dh, H, W)
        g = grids[:, :, :, lvl].transpose(1, 2).flatten(0, 1)  # (N·M, Lq, P, 2)
        sampled.append(F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False))
    a = attention_weights.transpose(1, 2).reshape(n * m, 1, lq, n_levels * n_points)
    out = (torch.stack(sampled, dim=-2).flatten(-2) * a).sum(-1).view(n, m * dh, lq)
    return out.transpose(1, 2).contiguous()


# ---------------------------------------------------------------------------------------------------------------
# CPU path
#
# Measured alternatives at LGRNet's shapes (2 threads; see benchmarks/ops_deform.py): the grid_sample reference
# spends most of its time materialising the (N·M, Dh, Lq, L·P) samples, weighting and summing them; one grid_sample
# over all levels laid out on one canvas was only ~1.2x faster (forward+backward); gathering the 4·L·P corner rows
# per query and reducing them was slower than the reference (memory traffic of the gathered rows, and index_add_'s
# per-row cost in the backward); a sparse COO product for grad V was ~2x slower than the sorted CSR one below.
# Chosen: bilinear sampling is a sparse matrix A (rows (n, q, m), 4·L·P entries per row = weight × bilinear
# coefficient). With all levels zero-padded onto one canvas V with a common row stride Wc, corner (dy, dx) of a
# sample sits at key + dy·Wc + dx, key = its top-left corner, so
#   out = A @ V                                  (one CSR @ dense product)
#   grad coef = sampled_addmm(A's pattern, G, V^T)  (SDDMM: <G[row], V[col]> per entry) -> grad weights, locations
#   grad V[off:] += A_corner^T @ G               (per corner; the transposed pattern of all four corners comes
#                                                 from ONE argsort of the sample keys)
# Measured (2 threads, fp32): ~1.4-2x (lgrnet_tiny) and ~3-4x (paper) faster than the reference, forward and
# forward+backward (benchmarks/ops_deform.py).
# Zero padding: two zero rows/columns around every level; out-of-range corners are clamped into that border, so
# their value (and gradient contribution) is exactly zero, as with grid_sample's padding_mode="zeros".
# ---------------------------------------------------------------------------------------------------------------

_PAD = 2  # zero border around each level on the canvas: top-left corners are clamped to [-2, W] x [-2, H]


def _csr(crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """CSR matrix without invariant checks (columns within a row may repeat or be unsorted: matmul and
    sampled_addmm only sum over the stored entries) and without the one-time "beta" warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.sparse_csr_tensor(crow, col, values, size, check_invariants=False)


def _canvas_layout(shapes: list[tuple[int, int]]) -> tuple[int, int, list[int]]:
    """(canvas height, canvas width Wc, first canvas row of each level's padded block)."""
    wc = max(w for _, w in shapes) + 2 * _PAD
    rows, r = [], 0
    for h, _ in shapes:
        rows.append(r)
        r += h + 2 * _PAD
    return r, wc, rows


def _to_canvas(value: torch.Tensor, shapes: list[tuple[int, int]]) -> torch.Tensor:
    """value (N, S, M, Dh) -> (N·M·Hc·Wc, Dh): levels stacked vertically, each in a zero border (differentiable)."""
    n, _, m, dh = value.shape
    hc, wc, row0 = _canvas_layout(shapes)
    dev = value.device
    dest = torch.cat([(((torch.arange(h, device=dev) + r + _PAD) * wc)[:, None]
                       + torch.arange(_PAD, _PAD + w, device=dev)).view(-1)
                      for (h, w), r in zip(shapes, row0)])  # canvas cell of every token
    canvas = value.new_zeros(n, m, hc * wc, dh)
    canvas.index_copy_(2, dest, value.transpose(1, 2))
    return canvas.view(-1, dh)


class _CPUSampler(torch.autograd.Function):
    """canvas (C, Dh), loc (N, Lq, M, L, P, 2), weights (N, Lq, M, L, P) -> (N·Lq·M, Dh) (see the comment above).

    Rows of the sampling matrix are (n, q, m) in memory order, so the result is already (N, Lq, M, Dh).
    Few, whole-tensor passes on purpose: on a busy 2-core box every parallel op pays a thread-sync cost.
    """

    @staticmethod
    def forward(ctx, canvas, loc, weights, shapes):
        n, lq, m, n_levels, n_points, _ = loc.shape
        hc, wc, row0 = _canvas_layout(shapes)
        c_total, rows, k = canvas.shape[0], n * lq * m, n_levels * n_points
        nnz = rows * k * 4
        itype = torch.int32 if max(c_total, nnz) < 2**31 - 1 else torch.int64  # int32 CSR products are faster
        wh = loc.new_tensor(shapes).flip(-1)[:, None, :]  # (L, 1, 2) as (W, H)
        pix = torch.addcmul(loc.new_tensor(-0.5), loc, wh)  # pixel coordinates (x, y), (N, Lq, M, L, P, 2)
        corner = pix.floor()
        frac = (pix - corner).view(-1, 2)  # (samples, 2): (fx, fy)
        # Top-left corner clamped into the zero border; fmax also sends NaN there, so indices stay in range.
        corner = torch.minimum(torch.fmax(corner, loc.new_tensor(-_PAD)), wh).to(itype)
        idx = dict(dtype=itype, device=loc.device)
        base = torch.tensor([(r + _PAD) * wc + _PAD for r in row0], **idx).view(1, 1, 1, n_levels, 1) \
            + torch.arange(0, n * m * hc * wc, hc * wc, **idx).view(n, 1, m, 1, 1)
        key = torch.addcmul(corner[..., 0] + base, corner[..., 1], torch.tensor(wc, **idx)).view(-1)
        w = weights.reshape(-1)
        coefs = _corner_coefs(w, frac)  # (samples, 4)
        offsets = (0, 1, wc, wc + 1)  # corners (dy, dx) = (0, 0), (0, 1), (1, 0), (1, 1)
        col = (key[:, None] + torch.tensor(offsets, **idx)).view(-1)
        crow = torch.arange(0, nnz + 1, 4 * k, **idx)
        out = _csr(crow, col, coefs.view(-1), (rows, c_total)) @ canvas
        ctx.save_for_backward(canvas, key, crow, col, coefs, frac, w, wh)
        ctx.meta = (offsets, k, loc.shape)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        canvas, key, crow, col, coefs, frac, w, wh = ctx.saved_tensors
        offsets, k, loc_shape = ctx.meta
        g = grad_out.contiguous()
        rows, c_total = g.shape[0], canvas.shape[0]
        grad_canvas = grad_loc = grad_w = None
        if ctx.needs_input_grad[0]:
            # grad canvas = A^T @ g. The transposed pattern of the 4 corners is the top-left one shifted by the
            # corner offset, so ONE sort of the sample keys serves all four.
            perm = torch.argsort(key)
            crow_t = key.new_zeros(c_total + 1)
            torch.cumsum(torch.bincount(key, minlength=c_total), 0, out=crow_t[1:])
            col_t = torch.div(perm, k, rounding_mode="floor").to(key.dtype)  # row of the sample
            coefs_t = coefs.t()[:, perm]  # (4, samples), rows contiguous
            grad_canvas = torch.zeros_like(canvas)
            for off, coef in zip(offsets, coefs_t):
                a_t = _csr(crow_t[: c_total - off + 1], col_t, coef, (c_total - off, rows))
                grad_canvas[off:].addmm_(a_t, g)
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            # d out / d coef for every stored entry: SDDMM <g[row], canvas[col]>.
            pattern = _csr(crow, col, canvas.new_zeros(col.shape), (rows, c_total))
            gc = torch.sparse.sampled_addmm(pattern, g, canvas.t(), beta=0.0).values().view(-1, 2, 2)  # (dy, dx)
            gx = torch.lerp(gc[:, 0], gc[:, 1], frac[:, 1:])  # columns x0, x1 interpolated along y
            gy = torch.lerp(gc[:, :, 0], gc[:, :, 1], frac[:, :1])  # rows y0, y1 interpolated along x
            if ctx.needs_input_grad[2]:
                grad_w = torch.lerp(gx[:, 0], gx[:, 1], frac[:, 0]).view(loc_shape[:-1])
            if ctx.needs_input_grad[1]:
                gxy = torch.stack([gx, gy], 1)  # (samples, x/y, lo/hi)
                grad_loc = (gxy[..., 1] - gxy[..., 0]).mul_(w[:, None]).view(loc_shape).mul_(wh)
        return grad_canvas, grad_loc, grad_w, None


def _corner_coefs(w: torch.Tensor, frac: torch.Tensor) -> torch.Tensor:
    """Attention weight × bilinear coefficient: w (K,), frac (K, 2) as (fx, fy) -> (K, 4) for corners
    (dy, dx) = 00, 01, 10, 11."""
    b = torch.addcmul(frac.new_tensor([1.0, 0.0]), frac[..., None], frac.new_tensor([-1.0, 1.0]))  # (K, x/y, 2)
    return ((w[:, None] * b[:, 0])[:, None, :] * b[:, 1, :, None]).view(-1, 4)


def ms_deform_attn_cpu(value: torch.Tensor, spatial_shapes: torch.Tensor, sampling_locations: torch.Tensor,
                       attention_weights: torch.Tensor) -> torch.Tensor:
    """The "cpu" path: sparse CSR products (device-agnostic code, tested on CPU only). Same arguments and result
    as the reference.

    Mixed dtypes are promoted; half/bfloat16 are computed in float32 (the CSR kernels lack them) and cast back."""
    n, _, m, dh = value.shape
    lq = sampling_locations.shape[1]
    dtype = torch.promote_types(torch.promote_types(value.dtype, sampling_locations.dtype), attention_weights.dtype)
    compute = dtype if dtype in (torch.float32, torch.float64) else torch.float32
    shapes = [(int(h), int(w)) for h, w in spatial_shapes.tolist()]
    canvas = _to_canvas(value.to(compute), shapes)
    out = _CPUSampler.apply(canvas, sampling_locations.to(compute), attention_weights.to(compute), shapes)
    return out.view(n, lq, m * dh).to(dtype)


# ---------------------------------------------------------------------------------------------------------------
# Public op
# ---------------------------------------------------------------------------------------------------------------


def _check(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    if value.dim() != 4:
        raise ValueError(f"value must be (N, S, M, Dh), got shape {tuple(value.shape)}")
    n, s, m, _ = value.shape
    if sampling_locations.dim() != 6 or sampling_locations.shape[-1] != 2:
        raise ValueError(f"sampling_locations must be (N, Lq, M, L, P, 2), got {tuple(sampling_locations.shape)}")
    nl, lq, ml, n_levels, n_points, _ = sampling_locations.shape
    if (nl, ml) != (n, m):
        raise ValueError(f"sampling_locations {tuple(sampling_locations.shape)} do not match value "
                         f"{tuple(value.shape)}")
    if tuple(attention_weights.shape) != (n, lq, m, n_levels, n_points):
        raise ValueError(f"attention_weights must be {(n, lq, m, n_levels, n_points)}, "
                         f"got {tuple(attention_weights.shape)}")
    if tuple(spatial_shapes.shape) != (n_levels, 2):
        raise ValueError(f"spatial_shapes must be ({n_levels}, 2), got {tuple(spatial_shapes.shape)}")
    if level_start_index is not None and tuple(level_start_index.shape) != (n_levels,):
        raise ValueError(f"level_start_index must be ({n_levels},), got {tuple(level_start_index.shape)}")


#: Below this many sampling points (N·Lq·M·L·P) a forward without autograd is faster through grid_sample than
#: through building the sparse matrix (benchmarks/ops.py, 2 CPU cores: lgrnet_tiny's 0.35 M points 8.7 vs 11.7 ms;
#: the paper shape's 1.46 M points 200 vs 53 ms). With autograd the sparse path wins at both (34 vs 28, 472 vs 155).
AUTO_REF_MAX_SAMPLES = 1 << 20


def _auto_cpu(value, sampling_locations, attention_weights) -> str:
    needs_grad = torch.is_grad_enabled() and any(
        t.requires_grad for t in (value, sampling_locations, attention_weights))
    small = sampling_locations[..., 0].numel() < AUTO_REF_MAX_SAMPLES
    return "ref" if (small and not needs_grad) else "cpu"


def ms_deform_attn(value: torch.Tensor, spatial_shapes: torch.Tensor, level_start_index: torch.Tensor,
                   sampling_locations: torch.Tensor, attention_weights: torch.Tensor,
                   impl: str = "auto") -> torch.Tensor:
    """Multi-scale deformable attention sampling.

    value (N, S, M, Dh) with S = Σ H_l·W_l; spatial_shapes (L, 2) long as (H, W); level_start_index (L,) long;
    sampling_locations (N, Lq, M, L, P, 2) in [0, 1] as (x, y); attention_weights (N, Lq, M, L, P).
    Returns (N, Lq, M·Dh). impl: "auto" | "ref" | "cpu" | "triton"; auto = triton on CUDA; on CPU "cpu", except
    for small problems without autograd (fewer than ``AUTO_REF_MAX_SAMPLES`` sampling points), where "ref" is.
    Locations outside [0, 1] sample zeros (grid_sample's padding_mode="zeros"). level_start_index is read by the
    Triton path; the ref/cpu paths derive the level offsets from spatial_shapes.
    """
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    _check(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    if impl == "auto":
        impl = "triton" if value.is_cuda else _auto_cpu(value, sampling_locations, attention_weights)
    if impl == "ref":
        return ms_deform_attn_ref(value, spatial_shapes, sampling_locations, attention_weights)
    if impl == "cpu":
        return ms_deform_attn_cpu(value, spatial_shapes, sampling_locations, attention_weights)
    from models.ops.ms_deform_attn_triton import ms_deform_attn_triton  # lazy: imports triton

    return ms_deform_attn_triton(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)


# ---------------------------------------------------------------------------------------------------------------
# Module
# ---------------------------------------------------------------------------------------------------------------


class MSDeformAttn(nn.Module):
    """Deformable-DETR multi-scale deformable attention.

    Each query predicts, per head and level, ``n_points`` offsets around its reference point and a softmax over
    the L·P sampled values; ``impl`` selects the sampling path of ``ms_deform_attn``.
    """

    def __init__(self, d_model: int = 256, n_levels: int = 4, n_heads: int = 8, n_points: int = 4,
                 impl: str = "auto"):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        if impl not in IMPLS:
            raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
        self.d_model, self.n_levels, self.n_heads, self.n_points, self.impl = d_model, n_levels, n_heads, n_points, impl
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        """Published initialisation; callers re-invoke it after a global xavier init.

        Offsets: weight 0, bias = per head the direction at angle 2πh/M scaled so its larger |coordinate| is 1,
        point i scaled by (i + 1) (the same on every level). Attention weights: weight and bias 0 (uniform
        attention over L·P). value/output projections: xavier_uniform, bias 0.
        """
        nn.init.constant_(self.sampling_offsets.weight, 0.0)
        theta = torch.arange(self.n_heads, dtype=torch.float64) * (2.0 * math.pi / self.n_heads)
        grid = torch.stack([theta.cos(), theta.sin()], -1)
        grid = grid / grid.abs().max(-1, keepdim=True).values  # (M, 2)
        grid = grid.view(self.n_heads, 1, 1, 2).repeat(1, self.n_levels, self.n_points, 1)
        grid = grid * torch.arange(1, self.n_points + 1, dtype=torch.float64).view(1, 1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.reshape(-1))
        nn.init.constant_(self.attention_weights.weight, 0.0)
        nn.init.constant_(self.attention_weights.bias, 0.0)
        for proj in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(proj.weight)
            nn.init.constant_(proj.bias, 0.0)

    def forward(self, query: torch.Tensor, reference_points: torch.Tensor, input_flatten: torch.Tensor,
                input_spatial_shapes: torch.Tensor, input_level_start_index: torch.Tensor,
                input_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """query (N, Lq, C); reference_points (N, Lq, L, 2) in [0, 1] as (x, y), or (N, Lq, L, 4) boxes
        (cx, cy, w, h); input_flatten (N, S, C); input_spatial_shapes (L, 2) as (H, W);
        input_level_start_index (L,); input_padding_mask (N, S) bool, True = padding (value zeroed).
        Returns (N, Lq, C)."""
        n, lq, _ = query.shape
        s = input_flatten.shape[1]
        m, n_levels, n_points = self.n_heads, self.n_levels, self.n_points
        if input_spatial_shapes.shape[0] != n_levels:
            raise ValueError(f"expected {n_levels} levels, got spatial shapes {tuple(input_spatial_shapes.shape)}")
        value = self.value_proj(input_flatten)
        if input_padding_mask is not None:
            value = value.masked_fill(input_padding_mask[..., None], 0.0)
        value = value.view(n, s, m, self.d_model // m)
        offsets = self.sampling_offsets(query).view(n, lq, m, n_levels, n_points, 2)
        weights = self.attention_weights(query).view(n, lq, m, n_levels * n_points).softmax(-1)
        weights = weights.view(n, lq, m, n_levels, n_points)
        if reference_points.shape[-1] == 2:
            normaliser = input_spatial_shapes.flip(-1).to(offsets.dtype)  # (L, 2) as (W, H)
            locations = reference_points[:, :, None, :, None, :] + offsets / normaliser[None, None, None, :, None, :]
        elif reference_points.shape[-1] == 4:
            locations = (reference_points[:, :, None, :, None, :2]
                         + offsets / n_points * reference_points[:, :, None, :, None, 2:] * 0.5)
        else:
            raise ValueError(f"reference_points must end in 2 or 4, got {tuple(reference_points.shape)}")
        out = ms_deform_attn(value, input_spatial_shapes, input_level_start_index, locations, weights, self.impl)
        return self.output_proj(out)
