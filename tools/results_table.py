#!/usr/bin/env python
"""Results table (markdown) from real run directories: FLOPs, params, Dice, mIoU per evaluation dataset.

    python tools/results_table.py output/demo [output/other_run ...] [--dataset echo_synth_random_test]

Reads ``<run>/model_info.json`` (written at training start) and ``<run>/eval/<dataset>/metrics.json`` (the
latest evaluation of that run). Nothing is typed in by hand.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def rows_for(run: Path, dataset: str | None) -> list[list[str]]:
    info_file, eval_dir = run / "model_info.json", run / "eval"
    if not info_file.is_file():
        raise FileNotFoundError(f"{info_file} not found: is {run} a MedVidSeg run directory?")
    info = json.loads(info_file.read_text())
    metric_files = sorted(eval_dir.glob("*/metrics.json"))
    if dataset:
        metric_files = [f for f in metric_files if f.parent.name == dataset]
    if not metric_files:
        raise FileNotFoundError(f"No evaluation results under {eval_dir}" + (f" for {dataset}" if dataset else ""))
    gf = info.get("gflops_per_clip")
    out = []
    for f in metric_files:
        m = json.loads(f.read_text())
        out.append([run.name, info["model"], f.parent.name, "n/a" if gf is None else f"{gf:.2f}",
                    f"{info['params'] / 1e6:.2f} M", f"{m['mDice']:.4f}", f"{m['mIoU']:.4f}",
                    *(f"{m[f'Dice_{c}']:.4f}" for c in ("LV", "LA", "RA", "RV")), str(m.get("iteration", "")),
                    str(m["num_samples"])])
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path, help="run directories")
    p.add_argument("--dataset", help="only this evaluation dataset")
    args = p.parse_args(argv)
    header = ["run", "model", "dataset", "GFLOPs/clip", "#params", "mDice", "mIoU", "Dice LV", "Dice LA",
              "Dice RA", "Dice RV", "iter", "samples"]
    try:
        rows = [r for run in args.runs for r in rows_for(run, args.dataset)]
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        print("| " + " | ".join(r) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
