#!/usr/bin/env python
"""Training curves of a run as one PNG: loss terms (total bold; auxiliary decoder outputs dashed), learning rate,
and the logged evaluation metrics (mDice, mIoU, per-class Dice) per dataset, against the iteration.

    python tools/plot_curves.py output/demo [output/other_run ...] [--out curves.png]

Reads ``<run>/metrics.jsonl`` only; writes ``<run>/curves.png`` unless ``--out`` is given (one run).
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

def read_series(run: Path) -> tuple[dict[str, list], dict[str, list], dict[str, list]]:
    """metrics.jsonl -> (loss terms, {"lr": ...}, eval metrics), each name -> [(iteration, value), ...]."""
    path = run / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {run} a MedVidSeg run directory?")
    losses, lr, evals = defaultdict(list), defaultdict(list), defaultdict(list)
    for n, line in enumerate(path.read_text().splitlines(), 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{n}: not a JSON line ({e.msg})") from None
        it = row.get("iteration")
        for key, value in row.items():
            if not isinstance(value, (int, float)) or key in ("iteration", "time", "data_time"):
                continue
            if key == "lr":
                lr["lr"].append((it, value))
            elif "/" in key:
                metric = key.rsplit("/", 1)[1]
                if metric in ("mDice", "mIoU") or metric.startswith("Dice_"):  # not IoU per class, frame/video means
                    evals[key].append((it, value))
            elif key.startswith("loss"):
                losses[key].append((it, value))
    return dict(losses), dict(lr), dict(evals)


def plot_run(run: Path, out: Path) -> Path:
    losses, lr, evals = read_series(run)
    if not losses and not evals:
        raise ValueError(f"{run / 'metrics.jsonl'} holds no loss or evaluation rows to plot")
    fig, axes = plt.subplots(1, 3, figsize=(15, 4), constrained_layout=True)
    for name, pts in sorted(losses.items()):
        xs, ys = zip(*pts)
        axes[0].plot(xs, ys, ls="--" if "_aux" in name else "-", lw=2 if name == "loss" else 1,
                     alpha=0.5 if "_aux" in name else 1.0, label=name)
    axes[0].set(title="training loss", xlabel="iteration", yscale="log")
    axes[0].legend(fontsize=6, ncol=2)
    for name, pts in lr.items():
        axes[1].plot(*zip(*pts), label=name)
    axes[1].set(title="learning rate", xlabel="iteration")
    for name, pts in sorted(evals.items()):
        main = name.endswith(("/mDice", "/mIoU"))
        axes[2].plot(*zip(*pts), marker="o", lw=2 if main else 1, alpha=1.0 if main else 0.5, label=name)
    axes[2].set(title="evaluation (mDice, mIoU bold; per-class Dice)", xlabel="iteration")
    if evals:
        axes[2].legend(fontsize=6)
    fig.suptitle(str(run))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, help="output PNG (only with one run); default <run>/curves.png")
    args = ap.parse_args(argv)
    if args.out and len(args.runs) > 1:
        print("error: --out takes one run", file=sys.stderr)
        return 1
    try:
        for run in args.runs:
            print(plot_run(run, args.out or run / "curves.png"))
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
