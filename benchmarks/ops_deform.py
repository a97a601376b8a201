#!/usr/bin/env python
"""Multi-scale deformable attention: speed and error of each path of ``ms_deform_attn`` at LGRNet's shapes.

    python benchmarks/ops_deform.py [--quick]

Shapes (Lq = S: self-attention over all tokens, as in LGRNet's encoder; P = 4 points):
  lgrnet_tiny: N = 22 (2 clips x 11 frames), d_model 64, M = 4 heads (Dh 16), 128² input at strides 32/16/8
               -> levels (4, 4), (8, 8), (16, 16)
  paper:       N = 6, d_model 256, M = 8 (Dh 32), 352² at strides 32/16/8 -> (11, 11), (22, 22), (44, 44)
Paths: ref (per-level grid_sample), cpu (sparse CSR formulation), triton (only when CUDA is available).
Inputs are float32; locations = token centre + N(0, 2 px) offsets (as a trained layer samples near its
reference), weights = softmax over L·P. fwd: forward without autograd; fwdbwd: forward + backward w.r.t. value,
locations and weights. Median of repeats after a warm-up, 2 threads (timings are noisy on a shared box: rerun).
max_rel_err: max over output and the three input gradients of max|x - x_ref| / max|x_ref|, against the float64
reference; the ref path's own row is the float32 floor. At the paper shape that max (~2e-3, every path) is the
location gradient of a sample lying within float32 rounding of a pixel line (e.g. x = 9.99999982 px): bilinear
sampling is piecewise linear, so its derivative jumps there; output, value and weight gradients agree to ~1e-6.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _table import run_cli, time_ms  # noqa: E402
from models.ops.ms_deform_attn import ms_deform_attn  # noqa: E402

SHAPES = {
    "lgrnet_tiny": dict(n=22, d_model=64, heads=4, levels=[(4, 4), (8, 8), (16, 16)], points=4),
    "paper": dict(n=6, d_model=256, heads=8, levels=[(11, 11), (22, 22), (44, 44)], points=4),
}


def make_inputs(n, d_model, heads, levels, points, seed=0):
    """value (N, S, M, Dh), spatial shapes (L, 2), level starts (L,), locations (N, S, M, L, P, 2), weights."""
    g = torch.Generator().manual_seed(seed)
    spatial = torch.tensor(levels, dtype=torch.long)
    starts = torch.cat([spatial.new_zeros(1), (spatial[:, 0] * spatial[:, 1]).cumsum(0)[:-1]])
    s, n_levels, dh = int((spatial[:, 0] * spatial[:, 1]).sum()), len(levels), d_model // heads
    value = torch.randn(n, s, heads, dh, generator=g)
    centres = []
    for h, w in levels:
        ys, xs = torch.meshgrid((torch.arange(h) + 0.5) / h, (torch.arange(w) + 0.5) / w, indexing="ij")
        centres.append(torch.stack([xs, ys], -1).reshape(-1, 2))
    ref = torch.cat(centres)[None, :, None, None, None, :]  # (1, S, 1, 1, 1, 2)
    offsets = 2.0 * torch.randn(n, s, heads, n_levels, points, 2, generator=g)
    loc = ref + offsets / spatial.flip(-1)[:, None, :].float()
    weights = torch.randn(n, s, heads, n_levels * points, generator=g).softmax(-1)
    return value, spatial, starts, loc, weights.view(n, s, heads, n_levels, points)


def _outputs(path, value, spatial, starts, loc, weights, grad):
    leaves = [t.detach().clone().requires_grad_() for t in (value, loc, weights)]
    out = ms_deform_attn(leaves[0], spatial, starts, leaves[1], leaves[2], impl=path)
    out.backward(grad)
    return [out.detach()] + [t.grad for t in leaves]


def run(quick: bool = False) -> list[dict]:
    """One row per (shape, path): op, path, shape, fwd_ms, fwdbwd_ms, max_rel_err."""
    torch.set_num_threads(2)
    repeats = 3 if quick else 9
    paths = ["ref", "cpu", "auto"] + (["triton"] if torch.cuda.is_available() else [])
    rows = []
    for name, cfg in SHAPES.items():
        value, spatial, starts, loc, weights = make_inputs(**cfg)
        grad = torch.randn(value.shape[0], loc.shape[1], value.shape[2] * value.shape[3],
                           generator=torch.Generator().manual_seed(1))
        expected = _outputs("ref", value.double(), spatial, starts, loc.double(), weights.double(), grad.double())
        desc = (f"N={cfg['n']} S=Lq={value.shape[1]} M={cfg['heads']} Dh={value.shape[3]} "
                f"L={len(cfg['levels'])} P={cfg['points']}")
        for path in paths:
            dev = "cuda" if path == "triton" else "cpu"  # "auto" on CPU: "ref" for small no-grad calls, else "cpu"
            sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
            v, lc, w, gr = (t.to(dev) for t in (value, loc, weights, grad))
            sp, st = spatial.to(dev), starts.to(dev)
            got = _outputs(path, v, sp, st, lc, w, gr)
            err = max(((a.double().cpu() - b).abs().max() / b.abs().max().clamp(min=1e-30)).item()
                      for a, b in zip(got, expected))

            def fwd():
                with torch.no_grad():
                    ms_deform_attn(v, sp, st, lc, w, impl=path)

            leaves = [t.detach().clone().requires_grad_() for t in (v, lc, w)]

            def fwdbwd():
                ms_deform_attn(leaves[0], sp, st, leaves[1], leaves[2], impl=path).backward(gr)

            rows.append(dict(op="ms_deform_attn", path=path, shape=f"{name} ({desc})",
                             fwd_ms=time_ms(fwd, repeats, warmup=2, sync=sync),
                             fwdbwd_ms=time_ms(fwdbwd, repeats, warmup=2, sync=sync),
                             max_rel_err=err))
    return rows


def main() -> None:
    run_cli(run, __doc__)


if __name__ == "__main__":
    main()
