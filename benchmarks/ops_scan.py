#!/usr/bin/env python
"""Selective scan (Mamba S6) cost per path: reference under autograd vs the CPU path (vs Triton / mamba on CUDA).

    python benchmarks/ops_scan.py [--quick]

Rows (``run()`` returns them as dicts): op ("selective_scan"), path, shape, fwd_ms, fwdbwd_ms, max_rel_err.
* path "ref" = ``selective_scan_ref`` (sequential loop under autograd), "cpu" = the chunked sequential
  autograd.Function, "triton" / "mamba" only when CUDA (and mamba-ssm) are available.
* fwd_ms: forward on inputs without grad; fwdbwd_ms: forward + backward of a weighted sum with every input
  requiring grad. Medians over repeats after a warm-up; the reference at L=1024 (~20 s) runs once, no warm-up.
* max_rel_err = max over the output and every input gradient of max |x - ref64| / max |ref64|, for fp32 inputs,
  where ref64 is ``selective_scan_ref`` in float64 (with --quick, the long shape uses the float64 CPU path as
  ref64 instead; the tests check that it equals the reference to ~1e-14).
Shapes (fp32, 2 threads; the CPU path itself runs its loops on one thread, see CPU_THREADS):
* lgrnet: B 2, D 256 (K=2 directions x d_inner 128), L 220 (T 11 x 20 queries), N 16, grouped B/C with G 2,
  softplus + delta_bias + D, no z.
* long: B 2, D 256, L 1024, N 16, B/C (B, 1, N, L), softplus + delta_bias + D, no z.
Inputs follow the SS2D init: A = -(1..N), D = 1, Δ bias = softplus^-1(dt) with dt ~ logU[1e-3, 1e-1].
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from _table import run_cli, time_ms  # noqa: E402
from models.ops.selective_scan import mamba_available, selective_scan, selective_scan_ref  # noqa: E402

NAMES = ("u", "delta", "A", "B", "C", "D", "delta_bias")
SHAPES = {
    "lgrnet": dict(batch=2, dim=256, length=220, state=16, groups=2),
    "long": dict(batch=2, dim=256, length=1024, state=16, groups=1),
}


def _label(cfg: dict) -> str:
    return f"{cfg['batch']}x{cfg['dim']}x{cfg['length']}x{cfg['state']} G{cfg['groups']}"


def _inputs(cfg: dict, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    b, d, L, n, G = cfg["batch"], cfg["dim"], cfg["length"], cfg["state"], cfg["groups"]
    dt = torch.exp(torch.rand(d, generator=g) * (math.log(1e-1) - math.log(1e-3)) + math.log(1e-3))
    return dict(u=torch.randn(b, d, L, generator=g), delta=torch.randn(b, d, L, generator=g) * 0.1,
                A=-torch.arange(1, n + 1, dtype=torch.float32).repeat(d, 1),
                B=torch.randn(b, G, n, L, generator=g), C=torch.randn(b, G, n, L, generator=g),
                D=torch.ones(d), delta_bias=dt + torch.log(-torch.expm1(-dt)))


def _fn(path: str):
    if path == "ref":
        return selective_scan_ref
    return lambda **kw: selective_scan(**kw, impl=path)


def _weights(shape, device) -> torch.Tensor:
    return torch.cos(torch.arange(math.prod(shape), dtype=torch.float64, device=device)).reshape(shape)


def _run_grads(fn, inputs: dict) -> list[torch.Tensor]:
    """[out, grad of every input] for the weighted-sum loss."""
    leaves = {k: v.detach().clone().requires_grad_() for k, v in inputs.items()}
    out = fn(**leaves, delta_softplus=True)
    (out.double() * _weights(out.shape, out.device)).sum().backward()
    return [out.detach()] + [leaves[k].grad for k in NAMES]


_SYNC = torch.cuda.synchronize if torch.cuda.is_available() else None


def _row(path: str, name: str, cfg: dict, ref64: list, device: str, repeats: int, warmup: bool = True) -> dict:
    fn = _fn(path)
    inputs = {k: v.to(device) for k, v in _inputs(cfg).items()}
    got = _run_grads(fn, inputs)
    err = max(float((a.double().cpu() - r).abs().max() / r.abs().max()) for a, r in zip(got, ref64))
    with torch.no_grad():
        fwd = time_ms(lambda: fn(**inputs, delta_softplus=True), repeats, int(warmup), _SYNC)
    leaves = {k: v.clone().requires_grad_() for k, v in inputs.items()}

    def fwdbwd():
        for v in leaves.values():
            v.grad = None
        fn(**leaves, delta_softplus=True).sum().backward()
    return dict(op="selective_scan", path=path, shape=f"{name} {_label(cfg)}", fwd_ms=fwd,
                fwdbwd_ms=time_ms(fwdbwd, repeats, int(warmup), _SYNC), max_rel_err=err)


def run(quick: bool = False) -> list[dict]:
    """All benchmark rows (see the module doc). quick: fewer repeats and no reference run on the long shape."""
    torch.set_num_threads(2)
    rows = []
    gpu_paths = []
    if torch.cuda.is_available():
        gpu_paths = ["triton"] + (["mamba"] if mamba_available() else [])
    for name, cfg in SHAPES.items():
        long = name == "long"
        inputs64 = {k: v.double() for k, v in _inputs(cfg).items()}
        ref_fn = _fn("cpu") if (long and quick) else selective_scan_ref
        ref64 = _run_grads(ref_fn, inputs64)
        if not (long and quick):
            rows.append(_row("ref", name, cfg, ref64, "cpu", 1 if long else (1 if quick else 3), warmup=not long))
        rows.append(_row("cpu", name, cfg, ref64, "cpu", 3 if quick else 7))
        for path in gpu_paths:
            rows.append(_row(path, name, cfg, ref64, "cuda", 5 if quick else 20))
    return rows


def main() -> None:
    rows = run_cli(run, __doc__)
    by = {(r["shape"], r["path"]): r for r in rows}
    for shape in dict.fromkeys(r["shape"] for r in rows):
        if (shape, "ref") in by and (shape, "cpu") in by:
            ref, cpu = by[(shape, "ref")], by[(shape, "cpu")]
            print(f"{shape}: cpu path {ref['fwdbwd_ms'] / cpu['fwdbwd_ms']:.0f}x faster fwd+bwd than the reference")


if __name__ == "__main__":
    main()
