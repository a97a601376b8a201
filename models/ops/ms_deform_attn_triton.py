"""Triton kernels for multi-scale deformable attention (``ms_deform_attn(..., impl="triton")``).

Imported lazily by ``models.ops.ms_deform_attn`` only when the Triton path is requested, so importing the op never
imports triton. Hand-written because the Deformable-DETR CUDA extension is not installable here.

Layout: one program per (batch n, block of BLOCK_Q queries, head m). The forward loops over levels and points,
gathers the four bilinear corners as (BLOCK_Q, BLOCK_D) tiles of Dh-vectors straight from ``value`` (N, S, M, Dh)
(zero outside the level: masked loads), and accumulates weight × coefficient × value in fp32. The backward
recomputes the same corners: grad value is scattered with ``tl.atomic_add`` into an fp32 buffer, and
d out / d coefficient = <grad_out, corner value> gives the location and weight gradients without atomics (each
(query, head, level, point) belongs to one program). Dh need not be a power of two (BLOCK_D pads, masked).
All arithmetic is fp32 (fp64 inputs are computed in fp32 here).

On CPU it runs only under ``TRITON_INTERPRET=1`` (set before triton is first imported); no autotune is used (the
interpreter crashes with more than one autotune config).
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
_BLOCK_Q = 32 if _INTERPRET else 64
_NUM_WARPS = 1 if _INTERPRET else 4


@triton.jit
def _corner(value_ptr, v_base, start, W, H, xc, yc, q_mask, offs_d, d_mask, stride_s):
    """Corner (xc, yc) of one level -> (element offsets, mask, fp32 value tile), each (BLOCK_Q, BLOCK_D); zero
    outside the level."""
    valid = q_mask & (xc >= 0) & (xc < W) & (yc >= 0) & (yc < H)
    idx = tl.where(valid, start + yc * W + xc, 0).to(tl.int64)
    offs = v_base + idx[:, None] * stride_s + offs_d[None, :]
    m2 = valid[:, None] & d_mask[None, :]
    v = tl.load(value_ptr + offs, mask=m2, other=0.0).to(tl.float32)
    return offs, m2, v


@triton.jit
def _block(S, Lq, M, Dh, BLOCK_Q: tl.constexpr, BLOCK_D: tl.constexpr):
    """This program's block: BLOCK_Q queries of sample n, head m (grid = (N·ceil(Lq/BLOCK_Q), M)) -> channel
    offsets, query/channel masks, value token stride, value base offset and the (n, q, m) rows of loc/weights/out."""
    pid_nq = tl.program_id(0)
    m = tl.program_id(1)
    n_qblocks = tl.cdiv(Lq, BLOCK_Q)
    n = pid_nq // n_qblocks
    offs_q = (pid_nq % n_qblocks) * BLOCK_Q + tl.arange(0, BLOCK_Q)
    offs_d = tl.arange(0, BLOCK_D)
    stride_s = M * Dh
    v_base = n.to(tl.int64) * S * stride_s + m * Dh
    row = (n.to(tl.int64) * Lq + offs_q) * M + m
    return offs_d, offs_q < Lq, offs_d < Dh, stride_s, v_base, row


@triton.jit
def _point(loc_ptr, w_ptr, row, k, LP, W, H, q_mask):
    """Sampling point k (= level·P + point) of each row -> (flat index, top-left corner x0, y0 (int32),
    fractions fx, fy, attention weight)."""
    lp = row * LP + k
    x = tl.load(loc_ptr + 2 * lp, mask=q_mask, other=0.0).to(tl.float32) * W.to(tl.float32) - 0.5
    y = tl.load(loc_ptr + 2 * lp + 1, mask=q_mask, other=0.0).to(tl.float32) * H.to(tl.float32) - 0.5
    aw = tl.load(w_ptr + lp, mask=q_mask, other=0.0).to(tl.float32)
    x0f = tl.floor(x)
    y0f = tl.floor(y)
    # Clamp before the int cast (far-away or NaN locations): a clamped corner is out of range anyway.
    x0 = tl.minimum(tl.maximum(x0f, -2.0), W.to(tl.float32)).to(tl.int32)
    y0 = tl.minimum(tl.maximum(y0f, -2.0), H.to(tl.float32)).to(tl.int32)
    return lp, x0, y0, x - x0f, y - y0f, aw


@triton.jit
def _fwd_kernel(value_ptr, shapes_ptr, start_ptr, loc_ptr, w_ptr, out_ptr, S, Lq, M, Dh,
                L: tl.constexpr, P: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_D: tl.constexpr):
    offs_d, q_mask, d_mask, stride_s, v_base, row = _block(S, Lq, M, Dh, BLOCK_Q, BLOCK_D)
    acc = tl.zeros([BLOCK_Q, BLOCK_D], dtype=tl.float32)
    for lvl in tl.static_range(L):
        H = tl.load(shapes_ptr + 2 * lvl)
        W = tl.load(shapes_ptr + 2 * lvl + 1)
        start = tl.load(start_ptr + lvl)
        for p in tl.static_range(P):
            _, x0, y0, fx, fy, aw = _point(loc_ptr, w_ptr, row, lvl * P + p, L * P, W, H, q_mask)
            _, _, v00 = _corner(value_ptr, v_base, start, W, H, x0, y0, q_mask, offs_d, d_mask, stride_s)
            _, _, v01 = _corner(value_ptr, v_base, start, W, H, x0 + 1, y0, q_mask, offs_d, d_mask, stride_s)
            _, _, v10 = _corner(value_ptr, v_base, start, W, H, x0, y0 + 1, q_mask, offs_d, d_mask, stride_s)
            _, _, v11 = _corner(value_ptr, v_base, start, W, H, x0 + 1, y0 + 1, q_mask, offs_d, d_mask,
                                   stride_s)
            top = v00 + (v01 - v00) * fx[:, None]
            bottom = v10 + (v11 - v10) * fx[:, None]
            acc += aw[:, None] * (top + (bottom - top) * fy[:, None])
    out_ptrs = out_ptr + row[:, None] * Dh + offs_d[None, :]
    tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=q_mask[:, None] & d_mask[None, :])


@triton.jit
def _bwd_kernel(value_ptr, shapes_ptr, start_ptr, loc_ptr, w_ptr, gout_ptr, gvalue_ptr, gloc_ptr, gw_ptr,
                S, Lq, M, Dh, L: tl.constexpr, P: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_D: tl.constexpr):
    offs_d, q_mask, d_mask, stride_s, v_base, row = _block(S, Lq, M, Dh, BLOCK_Q, BLOCK_D)
    g = tl.load(gout_ptr + row[:, None] * Dh + offs_d[None, :], mask=q_mask[:, None] & d_mask[None, :],
                other=0.0).to(tl.float32)
    for lvl in tl.static_range(L):
        H = tl.load(shapes_ptr + 2 * lvl)
        W = tl.load(shapes_ptr + 2 * lvl + 1)
        start = tl.load(start_ptr + lvl)
        for p in tl.static_range(P):
            lp, x0, y0, fx, fy, aw = _point(loc_ptr, w_ptr, row, lvl * P + p, L * P, W, H, q_mask)
            # d out / d coefficient of each corner: <g, corner value>; grad value: coefficient × g.
            p00, m00, v00 = _corner(value_ptr, v_base, start, W, H, x0, y0, q_mask, offs_d, d_mask, stride_s)
            g00 = tl.sum(g * v00, axis=1)
            tl.atomic_add(gvalue_ptr + p00, g * (aw * (1 - fx) * (1 - fy))[:, None], mask=m00)
            p01, m01, v01 = _corner(value_ptr, v_base, start, W, H, x0 + 1, y0, q_mask, offs_d, d_mask,
                                       stride_s)
            g01 = tl.sum(g * v01, axis=1)
            tl.atomic_add(gvalue_ptr + p01, g * (aw * fx * (1 - fy))[:, None], mask=m01)
            p10, m10, v10 = _corner(value_ptr, v_base, start, W, H, x0, y0 + 1, q_mask, offs_d, d_mask,
                                       stride_s)
            g10 = tl.sum(g * v10, axis=1)
            tl.atomic_add(gvalue_ptr + p10, g * (aw * (1 - fx) * fy)[:, None], mask=m10)
            p11, m11, v11 = _corner(value_ptr, v_base, start, W, H, x0 + 1, y0 + 1, q_mask, offs_d, d_mask,
                                       stride_s)
            g11 = tl.sum(g * v11, axis=1)
            tl.atomic_add(gvalue_ptr + p11, g * (aw * fx * fy)[:, None], mask=m11)
            gx0 = g00 + (g10 - g00) * fy  # column x0 interpolated along y
            gx1 = g01 + (g11 - g01) * fy
            tl.store(gw_ptr + lp, gx0 + (gx1 - gx0) * fx, mask=q_mask)
            gy0 = g00 + (g01 - g00) * fx  # row y0 interpolated along x
            gy1 = g10 + (g11 - g10) * fx
            tl.store(gloc_ptr + 2 * lp, aw * (gx1 - gx0) * W.to(tl.float32), mask=q_mask)
            tl.store(gloc_ptr + 2 * lp + 1, aw * (gy1 - gy0) * H.to(tl.float32), mask=q_mask)


def _launch_meta(value: torch.Tensor, lq: int):
    n, _, m, dh = value.shape
    grid = (n * triton.cdiv(lq, _BLOCK_Q), m)
    return grid, dict(BLOCK_Q=_BLOCK_Q, BLOCK_D=triton.next_power_of_2(dh), num_warps=_NUM_WARPS)


class _MSDeformAttnTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, value, spatial_shapes, level_start_index, loc, weights):
        value, loc, weights = value.contiguous(), loc.contiguous(), weights.contiguous()
        shapes = spatial_shapes.to(device=value.device, dtype=torch.int32).contiguous()
        starts = level_start_index.to(device=value.device, dtype=torch.int32).contiguous()
        n, s, m, dh = value.shape
        _, lq, _, n_levels, n_points, _ = loc.shape
        out = value.new_empty(n, lq, m, dh)
        grid, meta = _launch_meta(value, lq)
        _fwd_kernel[grid](value, shapes, starts, loc, weights, out, s, lq, m, dh, L=n_levels, P=n_points, **meta)
        ctx.save_for_backward(value, shapes, starts, loc, weights)
        return out.view(n, lq, m * dh)

    @staticmethod
    def backward(ctx, grad_out):
        value, shapes, starts, loc, weights = ctx.saved_tensors
        n, s, m, dh = value.shape
        _, lq, _, n_levels, n_points, _ = loc.shape
        g = grad_out.contiguous()
        grad_value = torch.zeros(value.shape, dtype=torch.float32, device=value.device)
        grad_loc = torch.empty(loc.shape, dtype=torch.float32, device=loc.device)
        grad_w = torch.empty(weights.shape, dtype=torch.float32, device=weights.device)
        grid, meta = _launch_meta(value, lq)
        _bwd_kernel[grid](value, shapes, starts, loc, weights, g, grad_value, grad_loc, grad_w, s, lq, m, dh,
                          L=n_levels, P=n_points, **meta)
        return grad_value.to(value.dtype), None, None, grad_loc.to(loc.dtype), grad_w.to(weights.dtype)


def ms_deform_attn_triton(value: torch.Tensor, spatial_shapes: torch.Tensor, level_start_index: torch.Tensor,
                          sampling_locations: torch.Tensor, attention_weights: torch.Tensor) -> torch.Tensor:
    """Triton path of ``ms_deform_attn``: same arguments and result, (N, Lq, M·Dh)."""
    return _MSDeformAttnTriton.apply(value, spatial_shapes, level_start_index, sampling_locations,
                                     attention_weights)
