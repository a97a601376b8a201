"""LGRNet's local-global encoder (MICCAI 2024, arXiv 2407.05703, Fig. 2), built from our own kernels.

Tokens are the projected multi-scale features of every frame (coarse to fine, e.g. res5, res4, res3). Each layer,
in the paper's order:
  1. CNP: each token attends to a k×k neighbourhood of the previous frame (cyclic over the clip), per level with
     shared weights; residual + LayerNorm.
  2. Condense: n_q frame bottleneck queries cross-attend to their own frame's tokens.
  3. Hilbert selective scan over the T×n_q query grid (forward and backward along the curve).
  4. Distribute: tokens cross-attend to their own frame's queries.
  5. Multi-scale deformable self-attention within each frame.  6. FFN.   All post-norm.
Components can be switched off for the paper's ablations (``use_cnp``, ``use_scan``).
"""
from __future__ import annotations

import torch
from torch import nn

from core.registry import ENCODERS, call
from models.encoders.hilbert_scan import HilbertScanStage
from models.layers import FFN, PostNormAttention, sine_pos_2d
from models.ops.cnp import CyclicNeighbourhoodPropagation
from models.ops.ms_deform_attn import MSDeformAttn


class LocalGlobalLayer(nn.Module):
    def __init__(self, d_model: int, n_levels: int, n_heads: int = 8, ffn_dim: int = 1024, dropout: float = 0.0,
                 use_cnp: bool = True, cnp: dict | None = None, use_scan: bool = True, scan: dict | None = None,
                 deform: dict | None = None, deform_impl: str = "auto"):
        super().__init__()
        self.cnp = call(CyclicNeighbourhoodPropagation, {"n_heads": n_heads, **(cnp or {})}, d_model,
                        key="cnp") if use_cnp else None
        self.cnp_norm = nn.LayerNorm(d_model) if use_cnp else None
        self.condense = PostNormAttention(d_model, n_heads, dropout) if use_scan else None
        self.scan = call(HilbertScanStage, scan, d_model, key="scan") if use_scan else None
        self.distribute = PostNormAttention(d_model, n_heads, dropout) if use_scan else None
        self.deform = call(MSDeformAttn, {"n_heads": n_heads, "n_points": 4, **(deform or {})}, d_model,
                           key="deform", n_levels=n_levels, impl=deform_impl)
        self.deform_norm = nn.LayerNorm(d_model)
        self.ffn = FFN(d_model, ffn_dim, dropout)

    def forward(self, tokens, pos, queries, query_pos, shapes, level_start, ref_points, b, t):
        """tokens, pos: (B·T, S, C); queries: (B·T, Q, C); query_pos: (Q, C); shapes: (L, 2) (H, W) per level;
        ref_points: (B·T, S, L, 2). Returns updated (tokens, queries)."""
        if self.cnp is not None:
            levels = []
            for (h, w), start in zip(shapes.tolist(), level_start.tolist()):
                x = tokens[:, start:start + h * w].reshape(b, t, h, w, -1)  # (B, T, H, W, C)
                levels.append((x + self.cnp(x)).flatten(0, 1).flatten(1, 2))
            tokens = self.cnp_norm(torch.cat(levels, 1))
        if self.scan is not None:
            queries = self.condense(queries, tokens, pos_x=query_pos, pos_mem=pos)
            q = self.scan(queries.unflatten(0, (b, t)), query_pos).flatten(0, 1)  # (B·T, Q, C)
            queries = q
            tokens = self.distribute(tokens, queries, pos_x=pos, pos_mem=query_pos)
        tokens = self.deform_norm(tokens + self.deform(tokens + pos, ref_points, tokens, shapes, level_start))
        return self.ffn(tokens), queries


@ENCODERS.register()
class LocalGlobalEncoder(nn.Module):
    """Multi-scale frame features -> refined features of the same shapes + frame bottleneck queries.

    forward(feats: list of (B·T, C, H_l, W_l) coarse to fine, b, t) ->
        (list of (B·T, C, H_l, W_l), queries (B, T, n_q, C))
    """

    def __init__(self, d_model: int, n_levels: int = 3, num_layers: int = 3, n_heads: int = 8,
                 ffn_dim: int = 1024, dropout: float = 0.0, num_queries: int = 20, use_cnp: bool = True,
                 cnp: dict | None = None, use_scan: bool = True, scan: dict | None = None,
                 deform: dict | None = None, deform_impl: str = "auto"):
        super().__init__()
        self.d_model, self.n_levels = d_model, n_levels
        self.level_embed = nn.Parameter(torch.zeros(n_levels, d_model))
        self.query_feat = nn.Embedding(num_queries, d_model)
        self.query_embed = nn.Embedding(num_queries, d_model)
        self.layers = nn.ModuleList(
            LocalGlobalLayer(d_model, n_levels, n_heads, ffn_dim, dropout, use_cnp, cnp, use_scan, scan, deform,
                             deform_impl) for _ in range(num_layers))
        self._reset_parameters()

    def _reset_parameters(self):
        # xavier for attention/FFN matrices, except the scan's own S4D/dt initialisation (``_no_reinit``).
        for p in self.parameters():
            if p.dim() > 1 and not getattr(p, "_no_reinit", False):
                nn.init.xavier_uniform_(p)
        for m in self.modules():
            if isinstance(m, MSDeformAttn):
                m._reset_parameters()
        nn.init.normal_(self.level_embed)

    def forward(self, feats: list[torch.Tensor], b: int, t: int):
        device = feats[0].device
        shapes = torch.tensor([f.shape[-2:] for f in feats], dtype=torch.long, device=device)
        level_start = torch.cat([shapes.new_zeros(1), (shapes[:, 0] * shapes[:, 1]).cumsum(0)[:-1]])
        tokens = torch.cat([f.flatten(2).transpose(1, 2) for f in feats], 1)  # (B·T, S, C)
        pos = torch.cat([sine_pos_2d(h, w, self.d_model, device) + self.level_embed[i]
                         for i, (h, w) in enumerate(shapes.tolist())], 0)[None].to(tokens.dtype)  # (1, S, C)
        refs = []
        for h, w in shapes.tolist():
            ys = (torch.arange(h, device=device, dtype=tokens.dtype) + 0.5) / h
            xs = (torch.arange(w, device=device, dtype=tokens.dtype) + 0.5) / w
            refs.append(torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1).reshape(-1, 2))
        ref_points = torch.cat(refs, 0)[None, :, None].expand(tokens.shape[0], -1, len(feats), 2)
        queries = self.query_feat.weight[None].expand(tokens.shape[0], -1, -1)
        query_pos = self.query_embed.weight[None]
        for layer in self.layers:
            tokens, queries = layer(tokens, pos, queries, query_pos, shapes, level_start, ref_points, b, t)
        outs = [tokens[:, s:s + h * w].transpose(1, 2).reshape(-1, self.d_model, h, w)
                for (h, w), s in zip(shapes.tolist(), level_start.tolist())]
        return outs, queries.unflatten(0, (b, t))
