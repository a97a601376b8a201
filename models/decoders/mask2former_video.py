"""Mask2Former-style video decoder (Cheng et al., CVPR 2022; video variant arXiv 2112.10764) as used by LGRNet.

Q video-level queries each predict a class and one mask tube over the clip's T frames. Each layer does masked
cross-attention to one level of the encoder's features (coarse to fine, round robin) over all T frames at once
(3D sine position), then self-attention among queries, then an FFN (post-norm). The attention mask is where the
previous layer's predicted mask has sigmoid < 0.5 (rows that would mask everything are left unmasked); the
original code compared raw logits with 0.5 (REFERENCE.md §3.8 item 2), which we do not repeat.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from core.registry import DECODERS
from models.layers import FFN, MLP, PostNormAttention, sine_pos_3d


@DECODERS.register()
class VideoMask2FormerDecoder(nn.Module):
    """forward(feats: list of (B·T, C, H_l, W_l) coarse to fine, mask_features (B·T, C, H4, W4), b, t) ->
    {"pred_logits": (B, Q, K+1), "pred_masks": (B, Q, T, H4, W4), "aux_outputs": [dict, ...]} where the aux
    outputs are the predictions before the first layer and after every layer but the last."""

    def __init__(self, d_model: int, num_classes: int, num_queries: int = 10, n_heads: int = 8,
                 ffn_dim: int = 2048, num_layers: int = 3, n_levels: int = 3, dropout: float = 0.0):
        super().__init__()
        self.num_layers, self.n_levels, self.n_heads = num_layers, n_levels, n_heads
        self.query_feat = nn.Embedding(num_queries, d_model)
        self.query_embed = nn.Embedding(num_queries, d_model)
        self.level_embed = nn.Embedding(n_levels, d_model)
        self.cross = nn.ModuleList(PostNormAttention(d_model, n_heads, dropout) for _ in range(num_layers))
        self.self_attn = nn.ModuleList(PostNormAttention(d_model, n_heads, dropout) for _ in range(num_layers))
        self.ffn = nn.ModuleList(FFN(d_model, ffn_dim, dropout) for _ in range(num_layers))
        self.norm = nn.LayerNorm(d_model)
        self.class_embed = nn.Linear(d_model, num_classes + 1)
        self.mask_embed = MLP(d_model, d_model, d_model, 3)

    def _predict(self, queries, mask_features, target_size):
        """queries (B, Q, C), mask_features (B, T, C, h, w) -> logits (B, Q, K+1), masks (B, Q, T, h, w), and the
        attention mask (B·heads, Q, T·H'·W') for the next level (True = not attended)."""
        x = self.norm(queries)
        logits = self.class_embed(x)
        masks = torch.einsum("bqc,btchw->bqthw", self.mask_embed(x), mask_features)
        b, q, t = masks.shape[:3]
        small = F.interpolate(masks.flatten(1, 2), size=target_size, mode="bilinear", align_corners=False)
        attn = (small.sigmoid() < 0.5).view(b, q, -1)  # (B, Q, T·H'·W')
        attn[attn.all(-1)] = False  # a query predicting nothing may look everywhere
        attn = attn.unsqueeze(1).expand(-1, self.n_heads, -1, -1).flatten(0, 1).detach()
        return logits, masks, attn

    def forward(self, feats: list[torch.Tensor], mask_features: torch.Tensor, b: int, t: int) -> dict:
        c = mask_features.shape[1]
        mems, mem_pos, sizes = [], [], []
        for i in range(self.n_levels):
            f = feats[i]  # (B·T, C, H, W)
            h, w = f.shape[-2:]
            sizes.append((h, w))
            mems.append((f.unflatten(0, (b, t)).permute(0, 1, 3, 4, 2).reshape(b, t * h * w, c)
                         + self.level_embed.weight[i]))  # (B, T·H·W, C)
            mem_pos.append(sine_pos_3d(t, h, w, c, f.device)[None].to(f.dtype))
        mf = mask_features.unflatten(0, (b, t))  # (B, T, C, h, w)
        queries = self.query_feat.weight[None].expand(b, -1, -1)
        qpos = self.query_embed.weight[None].expand(b, -1, -1)
        outputs = []
        logits, masks, attn = self._predict(queries, mf, sizes[0])
        outputs.append({"pred_logits": logits, "pred_masks": masks})
        for i in range(self.num_layers):
            lvl = i % self.n_levels
            queries = self.cross[i](queries, mems[lvl], qpos, mem_pos[lvl], attn)
            queries = self.self_attn[i](queries, queries, qpos, qpos)
            queries = self.ffn[i](queries)
            logits, masks, attn = self._predict(queries, mf, sizes[(i + 1) % self.n_levels])
            outputs.append({"pred_logits": logits, "pred_masks": masks})
        return {**outputs[-1], "aux_outputs": outputs[:-1]}
