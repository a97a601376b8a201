"""Selective scan (Mamba S6): public op with a plain reference, a fast CPU path and GPU paths.

Why hand-written: mamba-ssm's ``selective_scan_fn`` needs its CUDA extension (``import mamba_ssm`` fails without
``selective_scan_cuda`` / triton on a CPU machine), so it is only used behind a guarded import on CUDA. Everything
else (the reference, the CPU path, the Triton kernels in ``selective_scan_triton``) is ours.

Shapes: u, delta, z ``(B, D, L)``; A ``(D, N)``; B, C ``(D, N)`` (shared), ``(B, N, L)`` or grouped ``(B, G, N, L)``
(channel d uses group ``d // (D / G)``); D, delta_bias ``(D,)``. Output ``(B, D, L)`` in u's dtype; last state
``(B, D, N)`` in the accumulation dtype (float32, or float64 for float64 inputs), without gradient.

Semantics: Δ = softplus(delta + bias) (or delta + bias); x_l = exp(Δ_l·A) ⊙ x_{l-1} + Δ_l·B_l·u_l, x_{-1} = 0;
y_l = Σ_n x_l·C_l; out = y + u·D; out *= silu(z) when z is given. Accumulation is float32 for bf16/fp16/fp32
inputs and float64 when any input is float64 (gradcheck).

CPU path choice (measured, fp32, B=2, D=256, N=16, fwd+bwd; ``benchmarks/ops_scan.py`` and ad-hoc runs):
a chunked sequential scan. The forward walks L in chunks of ~32 steps held in reused (c, B, G, D/G, N) buffers
that stay in cache (one fused in-place ``addcmul_`` per step; y by one batched matmul per chunk) and keeps only the
state entering each chunk; the backward recomputes a chunk's states from it and runs the hand-written reverse scan
h_l = g_y,l·C_l + exp(Δ_{l+1}A)·h_{l+1} (grad of ΔBu_l = h_l, of exp(ΔA)_l = h_l·x_{l-1}), with the other
reductions as per-chunk matmuls/einsums. At L=1024 (1 thread): ~85 ms, against ~140 ms for the same sequential
algorithm on whole (L, B, D, N) buffers (fresh 33 MB tensors cost page faults and DRAM passes) and ~240 ms for a
Blelloch parallel scan (L padded to 2^k, same analytic backward done as a reversed pscan). At L=220: 18 / 46 /
57 ms. Chunks of 16..128 steps measured equal. The reference under autograd takes 20-45 s at L=1024 here.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["selective_scan", "selective_scan_ref", "mamba_available"]

IMPLS = ("auto", "ref", "cpu", "triton", "mamba")


# ----------------------------------------------------------------------------------------------- shape checks
@dataclass(frozen=True)
class ScanSpec:
    """Sizes plus how B and C are laid out: ``kind`` 'const' ((D, N)) or 'var' ((B, G, N, L), G=1 for (B, N, L))."""
    batch: int
    dim: int
    length: int
    state: int
    kind_B: str
    groups_B: int
    kind_C: str
    groups_C: int

    @property
    def groups(self) -> int:
        """Internal group count: every var B/C group splits evenly into it (lcm of both)."""
        gb = self.groups_B if self.kind_B == "var" else 1
        gc = self.groups_C if self.kind_C == "var" else 1
        return gb * gc // math.gcd(gb, gc)


def _fail(name: str, t: Tensor, expected: str):
    raise ValueError(f"selective_scan: {name} has shape {tuple(t.shape)}, expected {expected}")


def check_shapes(u, delta, A, B, C, D=None, z=None, delta_bias=None) -> ScanSpec:
    """Validate all shapes (one-line ValueError naming the argument) and return the sizes."""
    if u.dim() != 3:
        _fail("u", u, "(B, D, L)")
    bsz, dim, length = u.shape
    if delta.shape != u.shape:
        _fail("delta", delta, f"(B, D, L)={tuple(u.shape)} like u")
    if z is not None and z.shape != u.shape:
        _fail("z", z, f"(B, D, L)={tuple(u.shape)} like u")
    if A.dim() != 2 or A.shape[0] != dim:
        _fail("A", A, f"(D, N) with D={dim}")
    n = A.shape[1]
    kinds = []
    for name, t in (("B", B), ("C", C)):
        exp = f"(D, N)={(dim, n)}, (B, N, L)={(bsz, n, length)} or (B, G, N, L) with G dividing {dim}"
        if t.dim() == 2 and tuple(t.shape) == (dim, n):
            kinds += ["const", 1]
        elif t.dim() == 3 and tuple(t.shape) == (bsz, n, length):
            kinds += ["var", 1]
        elif t.dim() == 4 and (t.shape[0], t.shape[2], t.shape[3]) == (bsz, n, length) and t.shape[1] > 0 \
                and dim % t.shape[1] == 0:
            kinds += ["var", int(t.shape[1])]
        else:
            _fail(name, t, exp)
    for name, t in (("D", D), ("delta_bias", delta_bias)):
        if t is not None and tuple(t.shape) != (dim,):
            _fail(name, t, f"({dim},)")
    if length == 0:
        raise ValueError("selective_scan: u has shape " + str(tuple(u.shape)) + ", expected L >= 1")
    return ScanSpec(bsz, dim, length, n, *kinds)


def compute_dtype(*tensors) -> torch.dtype:
    """float64 when any input is float64, else float32 (bf16/fp16/fp32 accumulate in fp32)."""
    return torch.float64 if any(t is not None and t.dtype == torch.float64 for t in tensors) else torch.float32


def _delta(delta: Tensor, delta_bias: Optional[Tensor], softplus: bool) -> Tensor:
    if delta_bias is not None:
        delta = delta + delta_bias[:, None]
    return F.softplus(delta) if softplus else delta


# ------------------------------------------------------------------------------------------------- reference
def selective_scan_ref(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                       return_last_state=False):
    """Plain sequential recurrence under autograd (the oracle). Shapes as in the module docstring.

    Precomputes exp(ΔA) and ΔBu as (B, D, L, N), loops over L updating the (B, D, N) state, stacks y_l.
    """
    spec = check_shapes(u, delta, A, B, C, D, z, delta_bias)
    dtype_in, ct = u.dtype, compute_dtype(u, delta, A, B, C, D, z, delta_bias)
    u, delta, A, B, C = (t.to(ct) for t in (u, delta, A, B, C))
    delta = _delta(delta, None if delta_bias is None else delta_bias.to(ct), delta_softplus)
    delta_A = torch.exp(torch.einsum("bdl,dn->bdln", delta, A))
    if B.dim() == 2:
        delta_B_u = torch.einsum("bdl,dn,bdl->bdln", delta, B, u)
    else:  # (B, N, L) or (B, G, N, L): give each channel its group's row
        Bc = B if B.dim() == 4 else B[:, None]
        Bc = Bc.repeat_interleave(spec.dim // Bc.shape[1], dim=1)
        delta_B_u = torch.einsum("bdl,bdnl,bdl->bdln", delta, Bc, u)
    if C.dim() != 2:
        C = C if C.dim() == 4 else C[:, None]
        C = C.repeat_interleave(spec.dim // C.shape[1], dim=1)
    x = u.new_zeros(spec.batch, spec.dim, spec.state)
    ys = []
    for i in range(spec.length):
        x = delta_A[:, :, i] * x + delta_B_u[:, :, i]
        ys.append(torch.einsum("bdn,dn->bd", x, C) if C.dim() == 2 else torch.einsum("bdn,bdn->bd", x, C[..., i]))
    out = torch.stack(ys, dim=2)
    if D is not None:
        out = out + u * D.to(ct)[:, None]
    if z is not None:
        out = out * F.silu(z.to(ct))
    out = out.to(dtype_in)
    return (out, x.detach()) if return_last_state else out


# ------------------------------------------------------------------------------------------- CPU fast path
# Internal layout: (L, B, G, K, N) with K = D / G, so every step l is one contiguous (B, D, N) block.
# B/C are either 'const' -> (G, K, N) views, or 'var' -> (L, B, G, N) with groups repeated up to G.
def _to_lbgk(t: Tensor, spec: ScanSpec) -> Tensor:
    """(B, D, L) -> contiguous (L, B, G, K)."""
    g = spec.groups
    return t.permute(2, 0, 1).reshape(spec.length, spec.batch, g, spec.dim // g).contiguous()


def _from_lbgk(t: Tensor, spec: ScanSpec) -> Tensor:
    """(L, B, G, K) -> (B, D, L)."""
    return t.reshape(spec.length, spec.batch, spec.dim).permute(1, 2, 0)


def _bc_in(t: Tensor, kind: str, spec: ScanSpec, ct) -> Tensor:
    """B or C -> internal layout: 'const' (G, K, N), 'var' (L, B, G, N)."""
    g = spec.groups
    t = t.to(ct)
    if kind == "const":
        return t.reshape(g, spec.dim // g, spec.state)
    t = t if t.dim() == 4 else t[:, None]  # (B, Gt, N, L)
    t = t.permute(3, 0, 1, 2)  # (L, B, Gt, N)
    if t.shape[2] != g:
        t = t.repeat_interleave(g // t.shape[2], dim=2)
    return t.contiguous()


def _bc_grad_out(g: Tensor, kind: str, orig: Tensor, spec: ScanSpec) -> Tensor:
    """Gradient in internal layout -> orig's shape and dtype (sums the repeated groups back)."""
    if kind == "const":
        return g.reshape(spec.dim, spec.state).to(orig.dtype)
    gt = orig.shape[1] if orig.dim() == 4 else 1
    g = g.reshape(spec.length, spec.batch, gt, spec.groups // gt, spec.state).sum(3)  # (L, B, Gt, N)
    g = g.permute(1, 2, 3, 0)
    return (g if orig.dim() == 4 else g[:, 0]).to(orig.dtype)


def _bc_chunk(t: Tensor, kind: str, s: int, e: int) -> Tensor:
    """B or C for steps [s, e), broadcastable against (n, B, G, K, N)."""
    return t if kind == "const" else t[s:e, :, :, None, :]


def _sum_n(X: Tensor, t: Tensor, kind: str, s: int, e: int) -> Tensor:
    """Σ_n X·t for X (n, B, G, K, N) and B/C t -> (n, B, G, K)."""
    if kind == "const":
        return torch.einsum("lbgkn,gkn->lbgk", X, t)
    return torch.matmul(X, t[s:e, ..., None]).squeeze(-1)


def _grad_bc(X: Tensor, v: Tensor, kind: str) -> Tensor:
    """Gradient of B/C for one chunk: Σ over what B/C broadcast across of X·v, v (n, B, G, K)."""
    if kind == "const":
        return torch.einsum("lbgkn,lbgk->gkn", X, v)
    return torch.matmul(v[..., None, :], X).squeeze(-2)  # (n, B, G, N)


def _chunk_states(dA: Tensor, X: Tensor, s: int, e: int, dt, dtu, A5, Bi, kind_B, state):
    """Fill dA = exp(Δ·A) and X = states for steps [s, e) of a chunk, given the state entering it."""
    torch.mul(dt[s:e, ..., None], A5, out=dA)
    dA.exp_()
    torch.mul(dtu[s:e, ..., None], _bc_chunk(Bi, kind_B, s, e), out=X)
    X[0].addcmul_(dA[0], state)
    for i in range(1, e - s):
        X[i].addcmul_(dA[i], X[i - 1])


def chunk_size(spec: ScanSpec) -> int:
    """Steps per chunk so that one (chunk, B, D, N) buffer holds about CHUNK_ELEMS numbers (stays in cache)."""
    return max(1, min(spec.length, CHUNK_ELEMS // (spec.batch * spec.dim * spec.state)))


CHUNK_ELEMS = 2 ** 18  # 32 steps at B·D·N = 8192; 16..128 steps measured equal, 2-4 steps up to 2x slower
# Intra-op threads inside the CPU path. One call issues ~1000 mid-sized ops; with 2 OpenMP threads on a shared
# 2-core machine every op's fork/join waits for a descheduled thread: measured 5-30x slower under load, and only
# ~25% faster when the machine is quiet (L=1024 fwd+bwd 60 vs 80 ms). None keeps torch's setting.
CPU_THREADS: Optional[int] = 1


@contextlib.contextmanager
def _threads(n: Optional[int]):
    old = torch.get_num_threads()
    if n is None or n >= old:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


class _SelectiveScanCPU(torch.autograd.Function):
    """Chunked sequential forward + analytic reverse-scan backward (see module docstring).

    Work is done chunk by chunk in reused (c, B, G, K, N) buffers (c·B·D·N ≈ CHUNK_ELEMS) that stay in cache;
    only the state entering each chunk is saved, and the backward recomputes a chunk's states from it.
    """

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, softplus, spec):
        with _threads(CPU_THREADS):
            return _SelectiveScanCPU._forward(ctx, u, delta, A, B, C, D, z, delta_bias, softplus, spec)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_out, _g_last):
        with _threads(CPU_THREADS):
            return _SelectiveScanCPU._backward(ctx, g_out)

    @staticmethod
    def _forward(ctx, u, delta, A, B, C, D, z, delta_bias, softplus, spec):
        ct = compute_dtype(u, delta, A, B, C, D, z, delta_bias)
        g, k, L = spec.groups, spec.dim // spec.groups, spec.length
        dl = delta.to(ct)
        if delta_bias is not None:
            dl = dl + delta_bias.to(ct)[:, None]
        dt = _to_lbgk(F.softplus(dl) if softplus else dl, spec)  # Δ, (L, B, G, K)
        u_ct = u.to(ct)
        ut = _to_lbgk(u_ct, spec)
        dtu = dt * ut
        A5 = A.to(ct).reshape(g, k, spec.state)
        Bi = _bc_in(B, spec.kind_B, spec, ct)
        Ci = _bc_in(C, spec.kind_C, spec, ct)
        c = chunk_size(spec)
        nch = -(-L // c)
        dA_buf = u_ct.new_empty(c, spec.batch, g, k, spec.state)
        X_buf = torch.empty_like(dA_buf)
        y = u_ct.new_empty(L, spec.batch, g, k)
        starts = u_ct.new_empty(nch, spec.batch, g, k, spec.state)  # state entering each chunk
        state = starts[0].zero_()
        for ci in range(nch):
            s, e = ci * c, min(L, ci * c + c)
            starts[ci].copy_(state)
            dA, X = dA_buf[:e - s], X_buf[:e - s]
            _chunk_states(dA, X, s, e, dt, dtu, A5, Bi, spec.kind_B, starts[ci])
            y[s:e] = _sum_n(X, Ci, spec.kind_C, s, e)
            state = X[-1]
        y = _from_lbgk(y, spec)
        pre = y + u_ct * D.to(ct)[:, None] if D is not None else y
        out = pre * F.silu(z.to(ct)) if z is not None else pre
        last = state.reshape(spec.batch, spec.dim, spec.state).clone()
        ctx.mark_non_differentiable(last)
        ctx.spec, ctx.softplus, ctx.ct = spec, softplus, ct
        ctx.has = tuple(t is not None for t in (D, z, delta_bias))
        ctx.dtypes = [t.dtype if t is not None else None for t in (u, delta, A, B, C, D, z, delta_bias)]
        ctx.save_for_backward(starts, dt, ut, dtu, Bi, Ci, A5, dl, u_ct, D, z, pre, B, C)
        return out.to(u.dtype), last

    @staticmethod
    def _backward(ctx, g_out):
        starts, dt, ut, dtu, Bi, Ci, A5, dl, u_ct, D, z, pre, B, C = ctx.saved_tensors
        spec, ct = ctx.spec, ctx.ct
        has_D, has_z, has_bias = ctx.has
        L = spec.length
        g_out = g_out.to(ct)
        g_z = None
        if has_z:
            zc = z.to(ct)
            sz = torch.sigmoid(zc)
            g_z = g_out * pre * sz * (1 + zc * (1 - sz))
            g_pre = g_out * zc * sz
        else:
            g_pre = g_out
        g_D = (g_pre * u_ct).sum((0, 2)) if has_D else None
        gy = _to_lbgk(g_pre, spec)  # dL/dy, (L, B, G, K)
        c = chunk_size(spec)
        dA_buf = starts.new_empty((c,) + starts.shape[1:])
        X_buf, H_buf = torch.empty_like(dA_buf), torch.empty_like(dA_buf)
        carry = torch.zeros_like(starts[0])  # exp(Δ_e·A)·h_e from the chunk after: adds to h_{e-1}
        g_dt, g_ut = torch.empty_like(dt), torch.empty_like(dt)
        g_A = torch.zeros_like(A5)
        g_B = torch.zeros_like(Bi)
        g_C = torch.zeros_like(Ci)
        for ci in range(starts.shape[0] - 1, -1, -1):
            s, e = ci * c, min(L, ci * c + c)
            n = e - s
            dA, X, H = dA_buf[:n], X_buf[:n], H_buf[:n]
            _chunk_states(dA, X, s, e, dt, dtu, A5, Bi, spec.kind_B, starts[ci])
            gys = gy[s:e]
            if spec.kind_C == "const":
                g_C += _grad_bc(X, gys, "const")
            else:
                g_C[s:e] = _grad_bc(X, gys, "var")
            torch.mul(gys[..., None], _bc_chunk(Ci, spec.kind_C, s, e), out=H)  # direct dL/dx_l
            H[n - 1] += carry
            for i in range(n - 2, -1, -1):  # reverse scan: h_l += exp(Δ_{l+1}A)·h_{l+1}
                H[i].addcmul_(dA[i + 1], H[i + 1])
            torch.mul(dA[0], H[0], out=carry)
            hB = _sum_n(H, Bi, spec.kind_B, s, e)  # Σ_n h·B
            if spec.kind_B == "const":
                g_B += _grad_bc(H, dtu[s:e], "const")
            else:
                g_B[s:e] = _grad_bc(H, dtu[s:e], "var")
            g_dt[s:e] = hB * ut[s:e]
            g_ut[s:e] = hB * dt[s:e]
            # P_l = dL/d(dA_l)·dA_l = h_l·x_{l-1}·dA_l, built in H's buffer
            H.mul_(dA)
            H[1:].mul_(X[:-1])
            H[0].mul_(starts[ci])
            g_dt[s:e] += torch.einsum("lbgkn,gkn->lbgk", H, A5)
            g_A += torch.einsum("lbgkn,lbgk->gkn", H, dt[s:e])
        g_delta = _from_lbgk(g_dt, spec)
        if ctx.softplus:
            g_delta = g_delta * torch.sigmoid(dl)
        g_u = _from_lbgk(g_ut, spec)
        if has_D:
            g_u = g_u + g_pre * D.to(ct)[:, None]
        g_bias = g_delta.sum((0, 2)) if has_bias else None
        g_B = _bc_grad_out(g_B, spec.kind_B, B, spec)
        g_C = _bc_grad_out(g_C, spec.kind_C, C, spec)
        grads = [g_u, g_delta, g_A.reshape(spec.dim, spec.state), g_B, g_C, g_D, g_z, g_bias]
        grads = [None if gr is None or not need else gr.to(dt_) for gr, need, dt_ in
                 zip(grads, ctx.needs_input_grad[:8], ctx.dtypes)]
        return (*grads, None, None)


def _selective_scan_cpu(u, delta, A, B, C, D, z, delta_bias, delta_softplus, spec):
    return _SelectiveScanCPU.apply(u, delta, A, B, C, D, z, delta_bias, bool(delta_softplus), spec)


# ------------------------------------------------------------------------------------------------ mamba path
_MAMBA = None  # (fn or None, reason)


def _mamba_fn():
    """mamba-ssm's CUDA ``selective_scan_fn`` or None, with the import error as the reason."""
    global _MAMBA
    if _MAMBA is None:
        try:
            from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
            _MAMBA = (selective_scan_fn, "")
        except Exception as e:  # noqa: BLE001  -- any import failure (no CUDA extension, no triton...) means absent
            _MAMBA = (None, f"{type(e).__name__}: {e}".splitlines()[0])
    return _MAMBA


def mamba_available() -> bool:
    return _mamba_fn()[0] is not None


# ---------------------------------------------------------------------------------------------- public API
def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   return_last_state=False, impl="auto"):
    """Selective scan. u, delta, z: (B, D, L); A: (D, N); B, C: (D, N), (B, N, L) or grouped (B, G, N, L)
    (channel d uses group d // (D/G)); D, delta_bias: (D,).

    Returns out (B, D, L) in u's dtype, and the last state (B, D, N) (no gradient) if return_last_state.
    impl: "auto" | "ref" | "cpu" | "triton" | "mamba". auto = mamba-ssm's selective_scan_fn when importable and
    the tensors are CUDA, else triton on CUDA, else "cpu".
    """
    if impl not in IMPLS:
        raise ValueError(f"selective_scan: impl={impl!r}, expected one of {IMPLS}")
    spec = check_shapes(u, delta, A, B, C, D, z, delta_bias)
    if impl == "auto":
        impl = ("mamba" if mamba_available() else "triton") if u.is_cuda else "cpu"
    if impl == "ref" or torch.jit.is_tracing():
        # jit tracing (fvcore FLOP counts) cannot record an autograd.Function with a non-tensor argument; the
        # reference is the same computation as plain traceable ops.
        return selective_scan_ref(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    if impl == "cpu":
        out, last = _selective_scan_cpu(u, delta, A, B, C, D, z, delta_bias, delta_softplus, spec)
    elif impl == "triton":
        from models.ops import selective_scan_triton  # lazy: importing this module must not import triton

        out, last = selective_scan_triton.selective_scan_triton(u, delta, A, B, C, D, z, delta_bias,
                                                                delta_softplus, spec)
    else:
        fn, why = _mamba_fn()
        if fn is None:
            raise RuntimeError(f"selective_scan: impl='mamba' requested but mamba_ssm is not importable ({why})")
        if not u.is_cuda:
            raise RuntimeError("selective_scan: impl='mamba' needs CUDA tensors (mamba_ssm's kernel is CUDA-only)")
        return fn(u, delta, A.float(), B, C, None if D is None else D.float(), z,
                  None if delta_bias is None else delta_bias.float(), delta_softplus, return_last_state)
    return (out, last) if return_last_state else out
