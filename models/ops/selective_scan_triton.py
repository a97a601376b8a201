"""Triton kernels for the selective scan (``selective_scan(..., impl="triton")``).

Imported lazily by ``models.ops.selective_scan`` only when the Triton path is requested, so importing the op never
imports triton. Hand-written because mamba-ssm's CUDA kernel cannot be imported without its extension.

Layout: one program per (batch, block of BLOCK_D channels); the (BLOCK_D, BLOCK_N) state lives in registers and the
kernel loops over L. The forward stores every state (B, D, L, N) fp32 when a gradient is needed; the backward walks L
in reverse carrying h = dL/dx_l (h_l = g_y,l·C_l + exp(Δ_{l+1}A)·h_{l+1}) and reads x_{l-1} back from those states.
B/C gradients are written per channel (B, D, L, N) and summed over their broadcast dims in PyTorch (simple, no
atomics). Accumulation is fp32 for every input dtype (fp64 inputs are computed in fp32 here).

On CPU it runs only under ``TRITON_INTERPRET=1`` (set before triton is first imported); the interpreter crashes with
more than one autotune config, so one config is used there.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from models.ops.selective_scan import ScanSpec

_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
_CONFIGS = [triton.Config({"BLOCK_D": 16}, num_warps=1)] if _INTERPRET else [
    triton.Config({"BLOCK_D": bd}, num_warps=w) for bd, w in ((16, 2), (32, 4), (64, 4))]


@triton.jit
def _block(A_ptr, D_ptr, bias_ptr, B_ptr, C_ptr, DIM, L, N, sBb, sBg, sBn, B_dpg, sCb, sCg, sCn, C_dpg,
           HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    """This program's block (batch b, BLOCK_D channels; grid = (B, ceil(D/BLOCK_D))) -> channel/state offsets
    and masks, A (BLOCK_D, BLOCK_N), D and delta_bias per channel (zeros when absent: the mask is then empty, so
    the dummy pointers are never read), the offset of (b, d, 0) in (B, D, L) and the B/C base pointers."""
    pid_b = tl.program_id(0)
    offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    md = offs_d < DIM
    mdn = md[:, None] & (offs_n < N)[None, :]
    A = tl.load(A_ptr + offs_d[:, None] * N + offs_n[None, :], mask=mdn, other=0.0)
    Dv = tl.load(D_ptr + offs_d, mask=md & HAS_D, other=0.0)
    bias = tl.load(bias_ptr + offs_d, mask=md & HAS_BIAS, other=0.0)
    row = (pid_b * DIM + offs_d).to(tl.int64) * L
    b_base = B_ptr + pid_b * sBb + (offs_d // B_dpg)[:, None] * sBg + offs_n[None, :] * sBn
    c_base = C_ptr + pid_b * sCb + (offs_d // C_dpg)[:, None] * sCg + offs_n[None, :] * sCn
    return offs_d, offs_n, md, mdn, A, Dv, bias, row, b_base, c_base


@triton.autotune(configs=_CONFIGS, key=["DIM", "N"])
@triton.jit
def _fwd_kernel(u_ptr, dt_ptr, z_ptr, bias_ptr, A_ptr, D_ptr, B_ptr, C_ptr, out_ptr, x_ptr, last_ptr,
                DIM, L, N, sBb, sBg, sBn, sBl, B_dpg, sCb, sCg, sCn, sCl, C_dpg,
                HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
                SAVE_X: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    pid_b = tl.program_id(0)
    offs_d, offs_n, md, mdn, A, Dv, bias, row, b_base, c_base = _block(
        A_ptr, D_ptr, bias_ptr, B_ptr, C_ptr, DIM, L, N, sBb, sBg, sBn, B_dpg, sCb, sCg, sCn, C_dpg,
        HAS_D, HAS_BIAS, BLOCK_N, BLOCK_D)
    x = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    for l in range(L):
        u = tl.load(u_ptr + row + l, mask=md, other=0.0)
        dt = tl.load(dt_ptr + row + l, mask=md, other=0.0)
        if HAS_BIAS:
            dt += bias
        if SOFTPLUS:
            dt = tl.where(dt <= 20.0, tl.log(1.0 + tl.exp(dt)), dt)
        Bl = tl.load(b_base + l * sBl, mask=mdn, other=0.0)
        Cl = tl.load(c_base + l * sCl, mask=mdn, other=0.0)
        x = tl.exp(dt[:, None] * A) * x + (dt * u)[:, None] * Bl
        y = tl.sum(x * Cl, axis=1)
        if HAS_D:
            y += Dv * u
        if HAS_Z:
            zz = tl.load(z_ptr + row + l, mask=md, other=0.0)
            y = y * zz * tl.sigmoid(zz)
        tl.store(out_ptr + row + l, y, mask=md)
        if SAVE_X:
            tl.store(x_ptr + (row + l)[:, None] * N + offs_n[None, :], x, mask=mdn)
    tl.store(last_ptr + ((pid_b * DIM + offs_d) * N)[:, None] + offs_n[None, :], x, mask=mdn)


@triton.autotune(configs=_CONFIGS, key=["DIM", "N"])
@triton.jit
def _bwd_kernel(u_ptr, dt_ptr, z_ptr, bias_ptr, A_ptr, D_ptr, B_ptr, C_ptr, x_ptr, gout_ptr,
                gu_ptr, gdt_ptr, gz_ptr, gA_ptr, gD_ptr, gB_ptr, gC_ptr,
                DIM, L, N, sBb, sBg, sBn, sBl, B_dpg, sCb, sCg, sCn, sCl, C_dpg,
                HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
                BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    pid_b = tl.program_id(0)
    offs_d, offs_n, md, mdn, A, Dv, bias, row, b_base, c_base = _block(
        A_ptr, D_ptr, bias_ptr, B_ptr, C_ptr, DIM, L, N, sBb, sBg, sBn, B_dpg, sCb, sCg, sCn, C_dpg,
        HAS_D, HAS_BIAS, BLOCK_N, BLOCK_D)
    h = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)  # dL/dx_l
    dA_next = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)  # exp(Δ_{l+1}·A)
    gA = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    gD = tl.zeros([BLOCK_D], dtype=tl.float32)
    for i in range(L):
        l = L - 1 - i
        u = tl.load(u_ptr + row + l, mask=md, other=0.0)
        dt_in = tl.load(dt_ptr + row + l, mask=md, other=0.0)
        if HAS_BIAS:
            dt_in += bias
        dt = dt_in
        if SOFTPLUS:
            dt = tl.where(dt_in <= 20.0, tl.log(1.0 + tl.exp(dt_in)), dt_in)
        Bl = tl.load(b_base + l * sBl, mask=mdn, other=0.0)
        Cl = tl.load(c_base + l * sCl, mask=mdn, other=0.0)
        xs = (row + l)[:, None] * N + offs_n[None, :]
        x_l = tl.load(x_ptr + xs, mask=mdn, other=0.0)
        x_p = tl.load(x_ptr + xs - N, mask=mdn & (l > 0), other=0.0)
        g = tl.load(gout_ptr + row + l, mask=md, other=0.0)
        if HAS_Z:
            zz = tl.load(z_ptr + row + l, mask=md, other=0.0)
            sz = tl.sigmoid(zz)
            pre = tl.sum(x_l * Cl, axis=1)
            if HAS_D:
                pre += Dv * u
            tl.store(gz_ptr + row + l, g * pre * sz * (1.0 + zz * (1.0 - sz)), mask=md)
            g = g * zz * sz
        h = h * dA_next + g[:, None] * Cl
        tl.store(gC_ptr + xs, g[:, None] * x_l, mask=mdn)
        dA = tl.exp(dt[:, None] * A)
        p = h * x_p * dA  # dL/d(dA_l)·dA_l
        gA += p * dt[:, None]
        hB = tl.sum(h * Bl, axis=1)
        gdt = tl.sum(p * A, axis=1) + hB * u
        gu = hB * dt
        if HAS_D:
            gD += g * u
            gu += g * Dv
        tl.store(gB_ptr + xs, h * (dt * u)[:, None], mask=mdn)
        if SOFTPLUS:
            gdt = gdt * tl.sigmoid(dt_in)
        tl.store(gdt_ptr + row + l, gdt, mask=md)
        tl.store(gu_ptr + row + l, gu, mask=md)
        dA_next = dA
    tl.store(gA_ptr + ((pid_b * DIM + offs_d) * N)[:, None] + offs_n[None, :], gA, mask=mdn)
    tl.store(gD_ptr + pid_b * DIM + offs_d, gD, mask=md)


def _bc_args(t: torch.Tensor, spec: ScanSpec):
    """fp32 contiguous B/C and its (batch, group, n, l) strides plus channels per group for the kernels."""
    t = t.float().contiguous()
    if t.dim() == 2:  # (D, N): "group" = channel
        return t, (0, t.stride(0), t.stride(1), 0, 1)
    if t.dim() == 3:  # (B, N, L): one group
        return t, (t.stride(0), 0, t.stride(1), t.stride(2), spec.dim)
    return t, (t.stride(0), t.stride(1), t.stride(2), t.stride(3), spec.dim // t.shape[1])


def _reduce_bc(g: torch.Tensor, orig: torch.Tensor, spec: ScanSpec) -> torch.Tensor:
    """Per-channel gradient (B, D, L, N) -> orig's shape and dtype."""
    if orig.dim() == 2:
        r = g.sum((0, 2))
    elif orig.dim() == 3:
        r = g.sum(1).transpose(1, 2)
    else:
        G = orig.shape[1]
        r = g.view(spec.batch, G, spec.dim // G, spec.length, spec.state).sum(2).transpose(2, 3)
    return r.to(orig.dtype)


def _f32(t):
    return None if t is None else t.float().contiguous()


class _SelectiveScanTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, softplus, spec):
        uf, df, Af, zf, Df, bf = map(_f32, (u, delta, A, z, D, delta_bias))
        Bf, bstr = _bc_args(B, spec)
        Cf, cstr = _bc_args(C, spec)
        bsz, dim, L, N = spec.batch, spec.dim, spec.length, spec.state
        save_x = any(ctx.needs_input_grad[:8])
        out = torch.empty_like(uf)
        last = uf.new_empty(bsz, dim, N)
        X = uf.new_empty(bsz, dim, L, N) if save_x else last
        grid = lambda meta: (bsz, triton.cdiv(dim, meta["BLOCK_D"]))  # noqa: E731
        _fwd_kernel[grid](uf, df, uf if zf is None else zf, uf if bf is None else bf, Af, uf if Df is None else Df,
                          Bf, Cf, out, X, last, dim, L, N, *bstr, *cstr,
                          HAS_D=Df is not None, HAS_Z=zf is not None, HAS_BIAS=bf is not None, SOFTPLUS=softplus,
                          SAVE_X=save_x, BLOCK_N=triton.next_power_of_2(N))
        ctx.mark_non_differentiable(last)
        ctx.spec, ctx.softplus, ctx.strides = spec, softplus, (bstr, cstr)
        ctx.dtypes = [t.dtype if t is not None else None for t in (u, delta, A, B, C, D, z, delta_bias)]
        ctx.save_for_backward(uf, df, Af, Bf, Cf, Df, zf, bf, X, B, C)
        return out.to(u.dtype), last

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_out, _g_last):
        uf, df, Af, Bf, Cf, Df, zf, bf, X, B, C = ctx.saved_tensors
        spec, (bstr, cstr) = ctx.spec, ctx.strides
        bsz, dim, L, N = spec.batch, spec.dim, spec.length, spec.state
        g = g_out.float().contiguous()
        gu, gdt = torch.empty_like(uf), torch.empty_like(uf)
        gz = torch.empty_like(uf) if zf is not None else gu
        gA = uf.new_empty(bsz, dim, N)
        gD = uf.new_empty(bsz, dim)
        gB, gC = torch.empty_like(X), torch.empty_like(X)
        grid = lambda meta: (bsz, triton.cdiv(dim, meta["BLOCK_D"]))  # noqa: E731
        _bwd_kernel[grid](uf, df, uf if zf is None else zf, uf if bf is None else bf, Af, uf if Df is None else Df,
                          Bf, Cf, X, g, gu, gdt, gz, gA, gD, gB, gC, dim, L, N, *bstr, *cstr,
                          HAS_D=Df is not None, HAS_Z=zf is not None, HAS_BIAS=bf is not None,
                          SOFTPLUS=ctx.softplus, BLOCK_N=triton.next_power_of_2(N))
        grads = [gu, gdt, gA.sum(0), _reduce_bc(gB, B, spec), _reduce_bc(gC, C, spec),
                 gD.sum(0) if Df is not None else None, gz if zf is not None else None,
                 gdt.sum((0, 2)) if bf is not None else None]
        grads = [None if gr is None or not need else gr.to(dt_) for gr, need, dt_ in
                 zip(grads, ctx.needs_input_grad[:8], ctx.dtypes)]
        return (*grads, None, None)


def selective_scan_triton(u, delta, A, B, C, D, z, delta_bias, delta_softplus, spec: ScanSpec):
    """Triton selective scan; shapes as ``selective_scan``. Returns (out (B, D, L) in u's dtype, last (B, D, N))."""
    if not u.is_cuda and not _INTERPRET:
        raise RuntimeError("selective_scan: impl='triton' needs CUDA tensors (or TRITON_INTERPRET=1 set before "
                           "triton is imported, to emulate on CPU)")
    return _SelectiveScanTriton.apply(u, delta, A, B, C, D, z, delta_bias, bool(delta_softplus), spec)
