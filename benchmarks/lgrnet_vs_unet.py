#!/usr/bin/env python
"""LGRNet (and BOX-SAM2) vs the per-frame U-Net at equal training wall-clock on this machine, on the embedded data.

    python benchmarks/lgrnet_vs_unet.py [--budget_s 420] [--models UNetBaseline LGRNet BoxSAM2]
        [--out output/bench/lgrnet_vs_unet] [key=value ...]

For each config: a short calibration run measures seconds per iteration, the iteration count is set so training
takes ``--budget_s`` seconds (the LR schedule is sized to it, so both models finish their schedule), the model is
trained with `main.py --trainer_mode train_attmpt` (no periodic evaluation) and evaluated once with
`--trainer_mode eval` on the test split. Prints iterations, measured training wall-clock, mDice, mIoU for both and
the LGRNet / U-Net mDice ratio; writes ``results.json`` into ``--out``. Overrides apply to both configs.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _runs import seconds_per_iter as _seconds_per_iter, train_run as _train  # noqa: E402
CONFIGS = {"UNetBaseline": "configs/cardiac/unet_tiny.py", "LGRNet": "configs/cardiac/lgrnet_tiny.py",
           "BoxSAM2": "configs/cardiac/box_sam2_tiny.py"}
DEFAULT_MODELS = ["UNetBaseline", "LGRNet"]


def _evaluate(run_dir: Path) -> dict:
    subprocess.run([sys.executable, str(REPO / "main.py"), "--trainer_mode", "eval", "--eval_path",
                    str(run_dir / "checkpoints" / "model_final.pth")], check=True, cwd=REPO,
                   stdout=subprocess.DEVNULL)
    metrics = next((run_dir / "eval").rglob("metrics.json"))
    return json.loads(metrics.read_text())


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget_s", type=float, default=420.0, help="training wall-clock per model (seconds)")
    ap.add_argument("--calib_iters", type=int, default=40)
    ap.add_argument("--models", nargs="+", choices=list(CONFIGS), default=DEFAULT_MODELS,
                    help="which configs (the U-Net is the reference of the ratios; it is always trained)")
    ap.add_argument("--out", type=Path, default=REPO / "output/bench/lgrnet_vs_unet")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args(argv)
    results = {}
    for name in dict.fromkeys(["UNetBaseline", *args.models]):
        config = CONFIGS[name]
        calib = args.out / f"{name}_calib"
        _train(config, calib, args.calib_iters, args.overrides)
        s_it = _seconds_per_iter(calib)
        iters = max(10, int(args.budget_s / s_it))
        run = args.out / name
        wall = _train(config, run, iters, args.overrides)
        m = _evaluate(run)
        results[name] = dict(config=config, s_per_iter=s_it, iterations=iters, train_wall_s=wall,
                             mDice=m["mDice"], mIoU=m["mIoU"], per_class_dice={k[5:]: v for k, v in m.items() if k.startswith("Dice_")})
        print(f"{name}: {iters} iterations at {s_it:.2f} s/it, trained in {wall:.0f} s, mDice {m['mDice']:.4f}",
              flush=True)
    u = results["UNetBaseline"]
    print("\n| model | config | iterations | s/it | train wall-clock (s) | mDice | mIoU |\n|---|---|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | `{r['config']}` | {r['iterations']} | {r['s_per_iter']:.2f} | {r['train_wall_s']:.0f} | "
              f"{r['mDice']:.4f} | {r['mIoU']:.4f} |")
    ratios = {}
    for name, r in results.items():
        if name != "UNetBaseline":
            ratios[name] = r["mDice"] / u["mDice"]
            print(f"\n{name} / U-Net mDice ratio: {ratios[name]:.3f} (wall-clock ratio "
                  f"{r['train_wall_s'] / u['train_wall_s']:.2f})")
    (args.out / "results.json").write_text(json.dumps({"budget_s": args.budget_s, "overrides": args.overrides,
                                                       "results": results, "mdice_ratio": ratios}, indent=1))


if __name__ == "__main__":
    main()
