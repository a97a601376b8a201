"""Multi-scale deformable attention (models/ops/ms_deform_attn.py, models/ops/ms_deform_attn_triton.py)."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from models.ops.ms_deform_attn import MSDeformAttn, ms_deform_attn, ms_deform_attn_ref

REPO = Path(__file__).resolve().parents[3]
SHAPES = [(5, 7), (3, 4), (2, 2)]  # non-square levels, (H, W)


pytestmark = pytest.mark.usefixtures("one_thread")


def _inputs(shapes=SHAPES, n=2, lq=9, m=2, dh=4, p=3, dtype=torch.float64, seed=0, lo=-0.3, hi=1.3):
    """value (N, S, M, Dh), shapes (L, 2), level starts (L,), locations (N, Lq, M, L, P, 2) in [lo, hi]
    (partly outside [0, 1]: exercises zero padding), weights (N, Lq, M, L, P)."""
    g = torch.Generator().manual_seed(seed)
    spatial = torch.tensor(shapes, dtype=torch.long)
    starts = torch.cat([spatial.new_zeros(1), (spatial[:, 0] * spatial[:, 1]).cumsum(0)[:-1]])
    s, n_levels = int((spatial[:, 0] * spatial[:, 1]).sum()), len(shapes)
    value = torch.randn(n, s, m, dh, generator=g, dtype=dtype)
    loc = torch.rand(n, lq, m, n_levels, p, 2, generator=g, dtype=dtype) * (hi - lo) + lo
    weights = torch.rand(n, lq, m, n_levels, p, generator=g, dtype=dtype)
    return value, spatial, starts, loc, weights


def _run(impl, value, spatial, starts, loc, weights, grad):
    leaves = [t.detach().clone().requires_grad_() for t in (value, loc, weights)]
    out = ms_deform_attn(leaves[0], spatial, starts, leaves[1], leaves[2], impl=impl)
    out.backward(grad)
    return out.detach(), [t.grad for t in leaves]


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 2e-5)])
def test_cpu_matches_reference(dtype, tol):
    value, spatial, starts, loc, weights = _inputs(dtype=dtype)
    grad = torch.randn(value.shape[0], loc.shape[1], value.shape[2] * value.shape[3], dtype=dtype)
    ref, ref_grads = _run("ref", value, spatial, starts, loc, weights, grad)
    out, grads = _run("cpu", value, spatial, starts, loc, weights, grad)
    assert out.shape == (2, 9, 8) and out.dtype == dtype
    torch.testing.assert_close(out, ref, atol=tol, rtol=tol)
    for name, a, b in zip(("value", "locations", "weights"), grads, ref_grads):
        torch.testing.assert_close(a, b, atol=tol * 10, rtol=tol, msg=f"grad {name}")
    # the data really exercises padding: some samples fully outside, some straddling the border
    pix = loc * spatial.flip(-1)[:, None, :].to(dtype) - 0.5
    assert (pix < -1).any() and ((pix > -1) & (pix < 0)).any()


def test_cpu_far_and_nan_locations_stay_in_bounds():
    value, spatial, starts, loc, weights = _inputs()
    loc[0, 0, 0, 0, 0] = torch.tensor([1e6, -1e6], dtype=loc.dtype)
    loc[0, 1, 0, 0, 0] = torch.tensor([-50.0, 50.0], dtype=loc.dtype)
    ref = ms_deform_attn_ref(value, spatial, loc, weights)
    torch.testing.assert_close(ms_deform_attn(value, spatial, starts, loc, weights, impl="cpu"), ref)
    loc[1, 2, 1, 1, 1, 0] = float("nan")  # must not index out of range; other queries unaffected
    out = ms_deform_attn(value, spatial, starts, loc, weights, impl="cpu")
    keep = torch.ones(out.shape[:2], dtype=torch.bool)
    keep[1, 2] = False
    torch.testing.assert_close(out[keep], ref[keep])


def test_cpu_half_precision_computes_in_float32():
    value, spatial, starts, loc, weights = _inputs(dtype=torch.float32)
    ref = ms_deform_attn_ref(value, spatial, loc, weights)
    args = [t.bfloat16().requires_grad_() for t in (value, loc, weights)]
    out = ms_deform_attn(args[0], spatial, starts, args[1], args[2], impl="cpu")
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, atol=0.05, rtol=0.05)
    out.sum().backward()
    assert all(a.grad is not None and a.grad.dtype == torch.bfloat16 for a in args)


def test_cpu_gradcheck():
    value, spatial, starts, loc, weights = _inputs(shapes=[(3, 4), (2, 3)], n=1, lq=3, m=2, dh=2, p=2, seed=3)
    args = [t.requires_grad_() for t in (value, loc, weights)]
    assert torch.autograd.gradcheck(lambda v, l, w: ms_deform_attn(v, spatial, starts, l, w, impl="cpu"), args)


def test_auto_on_cpu_is_the_sparse_path_with_autograd_and_grid_sample_for_small_inference_and_bad_impl():
    value, spatial, starts, loc, weights = _inputs()
    value.requires_grad_()
    assert torch.equal(ms_deform_attn(value, spatial, starts, loc, weights),
                       ms_deform_attn(value, spatial, starts, loc, weights, impl="cpu"))
    with torch.no_grad():  # small problem, no autograd: the grid_sample formulation is the faster one
        assert torch.equal(ms_deform_attn(value, spatial, starts, loc, weights),
                           ms_deform_attn(value, spatial, starts, loc, weights, impl="ref"))
    value.requires_grad_(False)
    with pytest.raises(ValueError, match="impl"):
        ms_deform_attn(value, spatial, starts, loc, weights, impl="cuda")
    with pytest.raises(ValueError, match="attention_weights"):
        ms_deform_attn(value, spatial, starts, loc, weights[..., :1], impl="cpu")


_TRITON_SCRIPT = r"""
import json, sys
import torch
sys.path.insert(0, {repo!r})
from models.ops.ms_deform_attn import ms_deform_attn
from tests.models.ops.test_ms_deform_attn import _inputs, _run
res = {{}}
for dh in (4, 3):  # 3: Dh not a power of two (masked tile)
    value, spatial, starts, loc, weights = _inputs(n=2, lq=5, m=2, dh=dh, p=2, dtype=torch.float32, seed=dh)
    grad = torch.randn(2, 5, 2 * dh, generator=torch.Generator().manual_seed(9))
    ref, ref_grads = _run("ref", value.double(), spatial, starts, loc.double(), weights.double(), grad.double())
    out, grads = _run("triton", value, spatial, starts, loc, weights, grad)
    res[dh] = [(out.double() - ref).abs().max().item()] + [(a.double() - b).abs().max().item()
                                                           for a, b in zip(grads, ref_grads)]
print(json.dumps(res))
"""


def test_triton_interpreter_matches_reference():
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", _TRITON_SCRIPT.format(repo=str(REPO))], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    errors = json.loads(proc.stdout.strip().splitlines()[-1])
    for dh, (out, g_value, g_loc, g_w) in errors.items():
        assert out < 1e-5 and g_value < 1e-5 and g_w < 1e-5, (dh, errors)
        assert g_loc < 1e-4, (dh, errors)  # d/dloc scales by W, H


def test_importing_op_does_not_import_triton():
    # Loaded by path: the ``models`` package may import triton through other modules (torch._dynamo); this
    # checks that the op itself, imported and run on CPU, does not.
    code = ("import importlib.util, sys, torch\n"
            "spec = importlib.util.spec_from_file_location('msda', 'models/ops/ms_deform_attn.py')\n"
            "mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)\n"
            "attn = mod.MSDeformAttn(8, n_levels=1, n_heads=2, n_points=1)\n"
            "x = torch.randn(1, 4, 8); shapes = torch.tensor([[2, 2]])\n"
            "attn(x, torch.rand(1, 4, 1, 2), x, shapes, torch.tensor([0])).sum().backward()\n"
            "print('triton' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "False"


# ------------------------------------------------------------------------------------------------------- module


def _module_inputs(n=2, c=16, n_levels=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    spatial = torch.tensor(SHAPES[:n_levels], dtype=torch.long)
    starts = torch.cat([spatial.new_zeros(1), (spatial[:, 0] * spatial[:, 1]).cumsum(0)[:-1]])
    s = int((spatial[:, 0] * spatial[:, 1]).sum())
    x = torch.randn(n, s, c, generator=g)
    query = torch.randn(n, 6, c, generator=g)
    ref = torch.rand(n, 6, n_levels, 2, generator=g)
    return query, ref, x, spatial, starts


def test_module_shapes_and_box_reference_points():
    torch.manual_seed(0)
    attn = MSDeformAttn(d_model=16, n_levels=3, n_heads=4, n_points=2)
    query, ref, x, spatial, starts = _module_inputs()
    assert attn(query, ref, x, spatial, starts).shape == (2, 6, 16)
    boxes = torch.cat([ref, torch.full_like(ref, 0.3)], -1)  # (cx, cy, w, h)
    assert attn(query, boxes, x, spatial, starts).shape == (2, 6, 16)
    with pytest.raises(ValueError, match="reference_points"):
        attn(query, ref[..., :1], x, spatial, starts)


def test_module_bad_heads():
    with pytest.raises(ValueError, match=r"d_model \(30\) must be divisible by n_heads \(8\)"):
        MSDeformAttn(d_model=30, n_heads=8)


def test_module_initialisation():
    m_heads, n_levels, n_points = 8, 3, 4
    attn = MSDeformAttn(d_model=32, n_levels=n_levels, n_heads=m_heads, n_points=n_points)
    for p in attn.parameters():  # a global xavier init, then the published init re-applied
        if p.dim() > 1:
            torch.nn.init.xavier_uniform_(p)
    attn._reset_parameters()
    assert attn.sampling_offsets.weight.abs().max() == 0
    assert attn.attention_weights.weight.abs().max() == 0 and attn.attention_weights.bias.abs().max() == 0
    assert attn.value_proj.bias.abs().max() == 0 and attn.output_proj.bias.abs().max() == 0
    bias = attn.sampling_offsets.bias.detach().view(m_heads, n_levels, n_points, 2)
    for h in range(m_heads):
        angle = 2 * math.pi * h / m_heads
        direction = torch.tensor([math.cos(angle), math.sin(angle)])
        direction = direction / direction.abs().max()  # max |coordinate| = 1
        for i in range(n_points):
            for lvl in range(n_levels):
                torch.testing.assert_close(bias[h, lvl, i], direction * (i + 1))
    torch.testing.assert_close(bias[0, 0, 0], torch.tensor([1.0, 0.0]))  # head 0 points right
    torch.testing.assert_close(bias[1, 0, 1], torch.tensor([2.0, 2.0]))  # head 1: diagonal, point 1 doubled
    torch.testing.assert_close(bias[2, 0, 0], torch.tensor([0.0, 1.0]))  # head 2 (90°) points down


def test_module_forward_semantics_at_init():
    """At init: uniform attention over L·P, locations = reference + bias / (W_l, H_l)."""
    torch.manual_seed(0)
    m_heads, n_levels, n_points, c = 4, 3, 2, 16
    attn = MSDeformAttn(d_model=c, n_levels=n_levels, n_heads=m_heads, n_points=n_points, impl="cpu")
    query, ref, x, spatial, starts = _module_inputs(c=c)
    n, lq = query.shape[:2]
    with torch.no_grad():
        value = attn.value_proj(x).view(n, -1, m_heads, c // m_heads)
        bias = attn.sampling_offsets.bias.view(m_heads, n_levels, n_points, 2)
        loc = ref[:, :, None, :, None, :] + bias / spatial.flip(-1)[:, None, :].float()
        uniform = torch.full((n, lq, m_heads, n_levels, n_points), 1.0 / (n_levels * n_points))
        expected = attn.output_proj(ms_deform_attn_ref(value, spatial, loc, uniform))
        torch.testing.assert_close(attn(query, ref, x, spatial, starts), expected, atol=1e-5, rtol=1e-5)
        assert not torch.allclose(expected, attn.output_proj(ms_deform_attn_ref(value, spatial, loc,
                                                                                 uniform * 2)))


def test_module_matches_formula_with_trained_parameters():
    """Random offsets/attention parameters: locations = ref + offset / (W_l, H_l) (boxes: ref + offset / P ·
    (w, h) / 2), weights = softmax over the L·P points of each head."""
    torch.manual_seed(0)
    m_heads, n_levels, n_points, c = 4, 3, 2, 16
    attn = MSDeformAttn(d_model=c, n_levels=n_levels, n_heads=m_heads, n_points=n_points)
    with torch.no_grad():
        for lin in (attn.sampling_offsets, attn.attention_weights):
            lin.weight.normal_(std=0.3)
            lin.bias.normal_()
    query, ref, x, spatial, starts = _module_inputs(c=c)
    n, lq = query.shape[:2]
    boxes = torch.cat([ref, torch.rand_like(ref) * 0.5], -1)
    with torch.no_grad():
        value = attn.value_proj(x).view(n, -1, m_heads, c // m_heads)
        off = attn.sampling_offsets(query).view(n, lq, m_heads, n_levels, n_points, 2)
        logits = attn.attention_weights(query).view(n, lq, m_heads, n_levels * n_points)
        weights = logits.softmax(-1).view(n, lq, m_heads, n_levels, n_points)
        box_loc = boxes[:, :, None, :, None, :2] + off / n_points * boxes[:, :, None, :, None, 2:] / 2
        for refp, loc in ((ref, ref[:, :, None, :, None] + off / spatial.flip(-1)[:, None, :].float()),
                          (boxes, box_loc)):
            expected = attn.output_proj(ms_deform_attn_ref(value, spatial, loc, weights))
            torch.testing.assert_close(attn(query, refp, x, spatial, starts), expected, atol=1e-5, rtol=1e-5)


def test_module_padding_mask_zeroes_values():
    torch.manual_seed(0)
    attn = MSDeformAttn(d_model=16, n_levels=3, n_heads=4, n_points=2)
    query, ref, x, spatial, starts = _module_inputs()
    mask = torch.zeros(x.shape[:2], dtype=torch.bool)
    mask[0, :35] = True  # batch 0: the whole first level is padding
    out = attn(query, ref, x, spatial, starts, mask)
    x2 = x.clone()
    x2[mask] = 1e3 * torch.randn(int(mask.sum()), x.shape[-1])
    torch.testing.assert_close(attn(query, ref, x2, spatial, starts, mask), out)  # padded tokens are ignored
    assert not torch.allclose(attn(query, ref, x2, spatial, starts), out, atol=1e-3)  # ... unless unmasked
    torch.testing.assert_close(out[1], attn(query, ref, x, spatial, starts)[1])  # batch 1 has no padding


def test_module_cpu_and_ref_agree_with_gradients():
    torch.manual_seed(0)
    outs = {}
    for impl in ("ref", "cpu"):
        torch.manual_seed(0)
        attn = MSDeformAttn(d_model=16, n_levels=3, n_heads=4, n_points=2, impl=impl)
        with torch.no_grad():
            attn.sampling_offsets.weight.normal_(std=0.5)
            attn.attention_weights.weight.normal_(std=0.5)
        query, ref, x, spatial, starts = _module_inputs()
        out = attn(query, ref, x, spatial, starts)
        out.square().sum().backward()
        outs[impl] = (out.detach(), {k: p.grad.clone() for k, p in attn.named_parameters()})
    torch.testing.assert_close(outs["cpu"][0], outs["ref"][0], atol=1e-5, rtol=1e-5)
    for k, g in outs["ref"][1].items():
        torch.testing.assert_close(outs["cpu"][1][k], g, atol=1e-4, rtol=1e-4, msg=k)
