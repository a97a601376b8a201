#!/usr/bin/env python
"""How close is DDP to one process? Trains the same config with 1 process (batch B) and with torchrun
--nproc_per_node 2 (B/2 each, gloo on CPU) and prints the largest weight difference after N iterations.

    python benchmarks/ddp_equivalence.py [--iters 1 5 20] [--batch 8] [key=value ...]

The U-Net baseline uses GroupNorm here (model.norm=group): BatchNorm statistics depend on the per-process batch,
and SyncBatchNorm does not run on CPU. Runs SGD and AdamW: gradients agree to float rounding, but Adam divides by
sqrt(v), so parameters whose gradient is rounding noise (e.g. directions a following GroupNorm removes) take
steps of ~lr in a noise-dependent direction, and AdamW runs drift apart by ~lr per step. With either optimizer
the first step agrees to float rounding and later differences grow with the training dynamics (a different
summation order is all that separates the runs).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from core.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config_file", default="configs/cardiac/unet_tiny.py")
    p.add_argument("--iters", type=int, nargs="+", default=[1, 5, 20])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    common = ["train.eval_period=-1", f"train.batch_size={args.batch}",
              "model.norm=group", "log.wandb.enabled=false", "log.tensorboard=false", "data.num_workers=0",
              *args.overrides]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    print("| optimizer | iterations | 1 vs 2 processes: max abs | max relative (per tensor) | "
          "baseline: 1 process, 1 vs 2 threads: max abs |\n|---|---|---|---|---|")
    for optim in (["optim.name=SGD", "optim.base_lr=0.05"], ["optim.name=AdamW"]):
        for n in args.iters:
            diff, rel, base = compare([*common, *optim, f"train.max_iter={n}"], args, env)
            print(f"| {optim[0].split('=')[1]} | {n} | {diff:.2e} | {rel:.2e} | {base:.2e} |", flush=True)


def compare(common: list[str], args, env: dict) -> tuple[float, float, float]:
    """(max abs, max relative) difference of 1 vs 2 processes, and max abs difference of one process run with
    1 vs 2 threads: the same arithmetic summed in another order, the floor any parallel run can reach."""
    with tempfile.TemporaryDirectory() as tmp:
        runs = {"1 process": (Path(tmp) / "single", []), "2 threads": (Path(tmp) / "threads", []),
                "2 processes": (Path(tmp) / "ddp", ["-m", "torch.distributed.run", "--standalone",
                                                     "--nproc_per_node", "2"])}
        weights = {}
        for name, (out, launcher) in runs.items():
            cmd = [sys.executable, *launcher, "main.py", "--config_file", args.config_file, "--output_dir",
                   str(out), *common]
            run_env = {**env, "OMP_NUM_THREADS": "2"} if name == "2 threads" else env
            proc = subprocess.run(cmd, cwd=REPO, env=run_env, capture_output=True, text=True)
            if proc.returncode:
                sys.exit(f"{name} failed:\n{proc.stderr[-3000:]}")
            weights[name] = load_checkpoint(out / "checkpoints" / "model_final.pth")["model"]
        a, t, b = weights["1 process"], weights["2 threads"], weights["2 processes"]
        base = max((a[k].float() - t[k].float()).abs().max().item() for k in a)
        diff = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
        rel = max(((a[k].float() - b[k].float()).abs().max() / a[k].float().abs().max().clamp(min=1e-12)).item()
                  for k in a)
        return diff, rel, base


if __name__ == "__main__":
    main()
