"""Small model utilities shared by meta-architectures."""
from __future__ import annotations

import math

import torch
from torch import nn


def batchnorm_to_groupnorm(module: nn.Module, max_groups: int = 32) -> nn.Module:
    """Replace every BatchNorm2d by a GroupNorm with the same affine shape (in place; returns the module).

    Why by hand: neither timm nor torch offers BN->GN conversion. GroupNorm makes a model's output independent of
    batch composition, so 1 process with batch 2b and 2 DDP processes with batch b train identically on CPU,
    where SyncBatchNorm is unavailable.
    """
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            c = child.num_features
            groups = math.gcd(c, max_groups)
            setattr(module, name, nn.GroupNorm(groups, c, eps=child.eps, affine=child.affine))
        else:
            batchnorm_to_groupnorm(child, max_groups)
    return module


def masks_to_labels(masks: torch.Tensor) -> torch.Tensor:
    """...×K×H×W bool per-class masks (classes 1..K) -> ...×H×W long labels in 0..K (0 = background).

    masks: B×T×K×H×W (the batch layout) -> B×T×H×W.
    """
    k = masks.shape[-3]
    weights = torch.arange(1, k + 1, device=masks.device).view(k, 1, 1)
    return (masks.long() * weights).amax(-3)


def sine_embed(pos: torch.Tensor, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """Transformer sine/cosine embedding of scalar positions: (...,) float -> (..., dim), dim even."""
    if dim % 2:
        raise ValueError(f"sine embedding dimension must be even, got {dim}")
    freq = temperature ** (2 * torch.arange(dim // 2, device=pos.device).float() / dim)
    x = pos.float().unsqueeze(-1) / freq  # (..., dim/2)
    return torch.stack([x.sin(), x.cos()], -1).flatten(-2)


def _cell_angles(n: int, device=None) -> torch.Tensor:
    """Cell centres of an axis of n cells, normalised to (0, 2π)."""
    return (torch.arange(n, device=device).float() + 0.5) / n * (2 * math.pi)


def sine_pos_2d(h: int, w: int, dim: int, device=None) -> torch.Tensor:
    """DETR-style normalised 2D sine position embedding: (h·w, dim) in row-major order (y then x halves)."""
    ys, xs = _cell_angles(h, device), _cell_angles(w, device)
    half = dim // 2
    ey = sine_embed(ys, half)[:, None, :].expand(h, w, half)
    ex = sine_embed(xs, dim - half)[None, :, :].expand(h, w, dim - half)
    return torch.cat([ey, ex], -1).reshape(h * w, dim)


def sine_pos_3d(t: int, h: int, w: int, dim: int, device=None) -> torch.Tensor:
    """Normalised 3D (time, y, x) sine embedding: (t·h·w, dim), t-major. Split dim as t: dim - 2·(dim//3 rounded
    to even), y and x: dim//3 rounded down to even each."""
    dyx = (dim // 3) // 2 * 2
    dt = dim - 2 * dyx
    ts, ys, xs = _cell_angles(t, device), _cell_angles(h, device), _cell_angles(w, device)
    et = sine_embed(ts, dt)[:, None, None].expand(t, h, w, dt)
    ey = sine_embed(ys, dyx)[None, :, None].expand(t, h, w, dyx)
    ex = sine_embed(xs, dyx)[None, None, :].expand(t, h, w, dyx)
    return torch.cat([et, ey, ex], -1).reshape(t * h * w, dim)


class MLP(nn.Module):
    """Linear layers with ReLU between them: in -> hidden (× num_layers-1) -> out."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int):
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = torch.relu(x)
        return x


class PostNormAttention(nn.Module):
    """Post-norm attention block: x = LN(x + MHA(x + pos_x, mem + pos_mem, mem)); self-attention is
    ``block(x, x, pos, pos)`` (positions on queries and keys, not on values)."""

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0):
        super().__init__()
        self.attn = nn.MultiheadAttention(d_model, n_heads, dropout=dropout, batch_first=True)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x, mem, pos_x=None, pos_mem=None, attn_mask=None):
        q = x if pos_x is None else x + pos_x
        k = mem if pos_mem is None else mem + pos_mem
        return self.norm(x + self.attn(q, k, mem, attn_mask=attn_mask, need_weights=False)[0])


class FFN(nn.Module):
    """Post-norm feed-forward block: x + drop(W2 act(W1 x)), then LayerNorm."""

    def __init__(self, dim: int, hidden_dim: int, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden_dim), nn.ReLU(inplace=True), nn.Dropout(dropout),
                                 nn.Linear(hidden_dim, dim), nn.Dropout(dropout))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.net(x))


def group_norm(channels: int, max_groups: int = 32) -> nn.GroupNorm:
    """GroupNorm with the largest group count <= max_groups that divides ``channels``."""
    return nn.GroupNorm(math.gcd(channels, max_groups), channels)
