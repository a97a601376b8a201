#!/usr/bin/env python
"""Few-shot site adaptation of SAMURAI (seed 003's LoRA recipe) against no adaptation and full fine-tuning.

    python benchmarks/samurai_adaptation.py --base output/sam2_tiny_site/checkpoints/model_final.pth \
        [--videos 1 2 4] [--iters 100] [--out output/samurai_adaptation]

Start: a SAM2 trained on the cross-site split (``configs/cardiac/sam2_tiny_site.py``), exported with
``tools/export_sam2.py``. Target: the held-out site Site_G_29, whose labelled videos are split in name order into
an adaptation pool (first half) and a fixed test set (second half: ``echo_synth_site_adapt*_test``, the same
videos for every row). Rows, each evaluated with SAMURAI on whole test videos (GT-mask prompt on the first
annotated frame, the other annotated frames scored):
- ``no adaptation``: the exported SAM2, frozen (``--trainer_mode eval`` without a checkpoint);
- ``LoRA, n videos``: ``configs/cardiac/samurai_tiny_lora_adapt.py`` (r 8, alpha 8, dropout 0 on layers 0-1 of
  the mask decoder's two-way transformer and of memory attention; adapters-only checkpoints), trained ``--iters``
  iterations at lr ``--lora_lr`` on the first n pool videos;
- ``full, n videos``: the same runs with every SAM2 parameter trained, at lr ``--full_lr``.
Wall-clock is the whole process (model build, training and the final evaluation of the test videos); the runs
of one invocation run one after another on the same machine. A run folder with a final evaluation is reused
(``--rerun`` trains again). Writes ``adaptation.json`` / ``.md`` into ``--out``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CONFIG = REPO / "configs" / "cardiac" / "samurai_tiny_lora_adapt.py"
TAG = "echo_synth_site_heldout_video"
QUIET = ["log.wandb.enabled=false", "log.tensorboard=false", "train.log_period=10"]


def _metrics(run: Path) -> dict | None:
    f = run / "eval" / TAG / "metrics.json"
    return json.loads(f.read_text()) if f.is_file() else None


def _run(cmd: list[str], log: Path) -> float:
    t = time.perf_counter()
    with open(log, "w") as f:
        subprocess.run(cmd, check=True, cwd=REPO, stdout=f, stderr=subprocess.STDOUT,
                       env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return round(time.perf_counter() - t, 1)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, help="checkpoint of the cross-site SAM2 run")
    ap.add_argument("--videos", type=int, nargs="*", default=[1, 2, 4])
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--lora_lr", type=float, default=1e-3)
    ap.add_argument("--full_lr", type=float, default=2e-4)
    ap.add_argument("--out", default="output/samurai_adaptation")
    ap.add_argument("--rerun", action="store_true")
    args = ap.parse_args(argv)
    from tools.export_sam2 import export

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    base = out / "sam2_base.pth"
    if not base.is_file() or args.rerun:
        export(args.base, base, overwrite=True)
    common = [sys.executable, str(REPO / "main.py"), "--config_file", str(CONFIG), *QUIET,
              f"model.sam2.checkpoint={base}"]
    rows: dict[str, dict] = {}
    plan = [("no adaptation", "none", 0)] + [(f"{kind}, {n} video{'s' if n > 1 else ''}", kind, n)
                                             for n in args.videos for kind in ("LoRA", "full")]
    for label, kind, n in plan:
        run = out / (kind.lower() if kind == "none" else f"{kind.lower()}_n{n}")
        if args.rerun or _metrics(run) is None:
            if kind == "none":
                cmd = [*common, "--trainer_mode", "eval", "--output_dir", str(run), "model.sam2_train=frozen",
                       "model.lora=null"]
            else:
                cmd = [*common, "--trainer_mode", "train_attmpt", "--output_dir", str(run), "--start_over",
                       f"data.train=[echo_synth_site_adapt{n}_train]", f"train.max_iter={args.iters}",
                       f"train.checkpoint_period={args.iters}"]
                cmd += ([f"optim.base_lr={args.lora_lr}"] if kind == "LoRA" else
                        [f"optim.base_lr={args.full_lr}", "model.sam2_train=full", "model.lora=null",
                         "train.checkpoint.state=full"])
            wall = _run(cmd, out / f"{run.name}.log")
            (run / "adaptation_run.json").write_text(json.dumps({"wall_s": wall}))
        m = _metrics(run)
        info = json.loads((run / "model_info.json").read_text()) if (run / "model_info.json").is_file() else {}
        wall = json.loads((run / "adaptation_run.json").read_text())["wall_s"] \
            if (run / "adaptation_run.json").is_file() else None
        rows[label] = {"mDice": m["mDice"], "mLost": m.get("mLost"), "videos": n, "run": str(run),
                       "trainable_params": info.get("trainable_params", 0) if kind != "none" else 0,
                       "wall_s": wall, **{k: m[k] for k in m if k.startswith("Dice_")}}
        print(f"{label:18} mDice {m['mDice']:.4f}  lost {m.get('mLost', float('nan')):.3f}  trainable "
              f"{rows[label]['trainable_params']:,}  wall {wall} s", flush=True)
    report = {"base": str(args.base), "iters": args.iters, "lora_lr": args.lora_lr, "full_lr": args.full_lr,
              "rows": rows}
    (out / "adaptation.json").write_text(json.dumps(report, indent=1) + "\n")
    lines = [f"SAMURAI adapted to the held-out site (Site_G_29; tested on its {TAG} videos), {args.iters} "
             f"iterations, lr LoRA {args.lora_lr:g} / full {args.full_lr:g}", "",
             "| adaptation | videos | mDice | LV | LA | RA | RV | lost | trainable params | wall-clock (s) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for k, r in rows.items():
        lines.append(f"| {k} | {r['videos']} | {r['mDice']:.4f} | " + " | ".join(
            f"{r.get(f'Dice_{c}', float('nan')):.3f}" for c in ("LV", "LA", "RA", "RV")) +
            f" | {r['mLost']:.3f} | {r['trainable_params']:,} | {r['wall_s']} |")
    (out / "adaptation.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
