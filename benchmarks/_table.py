"""Markdown tables for the op benchmarks (shared by ops.py, ops_scan.py, ops_cnp.py, ops_deform.py)."""
from __future__ import annotations

import argparse
import statistics
import time

OP_KEYS = ("op", "path", "shape", "fwd_ms", "fwdbwd_ms", "max_rel_err")
OP_HEADER = ("op", "path", "shape", "fwd (ms)", "fwd+bwd (ms)", "max rel. err vs float64")


def time_ms(fn, repeats: int, warmup: int = 1, sync=None, best: bool = False) -> float:
    """Milliseconds per call of ``fn``: ``warmup`` untimed calls, then ``repeats`` timed ones (``sync()`` around
    each, e.g. torch.cuda.synchronize); the median, or the minimum with ``best`` (least disturbed by other jobs)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if sync:
            sync()
        t = time.perf_counter()
        fn()
        if sync:
            sync()
        times.append(time.perf_counter() - t)
    return (min(times) if best else statistics.median(times)) * 1e3


def fmt(v) -> str:
    """None -> '-', small floats in scientific notation, others with one decimal."""
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.2e}" if v < 0.01 else f"{v:.1f}"
    return str(v)


def print_rows(rows: list[dict], keys=OP_KEYS, header=OP_HEADER) -> None:
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        print("| " + " | ".join(fmt(r.get(k)) for k in keys) + " |")


def run_cli(run, doc: str) -> list[dict]:
    """``--quick`` flag, then ``run(quick)``; prints and returns its rows."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer repeats (see the module docstring)")
    rows = run(p.parse_args().quick)
    print_rows(rows)
    return rows
