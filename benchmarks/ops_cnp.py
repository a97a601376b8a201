#!/usr/bin/env python
"""CPU cost of LGRNet's CNP (neighbourhood attention to the previous frame) and of building Hilbert orders.

    python benchmarks/ops_cnp.py [--quick]

Rows (``run()`` returns them as dicts): op, path, shape, fwd_ms, fwdbwd_ms, max_rel_err.
* op "na": the attention op alone, q/k/v (B*T, heads, H, W, dh) summed over the shape's levels, per path of
  ``neighbourhood_attention``: "tiled" (the default on CPU, what CNP uses), "gather" (index_select of every
  k x k window), "dense" (full attention with a -inf mask outside the windows, O((HW)^2); on the paper shape
  only without --quick).
* op "cnp": the whole ``CyclicNeighbourhoodPropagation`` module (projections + roll + attention), all levels.
* max_rel_err = max |out - ref| / max |ref| of the fp32 result; ref is the per-pixel brute force in float64
  (``neighbourhood_attention_reference``) on lgrnet_tiny, and the dense masked formulation in float64 (chunked over
  frames) on the paper shape; None for module rows.
* op "hilbert": ``curve_order((11, 20))`` built from scratch (caches cleared) vs served from the cache.
Shapes: lgrnet_tiny = B 2, T 11, d 64, 4 heads, levels 16x16 / 8x8 / 4x4 (k 5, clamped to 3 on 4x4);
paper = B 1, T 6, d 256, 8 heads, 44x44, k 5. Times: best of n repeats after a warm-up, 2 threads.
"""
from __future__ import annotations

import functools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from _table import run_cli, time_ms  # noqa: E402
from models.ops import hilbert  # noqa: E402
from models.ops.cnp import (CyclicNeighbourhoodPropagation, effective_kernel, neighbourhood_attention,  # noqa: E402
                            neighbourhood_attention_dense, neighbourhood_attention_reference)

NA_PATHS = {p: functools.partial(neighbourhood_attention, path=p) for p in ("tiled", "gather", "dense")}

SHAPES = {
    "lgrnet_tiny": dict(B=2, T=11, d=64, heads=4, levels=[(16, 16), (8, 8), (4, 4)], k=5),
    "paper": dict(B=1, T=6, d=256, heads=8, levels=[(44, 44)], k=5),
}


def _time_best(fn, repeats: int) -> float:
    return time_ms(fn, repeats, best=True)  # best of n: the least disturbed by other jobs on a shared machine


def _inputs(cfg: dict, dtype=torch.float32, requires_grad=False, seed=0) -> list[tuple]:
    g = torch.Generator().manual_seed(seed)
    bt, nh, dh = cfg["B"] * cfg["T"], cfg["heads"], cfg["d"] // cfg["heads"]
    out = []
    for h, w in cfg["levels"]:
        ks, dil = effective_kernel(h, w, cfg["k"], 1)
        qkv = [torch.randn(bt, nh, h, w, dh, generator=g, dtype=dtype).requires_grad_(requires_grad)
               for _ in range(3)]
        out.append((qkv, ks, dil))
    return out


def _rel_err(fn, ref_fn, cfg: dict) -> float:
    err = 0.0
    for (q, k, v), ks, dil in _inputs(cfg, torch.float64):
        ref = ref_fn(q, k, v, ks, dil)
        out = fn(q.float(), k.float(), v.float(), ks, dil).double()
        err = max(err, ((out - ref).abs().max() / ref.abs().max()).item())
    return err


def _dense_chunked(q, k, v, ks, dil):
    return torch.cat([neighbourhood_attention_dense(q[i:i + 1], k[i:i + 1], v[i:i + 1], ks, dil)  # 1 frame at a time
                      for i in range(q.shape[0])])


def _op_row(name: str, cfg: dict, path: str, fn, repeats: int, err) -> dict:
    levels = _inputs(cfg)
    fwd = _time_best(lambda: [fn(*qkv, ks, dil) for qkv, ks, dil in levels], repeats)
    levels_g = _inputs(cfg, requires_grad=True)

    def fwdbwd():
        sum(fn(*qkv, ks, dil).sum() for qkv, ks, dil in levels_g).backward()
    return dict(op="na", path=path, shape=name, fwd_ms=fwd, fwdbwd_ms=_time_best(fwdbwd, repeats), max_rel_err=err)


def _module_row(name: str, cfg: dict, repeats: int) -> dict:
    torch.manual_seed(0)
    m = CyclicNeighbourhoodPropagation(cfg["d"], cfg["heads"], kernel_size=cfg["k"])
    xs = [torch.randn(cfg["B"], cfg["T"], h, w, cfg["d"]) for h, w in cfg["levels"]]
    with torch.no_grad():
        fwd = _time_best(lambda: [m(x) for x in xs], repeats)

    def fwdbwd():
        sum(m(x).sum() for x in xs).backward()
    return dict(op="cnp", path="module", shape=name, fwd_ms=fwd, fwdbwd_ms=_time_best(fwdbwd, repeats), max_rel_err=None)


def _hilbert_rows(repeats: int) -> list[dict]:
    def uncached():
        hilbert._curve_order.cache_clear()
        hilbert._gilbert2d.cache_clear()
        hilbert.curve_order((11, 20))
    cached = _time_best(lambda: hilbert.curve_order((11, 20)), max(repeats, 20))
    return [dict(op="hilbert", path="uncached", shape="(11, 20)", fwd_ms=_time_best(uncached, max(repeats, 5)),
                 fwdbwd_ms=None, max_rel_err=None),
            dict(op="hilbert", path="cached", shape="(11, 20)", fwd_ms=cached, fwdbwd_ms=None, max_rel_err=None)]


def run(quick: bool = False) -> list[dict]:
    """All benchmark rows (see the module doc). quick: fewer repeats (1 instead of 5)."""
    torch.set_num_threads(2)
    repeats = 1 if quick else 5
    rows = []
    for name, cfg in SHAPES.items():
        for path, fn in NA_PATHS.items():
            if quick and name == "paper" and path == "dense":
                continue  # dense at 44x44 takes seconds
            if name == "lgrnet_tiny":  # per-pixel float64 brute force: thousands of tiny ops, one thread is faster
                torch.set_num_threads(1)
                err = _rel_err(fn, neighbourhood_attention_reference, cfg)
                torch.set_num_threads(2)
            else:
                err = _rel_err(fn, _dense_chunked, cfg) if path != "dense" else None
            rows.append(_op_row(name, cfg, path, fn, repeats, err))
        rows.append(_module_row(name, cfg, repeats))
    rows.extend(_hilbert_rows(repeats))
    return rows


def main() -> None:
    run_cli(run, __doc__)


if __name__ == "__main__":
    main()
