"""Cyclic Neighbourhood Propagation (LGRNet's CNP): neighbourhood attention from each frame to the previous one.

The op is NATTEN's 2D neighbourhood attention (NA). NATTEN ships CUDA kernels only (no CPU wheels here, and its
API changed across 0.15 / 0.17 / 0.20), so the op is written here in plain PyTorch, with no Python loop over
pixels. Default ("tiled") path: queries are cut into small b x b tiles; each tile attends with
``F.scaled_dot_product_attention`` to the (b + k - 1)^2 key region that holds all its windows, under a boolean
window mask. That is a few more FLOPs than k^2 per query but runs as real matmuls and copies K / V only
~((b + k - 1) / b)^2 times; on CPU it was 5-8x faster than the straightforward "gather" path (index_select of
every k x k window, softmax, weighted sum: K / V copied k^2 times), which is kept as a second formulation, as is
"dense" (full attention, -inf outside the windows). On CUDA, when ``import natten`` works and no relative
position bias is used, the fused ``natten.functional.na2d`` is used (guarded import; never required, and untested
here: no GPU / natten in this environment).

NATTEN window rule (per axis; ``natten_window_starts``)
-------------------------------------------------------
With kernel k (odd), dilation d and axis length L (requires k * d <= L), position i belongs to dilation group
r = i % d, the sub-sequence r, r + d, r + 2d, ... of length L_r = ceil((L - r) / d). Within its group, i is the
m-th element (m = i // d) and its window is the k consecutive group elements starting at
    m0 = min(max(m - k // 2, 0), L_r - k),
i.e. centred on i when possible and *shifted* (not padded) at the borders so every query sees exactly k keys per
axis; in grid units the keys are r + d * (m0 + 0..k-1). This equals NATTEN's ``get_window_start`` (its dilation
branch, "phase-aligned"; checked against a transcription of that formula in the tests). The 2D window is the
product of the H and W windows. The optional relative position bias (RPB, NATTEN ``bias=True``) is a learned table
(heads, 2k - 1, 2k - 1) indexed by ((key - query) / d + k - 1) per axis.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["natten_window_starts", "natten_window_index", "neighbourhood_attention",
           "neighbourhood_attention_dense", "neighbourhood_attention_reference", "effective_kernel",
           "CyclicNeighbourhoodPropagation"]

try:  # optional fused CUDA kernels; the pure PyTorch path is always available
    import natten as _natten  # type: ignore
    _na2d = getattr(getattr(_natten, "functional", None), "na2d", None)
except Exception:  # noqa: BLE001 - any import failure (missing wheel, CUDA mismatch) means "no natten"
    _na2d = None


def _check(length_h: int, length_w: int, kernel_size: int, dilation: int) -> None:
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"neighbourhood attention: kernel_size must be odd and >= 1, got {kernel_size}")
    if dilation < 1:
        raise ValueError(f"neighbourhood attention: dilation must be >= 1, got {dilation}")
    if kernel_size * dilation > min(length_h, length_w):
        raise ValueError(f"neighbourhood attention: kernel_size*dilation = {kernel_size}*{dilation} exceeds the "
                         f"feature map {length_h}x{length_w}")


def natten_window_starts(length: int, kernel_size: int, dilation: int = 1) -> torch.Tensor:
    """First key position of each query's window along one axis (LongTensor (length,)); rule in the module doc.
    Requires kernel_size odd and kernel_size * dilation <= length."""
    _check(length, length, kernel_size, dilation)
    i = torch.arange(length)
    r, m = i % dilation, i // dilation
    group_len = (length - r + dilation - 1) // dilation
    m0 = torch.minimum((m - kernel_size // 2).clamp(min=0), group_len - kernel_size)
    return r + dilation * m0


def natten_window_index(length: int, kernel_size: int, dilation: int = 1) -> torch.Tensor:
    """Key positions of every window along one axis: LongTensor (length, kernel_size)."""
    starts = natten_window_starts(length, kernel_size, dilation)
    return starts[:, None] + dilation * torch.arange(kernel_size)


def _rpb_index(length: int, kernel_size: int, dilation: int) -> torch.Tensor:
    """(length, kernel_size) index into the 2k - 1 RPB axis: (key - query) / dilation + k - 1."""
    idx = natten_window_index(length, kernel_size, dilation)
    return torch.div(idx - torch.arange(length)[:, None], dilation, rounding_mode="floor") + kernel_size - 1


def _rpb_window(rpb: torch.Tensor, h: int, w: int, kernel_size: int, dilation: int) -> torch.Tensor:
    """Bias of every (query, window key) pair: (heads, H, W, k, k) from the table (heads, 2K - 1, 2K - 1), K >= k
    (a clamped kernel uses the centre of a larger table)."""
    off = (rpb.shape[-1] + 1) // 2 - kernel_size  # centre offset when the table is larger than the window
    ih = (_rpb_index(h, kernel_size, dilation) + off).to(rpb.device)
    iw = (_rpb_index(w, kernel_size, dilation) + off).to(rpb.device)
    return rpb[:, ih[:, None, :, None], iw[None, :, None, :]]


PATHS = ("auto", "tiled", "gather", "dense", "natten")


def _tile_size(kernel_size: int) -> int:
    """Queries per tile side of the tiled path: k + 1 (>= 4). On CPU (2 threads) tiles of 4..8 were within ~20%
    of each other at 16x16 and 44x44, the larger ones better for larger kernels; 2 and 12+ were clearly slower."""
    return max(4, kernel_size + 1)


@functools.lru_cache(maxsize=64)
def _flat_window_index(h: int, w: int, kernel_size: int, dilation: int) -> torch.Tensor:
    """Flat key index (i * W + j) of every query's window, row-major over (query, window): (H * W * k * k,)."""
    ih, iw = natten_window_index(h, kernel_size, dilation), natten_window_index(w, kernel_size, dilation)
    return (ih[:, None, :, None] * w + iw[None, :, None, :]).reshape(-1)


def _na_gather(q, k, v, kernel_size, dilation, scale, rpb):
    """Window-gather NA: K / V windows (B, nh, H, W, k*k, dh) by one index_select each."""
    B, nh, H, W, dh = q.shape
    kk = kernel_size * kernel_size
    idx = _flat_window_index(H, W, kernel_size, dilation).to(q.device)
    k_win = k.reshape(B, nh, H * W, dh).index_select(2, idx).view(B, nh, H, W, kk, dh)
    v_win = v.reshape(B, nh, H * W, dh).index_select(2, idx).view(B, nh, H, W, kk, dh)
    # a broadcast product, not a matmul: CPU bmm over (1 x dh) @ (dh x k^2) matrices loops per batch element
    logits = (q.unsqueeze(-2) * scale * k_win).sum(-1)  # (B, nh, H, W, k*k)
    if rpb is not None:
        logits = logits + _rpb_window(rpb, H, W, kernel_size, dilation).flatten(-2).to(logits.dtype)
    return (logits.softmax(-1).unsqueeze(-1) * v_win).sum(-2)


@functools.lru_cache(maxsize=64)
def _axis_tiles(length: int, kernel_size: int, dilation: int, tile: int):
    """Tiling of one axis for the tiled path. Each dilation group (r, r + d, ...) is cut into tiles of ``b``
    consecutive group members (the last tile padded by repeating the group's last member); the keys of a tile's
    windows lie in ``R = b + k - 1`` consecutive group members. Returns (qpos (n_tiles, b), kpos (n_tiles, R),
    valid (n_tiles, b, R): key in the query's window, slot (length,): flat (tile * b + u) position of each
    query's first occurrence)."""
    ks = kernel_size
    groups = [torch.arange(r, length, dilation) for r in range(dilation)]
    b = max(1, min(tile, min(len(g) for g in groups) - ks + 1))
    R = b + ks - 1
    qpos, kpos, valid = [], [], []
    for g in groups:
        n = len(g)
        m = torch.arange(-(-n // b) * b).view(-1, b).clamp(max=n - 1)  # group-member index of each query slot
        m0 = (m - ks // 2).clamp(min=0).clamp(max=n - ks)  # window start (group coords), monotone in m
        c = m0[:, 0].clamp(max=n - R)  # region start: holds every window of the tile, stays inside the group
        km = c[:, None] + torch.arange(R)
        off = km[:, None, :] - m0[:, :, None]
        valid.append((off >= 0) & (off < ks))
        qpos.append(g[m])
        kpos.append(g[km])
    qpos, kpos, valid = torch.cat(qpos), torch.cat(kpos), torch.cat(valid)
    slot = torch.empty(length, dtype=torch.long)
    flat = qpos.flatten()
    slot[flat.flip(0)] = torch.arange(flat.numel() - 1, -1, -1)  # first occurrence wins (last write)
    return qpos, kpos, valid, slot


def _na_tiled(q, k, v, kernel_size, dilation, scale, rpb, tile=None):
    """Blocked NA: queries in b x b tiles (per dilation group), each tile attends densely, under a window mask,
    to the R x R key region holding all its windows (R = b + k - 1): few large matmuls in
    ``scaled_dot_product_attention`` instead of one tiny product per query, and K / V copied ~(R / b)^2 times
    instead of k^2 times."""
    B, nh, H, W, dh = q.shape
    tile = tile or _tile_size(kernel_size)
    qh, kh, vh, sh = _axis_tiles(H, kernel_size, dilation, tile)
    qw, kw, vw, sw = _axis_tiles(W, kernel_size, dilation, tile)
    th, bh, rh = kh.shape[0], qh.shape[1], kh.shape[1]
    tw, bw, rw = kw.shape[0], qw.shape[1], kw.shape[1]
    dev = q.device
    qidx = (qh[:, None, :, None] * W + qw[None, :, None, :]).reshape(-1).to(dev)  # (th, tw, bh, bw)
    kidx = (kh[:, None, :, None] * W + kw[None, :, None, :]).reshape(-1).to(dev)  # (th, tw, rh, rw)
    mask = (vh[:, None, :, None, :, None] & vw[None, :, None, :, None, :]).reshape(th * tw, bh * bw, rh * rw)
    mask = mask.to(dev)
    if rpb is not None:
        off = (rpb.shape[-1] + 1) // 2 - 1  # index of relative offset 0 in the table
        rel_h = torch.div(kh[:, None, :] - qh[:, :, None], dilation, rounding_mode="floor") + off  # (th, bh, rh)
        rel_w = torch.div(kw[:, None, :] - qw[:, :, None], dilation, rounding_mode="floor") + off
        rel_h = rel_h.clamp(0, rpb.shape[-2] - 1).to(dev)  # out-of-window pairs are masked anyway
        rel_w = rel_w.clamp(0, rpb.shape[-1] - 1).to(dev)
        bias = rpb[:, rel_h[:, None, :, None, :, None], rel_w[None, :, None, :, None, :]]
        bias = bias.reshape(nh, th * tw, bh * bw, rh * rw).to(q.dtype)
        mask = bias.masked_fill(~mask, float("-inf")).reshape(1, nh * th * tw, bh * bw, rh * rw)
    else:
        mask = mask[None].expand(nh, -1, -1, -1).reshape(1, nh * th * tw, bh * bw, rh * rw)
    nt = th * tw
    qt = q.reshape(B, nh, H * W, dh).index_select(2, qidx).view(B, nh * nt, bh * bw, dh)
    kt = k.reshape(B, nh, H * W, dh).index_select(2, kidx).view(B, nh * nt, rh * rw, dh)
    vt = v.reshape(B, nh, H * W, dh).index_select(2, kidx).view(B, nh * nt, rh * rw, dh)
    out = F.scaled_dot_product_attention(qt, kt, vt, attn_mask=mask, scale=scale)  # (B, nh*nt, bh*bw, dh)
    # slot of query (i, j): tile (t_h, t_w) and in-tile (u_h, u_w), from the per-axis flat slots
    sh_t, sh_u = sh // bh, sh % bh
    sw_t, sw_u = sw // bw, sw % bw
    slot = ((sh_t[:, None] * tw + sw_t[None, :]) * bh + sh_u[:, None]) * bw + sw_u[None, :]  # (H, W)
    out = out.reshape(B, nh, nt * bh * bw, dh).index_select(2, slot.reshape(-1).to(dev))
    return out.view(B, nh, H, W, dh)


def _na_natten(q, k, v, kernel_size, dilation, scale):
    # natten >= 0.17 fused op, layout (B, H, W, heads, dh)
    out = _na2d(*(t.permute(0, 2, 3, 1, 4) for t in (q, k, v)), kernel_size=kernel_size, dilation=dilation,
                scale=scale)
    return out.permute(0, 3, 1, 2, 4)


def neighbourhood_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kernel_size: int,
                            dilation: int = 1, scale: float | None = None,
                            rpb: torch.Tensor | None = None, path: str = "auto") -> torch.Tensor:
    """2D neighbourhood attention with NATTEN semantics.

    q, k, v: (B, heads, H, W, dh); query (i, j) attends to the kernel_size^2 keys of k/v in its window (module
    doc). scale: logit scale, default dh ** -0.5. rpb: optional relative position bias (heads, 2K-1, 2K-1),
    K >= kernel_size. Returns (B, heads, H, W, dh). Raises ValueError for an even kernel or
    kernel_size * dilation > min(H, W).
    path: "tiled" (query tiles attend to their key region under a window mask; module doc), "gather"
    (index_select of every window, then softmax and weighted sum: O(H W k^2 dh) memory, slower), "dense"
    (``neighbourhood_attention_dense``), "natten" (fused CUDA op; needs natten, CUDA tensors, no rpb), or "auto":
    natten when usable, else tiled. All paths agree to rounding (tested in float64)."""
    B, nh, H, W, dh = q.shape
    _check(H, W, kernel_size, dilation)
    if path not in PATHS:
        raise ValueError(f"neighbourhood attention: path must be one of {PATHS}, got {path!r}")
    scale = dh ** -0.5 if scale is None else scale
    natten_ok = _na2d is not None and q.is_cuda and rpb is None
    if path == "natten" and not natten_ok:
        raise ValueError("neighbourhood attention: path 'natten' needs natten installed, CUDA tensors and no rpb")
    if path == "natten" or (path == "auto" and natten_ok):
        try:
            return _na_natten(q, k, v, kernel_size, dilation, scale)
        except Exception:  # noqa: BLE001 - unsupported natten version/dtype/arch: use the PyTorch paths
            if path == "natten":
                raise
    if path == "dense":
        return neighbourhood_attention_dense(q, k, v, kernel_size, dilation, scale, rpb)
    if path == "gather":
        return _na_gather(q, k, v, kernel_size, dilation, scale, rpb)
    return _na_tiled(q, k, v, kernel_size, dilation, scale, rpb)


def neighbourhood_attention_dense(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kernel_size: int,
                                  dilation: int = 1, scale: float | None = None,
                                  rpb: torch.Tensor | None = None) -> torch.Tensor:
    """Same result as ``neighbourhood_attention`` via full attention over all H*W keys with a -inf mask outside
    each window (``F.scaled_dot_product_attention``). O((H*W)^2) per head: a second reference, and competitive
    on tiny maps. Shapes as ``neighbourhood_attention``."""
    B, nh, H, W, dh = q.shape
    _check(H, W, kernel_size, dilation)
    scale = dh ** -0.5 if scale is None else scale
    key = _flat_window_index(H, W, kernel_size, dilation).to(q.device).view(H * W, -1)  # (HW, k*k) key index
    bias = torch.full((nh if rpb is not None else 1, H * W, H * W), float("-inf"), dtype=q.dtype, device=q.device)
    if rpb is None:
        val = torch.zeros_like(key, dtype=q.dtype)[None]
    else:
        val = _rpb_window(rpb, H, W, kernel_size, dilation).reshape(nh, H * W, -1).to(q.dtype)
    bias = bias.scatter(-1, key[None].expand(bias.shape[0], -1, -1), val)
    out = F.scaled_dot_product_attention(q.flatten(2, 3), k.flatten(2, 3), v.flatten(2, 3), attn_mask=bias,
                                         scale=scale)
    return out.view(B, nh, H, W, dh)


def _natten_start_scalar(index: int, length: int, kernel_size: int, dilation: int) -> int:
    """NATTEN's get_window_start formula transcribed for one position (independent of the vectorized rule)."""
    ns = kernel_size // 2
    if dilation <= 1:
        return max(index - ns, 0) + (length - index - ns - 1 if index + ns >= length else 0)
    if index - ns * dilation < 0:
        return index % dilation
    if index + ns * dilation >= length:
        imodd = index % dilation
        a = (length // dilation) * dilation
        b = length - a
        if imodd < b:
            return length - b + imodd - 2 * ns * dilation
        return a + imodd - kernel_size * dilation
    return index - ns * dilation


def neighbourhood_attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kernel_size: int,
                                      dilation: int = 1, scale: float | None = None,
                                      rpb: torch.Tensor | None = None) -> torch.Tensor:
    """Brute-force reference: a Python loop over query positions, each window built explicitly from the scalar
    NATTEN formula, then softmax attention. Slow (use on small maps, float64). Shapes as above."""
    B, nh, H, W, dh = q.shape
    _check(H, W, kernel_size, dilation)
    scale = dh ** -0.5 if scale is None else scale
    kk = kernel_size
    out = torch.empty_like(q)
    for i in range(H):
        si = _natten_start_scalar(i, H, kk, dilation)
        rows = torch.tensor([si + dilation * a for a in range(kk)]).repeat_interleave(kk)  # (k*k,) row-major
        for j in range(W):
            sj = _natten_start_scalar(j, W, kk, dilation)
            cols = torch.tensor([sj + dilation * c for c in range(kk)]).repeat(kk)
            keys, vals = k[:, :, rows, cols], v[:, :, rows, cols]  # (B, nh, k*k, dh)
            logit = (keys * q[:, :, i, j, None]).sum(-1) * scale  # (B, nh, k*k)
            if rpb is not None:
                off = (rpb.shape[-1] + 1) // 2 - kk
                logit = logit + rpb[:, (rows - i) // dilation + kk - 1 + off, (cols - j) // dilation + kk - 1 + off]
            out[:, :, i, j] = (logit.softmax(-1)[..., None] * vals).sum(2)
    return out


def effective_kernel(h: int, w: int, kernel_size: int, dilation: int) -> tuple[int, int]:
    """(kernel, dilation) actually used on an h x w map: the largest odd kernel <= kernel_size with
    kernel * dilation <= min(h, w); a kernel of 1 (only when even 1 * dilation does not fit) uses dilation 1."""
    kk = kernel_size
    while kk > 1 and kk * dilation > min(h, w):
        kk -= 2
    return kk, (dilation if kk > 1 else 1)


class CyclicNeighbourhoodPropagation(nn.Module):
    """CNP: every token of frame t attends to the k x k NATTEN window around its position in frame t - 1.

    d_model: channels C (divisible by n_heads). kernel_size (odd), dilation: NATTEN window. cyclic: frame 0
    attends to frame T - 1 (LGRNet: ``torch.roll`` over T) if True, else to itself. bias: NATTEN's ``bias``, a
    learned relative position bias (LGRNet: False). qkv_bias: bias of the q / kv projections (LGRNet: False);
    the output projection always has a bias (as NATTEN / LGRNet). small_maps: what to do when
    kernel_size * dilation exceeds a map (LGRNet shares one module over 3 levels; the coarsest can be 4x4):
    "clamp" (default) uses ``effective_kernel``, the largest odd kernel that fits (same dilation);
    "pad" reproduces LGRNet: zero-pad the map bottom/right up to kernel_size * dilation before the
    projections, attend with the full kernel (padded keys project to 0 without qkv_bias, so they take softmax
    weight with logit 0 and value 0), crop the output.

    forward(x): x (B, T, H, W, C) -> (B, T, H, W, C). q from frame t, k / v from frame t - 1, out projection;
    no residual or norm (the caller adds them)."""

    def __init__(self, d_model: int, n_heads: int = 8, kernel_size: int = 5, dilation: int = 1,
                 cyclic: bool = True, bias: bool = False, qkv_bias: bool = False, small_maps: str = "clamp"):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"CNP: d_model {d_model} is not divisible by n_heads {n_heads}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"CNP: kernel_size must be odd and >= 1, got {kernel_size}")
        if dilation < 1:
            raise ValueError(f"CNP: dilation must be >= 1, got {dilation}")
        if small_maps not in ("clamp", "pad"):
            raise ValueError(f"CNP: small_maps must be 'clamp' or 'pad', got {small_maps!r}")
        self.d_model, self.n_heads, self.head_dim = d_model, n_heads, d_model // n_heads
        self.kernel_size, self.dilation, self.cyclic, self.small_maps = kernel_size, dilation, cyclic, small_maps
        self.q_proj = nn.Linear(d_model, d_model, bias=qkv_bias)
        self.kv_proj = nn.Linear(d_model, 2 * d_model, bias=qkv_bias)
        self.out_proj = nn.Linear(d_model, d_model)
        if bias:
            self.rpb = nn.Parameter(torch.zeros(n_heads, 2 * kernel_size - 1, 2 * kernel_size - 1))
            nn.init.trunc_normal_(self.rpb, std=0.02, a=-2.0, b=2.0)
        else:
            self.register_parameter("rpb", None)

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, n_heads={self.n_heads}, kernel_size={self.kernel_size}, "
                f"dilation={self.dilation}, cyclic={self.cyclic}, rpb={self.rpb is not None}, "
                f"small_maps={self.small_maps}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, H, W, C = x.shape
        kk, dil = self.kernel_size, self.dilation
        pad_h = pad_w = 0
        if kk * dil > min(H, W):
            if self.small_maps == "clamp":
                kk, dil = effective_kernel(H, W, kk, dil)
            else:
                pad_h, pad_w = max(0, kk * dil - H), max(0, kk * dil - W)
                x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
        Hp, Wp = H + pad_h, W + pad_w
        q = self.q_proj(x)
        kv = self.kv_proj(x)  # projecting then shifting frames == shifting then projecting (per-token linear)
        if self.cyclic:
            kv = torch.roll(kv, shifts=1, dims=1)  # kv[t] <- kv[t - 1], kv[0] <- kv[T - 1]
        else:
            kv = torch.cat([kv[:, :1], kv[:, :-1]], dim=1)  # kv[0] stays frame 0's own
        nh, dh = self.n_heads, self.head_dim
        q = q.reshape(B * T, Hp, Wp, nh, dh).permute(0, 3, 1, 2, 4)
        kv = kv.reshape(B * T, Hp, Wp, 2, nh, dh).permute(3, 0, 4, 1, 2, 5)
        out = neighbourhood_attention(q, kv[0], kv[1], kk, dil, scale=dh ** -0.5, rpb=self.rpb)
        out = out.permute(0, 2, 3, 1, 4).reshape(B, T, Hp, Wp, C)
        if pad_h or pad_w:
            out = out[:, :, :H, :W]
        return self.out_proj(out)

