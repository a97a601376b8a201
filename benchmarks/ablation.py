#!/usr/bin/env python
"""Seed 000's ablation table from real runs: BASIC, +HTS, +LGSD, +HTS+LGSD on the embedded data.

    python benchmarks/ablation.py [--out output/ablation] [--seeds 0 1] [--spread_rows best|all] [--update README.md]
        [key=value ...]

Every row is LGRNet-tiny trained with `main.py --trainer_mode train_attmpt` for the same number of iterations
(its config's ``train.max_iter``, 600; ``train.max_iter=N`` as an override changes all rows) with the same seed,
evaluated once after the last iteration on echo_synth_random_test. Then the best row (by mDice) and BASIC are
trained again with each further seed of ``--seeds``, for the seed spread (``--spread_rows all``: every row). A run whose directory already holds a
final evaluation is reused (``--rerun`` trains it again), so an interrupted ablation continues where it stopped.

Writes into ``--out``: one run directory per (row, seed), each with its ``curves.png`` (tools/plot_curves.py),
``ablation.json`` (wall-clock and metrics of every run) and ``ablation.md`` (the table from tools/results_table.py
with links to log, checkpoint and prediction video, the seed spread and the wall-clock per run); with
``--update FILE`` the same Markdown replaces FILE's ``<!-- results:ablation -->`` block.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tools.plot_curves import plot_run  # noqa: E402
from tools.results_table import table, update_between_markers  # noqa: E402

ROWS = {  # label -> config (each a few lines on top of lgrnet_tiny.py)
    "BASIC": "configs/cardiac/lgrnet_tiny.py",
    "+HTS": "configs/cardiac/lgrnet_tiny_hts.py",
    "+LGSD": "configs/cardiac/lgrnet_tiny_lgsd.py",
    "+HTS+LGSD": "configs/cardiac/lgrnet_tiny_hts_lgsd.py",
    # LGSD variants, trained only when named in --rows (issue 11's measurements of why LGSD's targets go uniform)
    "+LGSD-slots": "configs/cardiac/lgrnet_tiny_lgsd_slots.py",  # every frame-query slot distilled (iBOT-style)
    "+LGSD-perview": "configs/cardiac/lgrnet_tiny_lgsd_perview.py",  # head statistics per view group
    # seed 000's BOX-SAM2 row (another meta-architecture, its own 1500-iteration schedule); only via --rows.
    # benchmarks/box_sam2.py decomposes its result (GT-box upper bound, box noise, box head accuracy)
    "BOX-SAM2": "configs/cardiac/box_sam2_tiny.py",
}
DEFAULT_ROWS = ["BASIC", "+HTS", "+LGSD", "+HTS+LGSD"]
DATASET = "echo_synth_random_test"
QUIET = ["log.wandb.enabled=false", "log.tensorboard=false"]


def _slug(label: str) -> str:
    return {"BASIC": "basic"}.get(label, label.strip("+").replace("+", "_").lower())


def run_dir(out: Path, label: str, seed: int) -> Path:
    return out / f"{_slug(label)}_seed{seed}"


def _metrics(run: Path) -> dict | None:
    f = run / "eval" / DATASET / "metrics.json"
    return json.loads(f.read_text()) if f.is_file() and (run / "checkpoints" / "model_final.pth").is_file() else None


def train(label: str, seed: int, out: Path, overrides: list[str], rerun: bool, threads: int | None = None,
          jobs: int = 1) -> dict:
    """Train (or reuse) one run; returns its record (wall-clock, s/it, metrics). ``threads``: OMP/torch threads of
    the training process (default: torch's); ``jobs``: how many runs share the machine (recorded)."""
    run = run_dir(out, label, seed)
    record_file = run / "ablation_run.json"
    if not rerun and _metrics(run) is not None and record_file.is_file():
        print(f"{label} seed {seed}: reusing {run}", flush=True)
        return json.loads(record_file.read_text())
    cmd = [sys.executable, str(REPO / "main.py"), "--config_file", str(REPO / ROWS[label]), "--trainer_mode",
           "train_attmpt", "--output_dir", str(run), f"train.seed={seed}", "train.eval_period=0",
           "train.log_period=10", *QUIET, *overrides]
    if run.exists():
        cmd.append("--start_over")  # an unfinished or --rerun run: archived next to it, never deleted
    print(f"{label} seed {seed}: training -> {run}", flush=True)
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    t = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=REPO, stdout=subprocess.DEVNULL, env=env)
    wall = time.perf_counter() - t
    m = _metrics(run)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    times = [r["time"] for r in rows if "time" in r]
    record = dict(label=label, config=ROWS[label], seed=seed, run=str(run.relative_to(out)), wall_s=wall,
                  s_per_iter=sum(times) / len(times), iterations=m["iteration"], mDice=m["mDice"], mIoU=m["mIoU"],
                  dice={k[5:]: v for k, v in m.items() if k.startswith("Dice_")},
                  threads=threads or torch.get_num_threads(), concurrent_runs=jobs)
    record_file.write_text(json.dumps(record, indent=1))
    plot_run(run, run / "curves.png")
    print(f"{label} seed {seed}: mDice {m['mDice']:.4f}, {wall:.0f} s ({record['s_per_iter']:.2f} s/it)", flush=True)
    return record


def lgsd_gauges(run: Path, last: int = 100) -> dict[str, float] | None:
    """LGSD's logged collapse gauges of one run: the teacher targets' entropy at the first log and averaged over
    the last ``last`` iterations, and the same average of their spread between samples (runs logged before the
    spread existed have none); None for a run without LGSD."""
    f = run / "metrics.jsonl"
    rows = [json.loads(line) for line in f.read_text().splitlines()] if f.is_file() else []
    rows = [r for r in rows if "lgsd_target_entropy" in r]
    if not rows:
        return None
    end = rows[-1]["iteration"]
    tail = [r for r in rows if r["iteration"] > end - last]
    out = dict(entropy_first=rows[0]["lgsd_target_entropy"],
               entropy_last=sum(r["lgsd_target_entropy"] for r in tail) / len(tail))
    spread = [r["lgsd_target_spread"] for r in tail if "lgsd_target_spread" in r]
    if spread:
        out["spread_last"] = sum(spread) / len(spread)
    return out


def markdown(records: list[dict], out: Path, links_base: Path, first_seed: int, command: str) -> str:
    first = [r for r in records if r["seed"] == first_seed]
    runs = [f"{r['label']}={out / r['run']}" for r in first]
    lines = [f"Seed {first_seed}, {first[0]['iterations']} iterations each, {DATASET}:", "",
             table(runs, DATASET, links_base, strict=True), ""]
    by_label: dict[str, list[dict]] = {}
    for r in records:
        by_label.setdefault(r["label"], []).append(r)
    multi = {k: v for k, v in by_label.items() if len(v) > 1}
    if multi:
        lines += ["Seed spread (mDice per seed; mean ± half the range):", "",
                  "| row | seeds | mDice per seed | mean ± half-range |", "|---|---|---|---|"]
        for label, rs in multi.items():
            rs = sorted(rs, key=lambda r: r["seed"])
            vals = [r["mDice"] for r in rs]
            lines.append(f"| {label} | {', '.join(str(r['seed']) for r in rs)} | "
                         f"{', '.join(f'{v:.4f}' for v in vals)} | {sum(vals) / len(vals):.4f} ± "
                         f"{(max(vals) - min(vals)) / 2:.4f} |")
        lines.append("")
    gauges = [(r, lgsd_gauges(out / r["run"])) for r in records]
    gauges = [(r, g) for r, g in gauges if g is not None]
    if gauges:
        lines += ["LGSD's teacher targets (`lgsd_target_entropy`: log K = uniform; `lgsd_target_spread`: how much "
                  "they differ between samples, 0 = all alike), first log and mean over the last 100 iterations:",
                  "", "| row | seed | entropy, first | entropy, last 100 | log K | spread, last 100 |",
                  "|---|---|---|---|---|---|"]
        for r, g in gauges:
            cfg = out / r["run"] / "config.yaml"
            k = OmegaConf.select(OmegaConf.load(cfg), "model.lgsd.out_dim") if cfg.is_file() else None
            log_k = f"{math.log(k):.2f}" if k else "—"
            spread = f"{g['spread_last']:.3f}" if "spread_last" in g else "—"
            lines.append(f"| {r['label']} | {r['seed']} | {g['entropy_first']:.2f} | {g['entropy_last']:.2f} | "
                         f"{log_k} | {spread} |")
        lines.append("")
    lines += ["Wall-clock per run (2-core CPU; training, FLOP count and the final evaluation; runs that shared the "
              "machine ran side by side with one thread each):", "",
              "| row | seed | threads | runs side by side | s/it | wall-clock (s) |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['label']} | {r['seed']} | {r.get('threads', 2)} | {r.get('concurrent_runs', 1)} | "
              f"{r['s_per_iter']:.2f} | {r['wall_s']:.0f} |" for r in records]
    lines += ["", f"Regenerate: `{command}` (finished runs in {out.name}/ are reused; `--rerun` trains them again)."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "output/ablation")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1],
                    help="first: every row; the others: the best row and BASIC")
    ap.add_argument("--rows", nargs="+", default=DEFAULT_ROWS, choices=list(ROWS),
                    help=f"default: {' '.join(DEFAULT_ROWS)}")
    ap.add_argument("--spread_rows", choices=["best", "all"], default="best",
                    help="rows trained with the further seeds: BASIC and the best row (default), or every row")
    ap.add_argument("--update", type=Path, help="Markdown file whose <!-- results:ablation --> block to replace")
    ap.add_argument("--rerun", action="store_true", help="train again even where a finished run exists")
    ap.add_argument("--jobs", type=int, default=1,
                    help="runs side by side, each with cores/jobs threads (on 2 cores, 2 one-thread runs have ~1.3x "
                         "the throughput of one two-thread run)")
    ap.add_argument("overrides", nargs="*", help="config overrides for every run (key=value)")
    args = ap.parse_args(argv)
    out = args.out.resolve()
    threads = max(1, (os.cpu_count() or 1) // args.jobs) if args.jobs > 1 else None

    def train_all(labels: list[str], seed: int) -> list[dict]:
        if args.jobs == 1:
            return [train(label, seed, out, args.overrides, args.rerun) for label in labels]
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(args.jobs) as pool:
            return list(pool.map(lambda lab: train(lab, seed, out, args.overrides, args.rerun, threads,
                                                   args.jobs), labels))

    records = train_all(args.rows, args.seeds[0])
    best = max(records, key=lambda r: r["mDice"])["label"]
    again = args.rows if args.spread_rows == "all" else [lab for lab in dict.fromkeys(["BASIC", best])
                                                          if lab in args.rows]
    print(f"best row at seed {args.seeds[0]}: {best}; further seeds {args.seeds[1:]} for {again}", flush=True)
    for seed in args.seeds[1:]:
        records += train_all(again, seed)
    (out / "ablation.json").write_text(json.dumps({"overrides": args.overrides, "seeds": args.seeds,
                                                   "best": best, "runs": records}, indent=1))
    base = args.update.resolve().parent if args.update else out
    command = " ".join(["python benchmarks/ablation.py", *(argv if argv is not None else sys.argv[1:])])
    text = markdown(records, out, base, args.seeds[0], command)
    (out / "ablation.md").write_text(markdown(records, out, out, args.seeds[0], command) + "\n")
    if args.update:
        update_between_markers(args.update, "ablation", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
