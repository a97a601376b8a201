"""The decoder-only transformer of AR-SEG (REFERENCE §5.6): one stack of pre-norm blocks over
``[image-patch prefix | mask tokens]``. The prefix attends bidirectionally to itself only (so its keys and values
never depend on the mask tokens and can be cached once); mask tokens attend to the whole prefix and, in the causal
order, to themselves and earlier mask tokens, or, in the ``parallel`` control, to every mask token.

Decoding with a KV cache feeds one mask token per step and gives the same logits as the uncached full pass
(``tests/models/test_arseg.py``). Written here rather than taken from a library: timm's and torch's transformer
blocks have no incremental key/value cache and no prefix-LM mask, and the HF decoders are far larger than 2 M
parameters and assume text embeddings.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ORDERS = ("causal", "parallel")


def prefix_lm_mask(prefix: int, tokens: int, order: str = "causal", device=None) -> torch.Tensor:
    """(P+M)×(P+M) bool, True = may attend: the prefix sees the prefix; mask tokens see the prefix and (causal)
    themselves and earlier mask tokens, or (parallel) all mask tokens."""
    n = prefix + tokens
    allowed = torch.zeros(n, n, dtype=torch.bool, device=device)
    allowed[:, :prefix] = True
    if order == "causal":
        allowed[prefix:, prefix:] = torch.ones(tokens, tokens, dtype=torch.bool, device=device).tril()
    else:
        allowed[prefix:, prefix:] = True
    return allowed


class KVCache:
    """One layer's keys and values, preallocated for ``capacity`` positions (appending by concatenation copied
    the whole cache at every step: a quarter of the decoding time)."""

    def __init__(self, capacity: int):
        self.capacity, self.length, self.k, self.v = capacity, 0, None, None

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """k, v N×H×L×E -> every key and value so far (views)."""
        if self.k is None:
            shape = (*k.shape[:2], self.capacity, k.shape[-1])
            self.k, self.v = k.new_empty(shape), v.new_empty(shape)
        end = self.length + k.shape[2]
        if end > self.capacity:
            raise ValueError(f"KV cache full: {end} positions > capacity {self.capacity}")
        self.k[:, :, self.length:end], self.v[:, :, self.length:end] = k, v
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor | None, cache: KVCache | None = None) -> torch.Tensor:
        """x N×L×D; allowed L×S bool (S = cached + L keys) or None (all); cache: this layer's, extended."""
        n, length, d = x.shape
        q, k, v = self.qkv(x).view(n, length, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        if cache is not None:
            k, v = cache.append(k, v)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        return self.proj(out.transpose(1, 2).reshape(n, length, d))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x, allowed, cache=None):
        x = x + self.attn(self.norm1(x), allowed, cache)
        return x + self.mlp(self.norm2(x))


class PrefixDecoder(nn.Module):
    """``depth`` blocks of width ``dim``; ``forward`` runs a whole sequence, ``prefill`` / ``step`` the cached
    decoding."""

    def __init__(self, dim: int = 160, depth: int = 6, heads: int = 5, mlp_ratio: float = 3.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, prefix: torch.Tensor, tokens: torch.Tensor, order: str = "causal") -> torch.Tensor:
        """prefix N×P×D, tokens N×M×D -> N×M×D (the mask positions' outputs)."""
        p, m = prefix.shape[1], tokens.shape[1]
        allowed = prefix_lm_mask(p, m, order, prefix.device)
        x = torch.cat([prefix, tokens], 1)
        for block in self.blocks:
            x = block(x, allowed)
        return self.norm(x[:, p:])

    def prefill(self, prefix: torch.Tensor, first: torch.Tensor, capacity: int) -> tuple[torch.Tensor, list]:
        """The prefix (N×P×D) and the first mask token (N×1×D, BOS) -> (its output N×1×D, the caches, room for
        ``capacity`` mask tokens)."""
        caches = [KVCache(prefix.shape[1] + capacity) for _ in self.blocks]
        p = prefix.shape[1]
        allowed = prefix_lm_mask(p, 1, "causal", prefix.device)
        x = torch.cat([prefix, first], 1)
        for block, cache in zip(self.blocks, caches):
            x = block(x, allowed, cache)
        return self.norm(x[:, p:]), caches

    def step(self, token: torch.Tensor, caches: list) -> torch.Tensor:
        """The next mask token N×1×D -> its output N×1×D; it attends to everything cached (causal)."""
        x = token
        for block, cache in zip(self.blocks, caches):
            x = block(x, None, cache)
        return self.norm(x)
