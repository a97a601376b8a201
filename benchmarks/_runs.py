"""Training and loading runs for the benchmarks: ``train_run`` / ``seconds_per_iter`` (lgrnet_vs_unet.py,
arseg_comparison.py) and ``load_run`` (incontext_ablation.py, incontext_comparison.py, samurai_vs_sam2.py,
arseg_comparison.py)."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
QUIET = ["log.wandb.enabled=false", "log.tensorboard=false"]


def train_run(config: str, out: Path, iters: int, extra: list[str], log_period: int = 5) -> float:
    """Train ``config`` for ``iters`` iterations into ``out`` (``--start_over``, no periodic evaluation, one final
    checkpoint, warm-up a tenth of the run up to 100) with ``main.py``; returns the process's wall-clock seconds."""
    cmd = [sys.executable, str(REPO / "main.py"), "--config_file", str(REPO / config), "--trainer_mode",
           "train_attmpt", "--output_dir", str(out), "--start_over", f"train.max_iter={iters}",
           "train.eval_period=-1", f"train.checkpoint_period={iters}", f"train.log_period={log_period}",
           f"optim.scheduler.warmup_iters={max(1, min(100, iters // 10))}", *QUIET, *extra]
    t = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def seconds_per_iter(run_dir: Path) -> float:
    """Mean training seconds per iteration from the run's log windows, the first two (loader start, allocator
    warm-up) left out; the process's wall-clock also holds start-up and FLOP counting."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    times = [r["time"] for r in rows if "time" in r]
    steady = times[2:] or times[-1:]
    return sum(steady) / len(steady)


def load_run(path: Path, device):
    """(model in eval mode, its config, the checkpoint) of a run's checkpoint, loaded as ``--trainer_mode eval``
    loads it (``trainers.train_loop.load_model``: adapters-only checkpoints on their checked frozen base too), with
    W&B and TensorBoard off and the config's dataset roots set."""
    from core.checkpoint import load_checkpoint
    from core.config import config_from_container
    from main import set_roots
    from trainers.train_loop import load_model

    ckpt = load_checkpoint(path)
    cfg = config_from_container(ckpt["config"], f"checkpoint {path}", ["log.wandb.enabled=false",
                                                                        "log.tensorboard=false"])
    set_roots(cfg)
    return load_model(cfg, device, ckpt, path).eval(), cfg, ckpt
