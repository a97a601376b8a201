"""FLOP counts: fvcore plus our handles for attention and the deformable sampler, checked against hand counts."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from models.complexity import count_flops
from models.ops.ms_deform_attn import ms_deform_attn


class _Wrap(nn.Module):
    """count_flops calls ``predict(batch)["probs"]``; this adapts a plain function of the video."""

    def __init__(self, fn, *modules: nn.Module):
        super().__init__()
        self.fn = fn
        self.mods = nn.ModuleList(modules)  # registered, so tracing sees their weights as parameters

    def predict(self, batch):
        return {"probs": self.fn(batch["video"])}


@pytest.mark.parametrize("query_shift", [0.0, 1.0], ids=["fused_self_attention", "sdpa_cross_attention"])
def test_attention_flops_count_projections_qk_and_av_products(query_shift):
    mha = nn.MultiheadAttention(16, 4, batch_first=True).eval()

    def fn(video):  # video (1, T, 3, H, W): tokens (T, H·W, 16) after a fixed projection
        x = video.flatten(3).transpose(2, 3)[0].repeat(1, 1, 6)[..., :16]  # (T, L=H·W, 16)
        return mha(x + query_shift if query_shift else x, x, x, need_weights=False)[0]

    t, h, w = 2, 4, 5
    got = round(count_flops(_Wrap(fn, mha), t, (h, w), torch.device("cpu")) * 1e9)
    L, e = h * w, 16
    linear = t * L * (3 * e * e + e * e)  # in-projection of q, k, v and the output projection
    attention = t * L * L * (e + e)  # QK^T and AV over all heads
    assert got == linear + attention


def test_deformable_sampler_flops_are_four_corners_per_point_and_channel():
    n_heads, dh, n_points = 2, 8, 3
    shapes = torch.tensor([[4, 4], [2, 2]])
    starts = torch.tensor([0, 16])

    def fn(video):
        b = video.shape[1]  # the clip length serves as the batch of the op
        value = video.new_ones(b, 20, n_heads, dh)
        loc = video.new_full((b, 7, n_heads, 2, n_points, 2), 0.3)
        weights = video.new_full((b, 7, n_heads, 2, n_points), 1 / 6)
        return ms_deform_attn(value, shapes, starts, loc, weights, impl="cpu")

    got = round(count_flops(_Wrap(fn), 3, (2, 2), torch.device("cpu")) * 1e9)
    assert got == 3 * 7 * n_heads * 2 * n_points * 4 * dh


def test_lgrnet_flops_are_counted_through_the_selective_scan():
    from tests.models.test_lgrnet import _model

    model = _model()
    flops = count_flops(model, 3, (64, 64), torch.device("cpu"))
    assert flops is not None and flops > 0
    # larger clips cost more, roughly in proportion (the per-frame parts dominate)
    assert 1.5 < count_flops(model, 6, (64, 64), torch.device("cpu")) / flops < 2.5


def test_an_untraceable_predict_is_counted_at_the_dispatcher_in_the_same_macs(caplog):
    conv, lin = nn.Conv2d(3, 8, 3, padding=1), nn.Linear(8, 4)

    def traceable(video):
        y = conv(video.flatten(0, 1))  # (T, 8, H, W)
        return lin(y.flatten(2).transpose(1, 2))

    def untraceable(video):  # stands for a predict the JIT tracer fails on (BOX-SAM2's, inside the sam2 package)
        if torch.jit.is_tracing():
            raise RuntimeError("cannot be traced")
        return traceable(video)

    t, h, w = 3, 6, 5
    macs = t * h * w * (8 * 3 * 9 + 4 * 8)  # 3×3 convolution and the linear layer, one MAC per multiply-add
    caplog.set_level("INFO", logger="models.complexity")
    assert round(count_flops(_Wrap(traceable, conv, lin), t, (h, w), torch.device("cpu")) * 1e9) == macs
    assert "FlopCounterMode" not in caplog.text  # fvcore traced it
    assert round(count_flops(_Wrap(untraceable, conv, lin), t, (h, w), torch.device("cpu")) * 1e9) == macs
    assert "fvcore cannot trace" in caplog.text  # the dispatcher count, same MACs


@pytest.mark.parametrize("masked", [False, True])
def test_the_dispatcher_count_includes_cpu_attention(masked):
    """torch's counter has no formula for the CPU kernel behind scaled_dot_product_attention (it counted 0): ours
    gives QK^T and AV, with or without a mask, at queries ≠ keys."""
    lq, s, e, ev, heads = 5, 7, 4, 6, 3
    mask = torch.ones(lq, s, dtype=torch.bool).tril() if masked else None

    def untraceable(video):
        if torch.jit.is_tracing():
            raise RuntimeError("cannot be traced")
        t = video.shape[1]
        q, k, v = (video.new_ones(t, heads, n, d) for n, d in ((lq, e), (s, e), (s, ev)))
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)

    t = 2
    assert round(count_flops(_Wrap(untraceable), t, (2, 2), torch.device("cpu")) * 1e9) == t * heads * lq * s * (e + ev)
