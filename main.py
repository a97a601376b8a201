"""MedVidSeg command line: train, resume and evaluate from a Python config.

    python main.py --config_file configs/cardiac/unet_tiny.py --trainer_mode train_attmpt [key.path=value ...]
    python main.py --config_file configs/cardiac/unet_tiny.py --trainer_mode train_resume
    python main.py --config_file configs/cardiac/unet_tiny.py --trainer_mode eval --eval_path output/.../checkpoints
    torchrun --nproc_per_node 2 main.py ...   (same command; gloo on CPU, NCCL on CUDA)
"""
from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from core.errors import MedVidSegError

REPO = Path(__file__).resolve().parent
MODES = ("train_attmpt", "train_resume", "eval", "check_data")
# train_resume may change these keys (they do not alter the model, the data or the optimisation so far).
RESUME_SAFE_KEYS = ("train.max_iter", "train.eval_period", "train.checkpoint_period", "train.keep_last",
                    "train.log_period", "train.best_checkpoint", "data.evaluate", "data.num_workers",
                    "data.eval_batch_size", "data.evaluator", "data.roots", "data.bad_sample_policy",
                    "train.nonfinite", "log")

logger = logging.getLogger("medvidseg")


class UsageError(MedVidSegError):
    """A mistake in how the program was called; printed as one line."""


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="MedVidSeg: config-driven medical video segmentation (train / resume / evaluate).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Overrides: any number of key.path=value after the flags, e.g. train.max_iter=200 "
               "optim.base_lr=3e-4 data.evaluate=[echo_synth_site_test]. An unknown key is an error that names "
               "the closest existing key; +key=value adds a new key on purpose.\n"
               "Environment (optional): DATASET_PATH = folder holding real datasets (cardiacUDC_dataset/...).")
    p.add_argument("--config_file", help="Python config file (configs/...py) or a run's config.yaml. Required "
                                         "for training; for eval the checkpoint's own config is used if omitted.")
    p.add_argument("--trainer_mode", default="train_attmpt", choices=MODES + ("train_attempt",),
                   help="train_attmpt: start a new run (refused if the run directory already holds checkpoints); "
                        "train_resume: continue from the newest valid checkpoint of the run; "
                        "eval: evaluate --eval_path; check_data: scan the config's datasets and report every "
                        "problem file (exit 1 if any) before spending GPU hours. Default: train_attmpt.")
    p.add_argument("--eval_path", help="eval mode: a checkpoint file, or a folder whose checkpoints are all "
                                       "evaluated in iteration order (a run directory works too). Not needed "
                                       "for a model that does not train (trains=False) or whose config names "
                                       "its weights (model.*.checkpoint local files).")
    p.add_argument("--output_dir", help="run directory (default: output/<config path under configs/ without .py>; "
                                        "in eval mode, the run directory that holds the checkpoint).")
    p.add_argument("--start_over", action="store_true",
                   help="train_attmpt in a run directory that already holds checkpoints: move the old run aside "
                        "to <run>.old-<timestamp> (nothing is deleted) and start a new run.")
    p.add_argument("overrides", nargs="*", help="config overrides key.path=value")
    args = p.parse_intermixed_args(argv)  # overrides may come before, between or after the flags
    if args.trainer_mode == "train_attempt":
        args.trainer_mode = "train_attmpt"
    if args.trainer_mode != "eval" and not args.config_file:
        p.error(f"--config_file is required for --trainer_mode {args.trainer_mode}")
    if args.trainer_mode == "eval" and not args.eval_path and not args.config_file:
        p.error("--trainer_mode eval needs --eval_path (a checkpoint file or a folder of checkpoints), or "
                "--config_file alone for a model that needs no training (trains=False or model.*.checkpoint)")
    return args


def default_run_dir(config_file: str) -> Path:
    path = Path(config_file).resolve()
    try:
        rel = path.relative_to(REPO / "configs")
    except ValueError:
        rel = Path(path.name)
    return REPO / "output" / rel.with_suffix("")


def write_env_info(run_dir: Path, argv: list[str]) -> None:
    import torch

    try:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10).stdout.strip() or "unknown"
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit, dirty = "unknown", ""
    from importlib.metadata import PackageNotFoundError, version

    lines = [f"time: {datetime.datetime.now().isoformat(timespec='seconds')}",
             f"command: {' '.join(argv)}", f"git commit: {commit}{' (with local changes)' if dirty else ''}",
             f"python: {platform.python_version()} on {platform.platform()}",
             f"torch: {torch.__version__}, cuda available: {torch.cuda.is_available()}"]
    for pkg in ("timm", "segmentation-models-pytorch", "omegaconf", "fvcore", "numpy", "nibabel", "opencv-python-headless"):
        try:
            lines.append(f"{pkg}: {version(pkg)}")
        except PackageNotFoundError:
            pass
    (run_dir / "env.txt").write_text("\n".join(lines) + "\n")


def check_writable(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write_probe_{os.getpid()}"
        probe.write_bytes(b"x" * 4096)
        probe.unlink()
    except OSError as e:
        raise UsageError(f"Run directory {run_dir} is not writable: {e.strerror or e}") from None


def check_disk_space(run_dir: Path, ckpt_bytes: int, keep: int) -> None:
    """Refuse to start when the run directory's disk cannot hold a few checkpoints of ``ckpt_bytes`` each (what
    is saved: ``Trainer.checkpoint_bytes()``) plus room for logs and evaluation outputs."""
    import shutil

    needed = (max(keep, 2) + 1) * ckpt_bytes + 256 * 2**20
    free = shutil.disk_usage(run_dir).free
    if free < needed:
        raise UsageError(f"Not enough free disk space for run directory {run_dir}: {free / 2**20:.0f} MiB free, "
                         f"about {needed / 2**20:.0f} MiB needed for checkpoints and outputs")


def prepare_train_dir(run_dir: Path, mode: str, start_over: bool, main_process: bool = True) -> None:
    """Refuse to start over an existing run (every rank checks, so all fail together); rank 0 moves it aside
    with --start_over and checks that the directory is writable."""
    from core.checkpoint import list_checkpoints

    existing = list_checkpoints(run_dir)
    if mode == "train_attmpt" and existing:
        if not start_over:
            raise UsageError(
                f"Run directory {run_dir} already holds {len(existing)} checkpoint(s) (newest {existing[-1].name}); "
                f"use --trainer_mode train_resume to continue it, --output_dir for a new run, or --start_over to "
                f"move it aside and start again")
        if not main_process:
            return
        stamp = time.strftime("%Y%m%d-%H%M%S")
        archived = run_dir.with_name(f"{run_dir.name}.old-{stamp}")
        run_dir.rename(archived)
        print(f"Moved the previous run to {archived}", flush=True)
    if main_process:
        check_writable(run_dir)


def check_resume_config(cfg, run_dir: Path) -> None:
    """Refuse a resume whose config changes the model, data or optimisation (keys named)."""
    from core.config import config_diff, load_config

    saved = run_dir / "config.yaml"
    if not saved.exists():
        return
    diff = config_diff(load_config(saved), cfg)
    unsafe = [k for k in diff if not any(k == s or k.startswith(s + ".") for s in RESUME_SAFE_KEYS)]
    if unsafe:
        raise UsageError(f"train_resume with a changed config: {', '.join(unsafe)} differ from {saved}; only "
                         f"{', '.join(RESUME_SAFE_KEYS)} may change on resume (start a new run with --output_dir)")
    if diff:
        logger.info(f"Resuming with changed keys (allowed): {', '.join(diff)}")


def results_table(results: dict[str, dict], title: str = "") -> str:
    """Markdown table of {dataset: metrics}; the per-class columns are those the evaluators report (each
    dataset's class names, in their order; a class another dataset lacks is left blank)."""
    classes = list(dict.fromkeys(k for res in results.values() for k in res if k.startswith("Dice_")))
    extra = [k for k in ("mHD95", "mSliceDice", "EF_MAE", "EF_corr") if any(k in res for res in results.values())]
    cols = ["mDice", "mIoU", *classes, *extra, "num_samples"]
    lines = [title] if title else []
    lines += ["| dataset | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for ds, res in results.items():
        vals = [f"{res[c]:.4f}" if isinstance(res.get(c), float) else str(res.get(c, "")) for c in cols]
        lines.append(f"| {ds} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


def set_roots(cfg) -> None:
    import data_schedule  # noqa: F401  (the registers record their families' roots)
    from core.catalog import BadData, DatasetRoots

    DatasetRoots.configure(cfg.data.get("roots"))
    BadData.set_policy(cfg.data.get("bad_sample_policy", "error"))


def run_train(args, argv) -> None:
    from core import comm
    from core.checkpoint import latest_valid_checkpoint
    from core.config import dump_config, load_config
    from core.logger import setup_logger
    from models.complexity import count_flops, count_params
    from trainers import Trainer

    cfg = load_config(args.config_file, args.overrides)
    run_dir = Path(args.output_dir) if args.output_dir else default_run_dir(args.config_file)
    # Model, optimizer and LR schedule first: a wrong key there fails before the run directory is touched.
    trainer = Trainer(cfg, run_dir)
    prepare_train_dir(run_dir, args.trainer_mode, args.start_over, comm.is_main_process())
    comm.synchronize()
    setup_logger(run_dir, comm.get_rank())
    found = None
    if args.trainer_mode == "train_resume":
        found = latest_valid_checkpoint(run_dir)
        if found is None:
            raise UsageError(f"Nothing to resume: no valid checkpoint in {run_dir / 'checkpoints'}; start the run "
                             f"with --trainer_mode train_attmpt")
        check_resume_config(cfg, run_dir)
    set_roots(cfg)
    if comm.is_main_process():
        dump_config(cfg, run_dir / "config.yaml")
        write_env_info(run_dir, argv)
    logger.info(f"Run directory: {run_dir}")
    if comm.is_main_process():
        check_disk_space(run_dir, trainer.checkpoint_bytes(), int(cfg.train.keep_last))
    if found is not None:
        trainer.load_checkpoint_state(found[1], found[0])
    if comm.is_main_process():
        clip_len, size, support = flop_clip(cfg)
        info = {**count_params(trainer.model), "model": cfg.model.name,
                "gflops_per_clip": count_flops(trainer.model, clip_len, size, trainer.device, support),
                "clip_len": clip_len, "size": list(size)}
        (run_dir / "model_info.json").write_text(json.dumps(info, indent=2))
        gf = info["gflops_per_clip"]
        logger.info(f"Model {cfg.model.name}: {info['params'] / 1e6:.2f} M params at inference "
                    f"({info['training_params'] / 1e6:.2f} M in training, {info['trainable_params'] / 1e6:.2f} M "
                    f"trainable), "
                    f"{'n/a' if gf is None else f'{gf:.2f}'} GFLOPs (MACs) per {info['clip_len']}-frame clip")
    trainer.train()
    if trainer.latest_eval and comm.is_main_process():
        print(results_table(trainer.latest_eval, f"Results at iteration {trainer.max_iter} ({run_dir}):"),
              flush=True)


def flop_clip(cfg) -> tuple[int, tuple[int, int], int]:
    """(frames, size, support slices per class) of the clip the FLOP count runs ``predict`` on: the evaluation
    mapper's clip (11 frames and the first evaluation entry's mapper for whole-video configs without one)."""
    mapper = cfg.data.eval_mapper
    if mapper is None:
        entries = [e for e in cfg.data.evaluate if not isinstance(e, str) and e.get("mapper") is not None]
        mapper = entries[0].mapper if entries else cfg.data.train_mapper
    clip_len = int(mapper.get("clip_len", 11) or 11) if mapper is not None else 11
    size = tuple(mapper.size) if mapper is not None and mapper.get("size") is not None else (128, 128)
    return clip_len, size, int(mapper.get("support_size", 1) or 1) if mapper is not None else 1


def config_checkpoints(model_cfg) -> list[str]:
    """The local weight files a model config names: every non-empty ``model.*.checkpoint`` value."""
    from omegaconf import OmegaConf

    found = []

    def walk(node):
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "checkpoint" and isinstance(v, str) and v:
                    found.append(v)
                else:
                    walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(OmegaConf.to_container(model_cfg, resolve=True) if OmegaConf.is_config(model_cfg) else model_cfg)
    return found


def run_eval(args, argv) -> None:
    if not args.eval_path:
        return run_eval_untrained(args, argv)
    from core import comm
    from core.checkpoint import CheckpointError, checkpoint_iteration, list_checkpoints, load_checkpoint
    from core.config import config_from_container, load_config
    from core.logger import setup_logger
    from trainers.evaluation import evaluate_all
    from trainers.train_loop import default_device, load_model

    path = Path(args.eval_path)
    if path.is_dir():
        ckpts = list_checkpoints(path)
        if not ckpts:
            raise CheckpointError(f"No checkpoints (model_*.pth) in {path}")
    elif path.is_file():
        ckpts = [path]
    else:
        raise CheckpointError(f"Checkpoint not found: {path}")
    run_dir = Path(args.output_dir) if args.output_dir else (
        ckpts[0].parent.parent if ckpts[0].parent.name == "checkpoints" else ckpts[0].parent)
    setup_logger(run_dir, comm.get_rank())
    device = default_device()
    all_results = {}
    for ckpt_path in ckpts:
        ckpt = load_checkpoint(ckpt_path)
        if args.config_file:
            cfg = load_config(args.config_file, args.overrides)
        else:
            if "config" not in ckpt:
                raise CheckpointError(f"Checkpoint {ckpt_path} holds no config; pass --config_file")
            cfg = config_from_container(ckpt["config"], f"checkpoint {ckpt_path}", args.overrides)
        set_roots(cfg)
        model = load_model(cfg, device, ckpt, ckpt_path)
        eval_root = run_dir / "eval" if len(ckpts) == 1 else run_dir / "eval" / ckpt_path.stem
        it = ckpt.get("iteration", checkpoint_iteration(ckpt_path))
        logger.info(f"Evaluating {ckpt_path} (iteration {it})")
        res = evaluate_all(model, cfg, eval_root, device, extra_info={"iteration": it, "checkpoint": str(ckpt_path)})
        all_results[ckpt_path.name] = res
        if comm.is_main_process():
            print(results_table(res, f"Checkpoint {ckpt_path} (iteration {it}):"), flush=True)
    if len(ckpts) > 1 and comm.is_main_process():
        rows = {f"{name} / {ds}": r for name, res in all_results.items() for ds, r in res.items()}
        print(results_table(rows, "All checkpoints:"), flush=True)


def run_eval_untrained(args, argv) -> None:
    """``eval`` with ``--config_file`` and no ``--eval_path``: a model that does not train (``trains = False``) or
    whose config names its weights (``model.*.checkpoint``) is evaluated as built; any other is refused."""
    from core import comm
    from core.checkpoint import list_checkpoints
    from core.config import dump_config, load_config
    from core.logger import setup_logger
    from trainers.evaluation import evaluate_all
    from trainers.train_loop import default_device, load_model

    cfg = load_config(args.config_file, args.overrides)
    device = default_device()
    model = load_model(cfg, device)
    weights = config_checkpoints(cfg.model)
    if model.trains and not weights:
        raise UsageError(f"--trainer_mode eval needs --eval_path for model {cfg.model.name!r}: it trains "
                         f"(trains=True) and its config names no weights (model.*.checkpoint); pass a checkpoint "
                         f"file or folder of {args.config_file}")
    run_dir = Path(args.output_dir) if args.output_dir else default_run_dir(args.config_file)
    existing = list_checkpoints(run_dir)
    if existing:  # a training run's directory: its config.yaml and eval/ are not ours to overwrite
        raise UsageError(f"Run directory {run_dir} holds {len(existing)} checkpoint(s) of a training run; pass "
                         f"--eval_path {run_dir / 'checkpoints'} to evaluate them, or --output_dir for this "
                         f"evaluation")
    if comm.is_main_process():
        check_writable(run_dir)
    comm.synchronize()
    setup_logger(run_dir, comm.get_rank())
    set_roots(cfg)
    if comm.is_main_process():
        dump_config(cfg, run_dir / "config.yaml")
        write_env_info(run_dir, argv)
    source = f"weights {', '.join(weights)}" if weights else "no checkpoint (trains=False)"
    logger.info(f"Evaluating {cfg.model.name} from {args.config_file} with {source}")
    res = evaluate_all(model, cfg, run_dir / "eval", device, extra_info={"iteration": 0, "checkpoint": None,
                                                                          "weights": weights})
    if comm.is_main_process():
        print(results_table(res, f"{cfg.model.name} ({source}):"), flush=True)


def run_check_data(args, argv) -> int:
    from core.config import load_config
    from data_schedule.check_data import check_config_datasets

    cfg = load_config(args.config_file, args.overrides)
    text, problems = check_config_datasets(cfg)
    print(text, flush=True)
    return 1 if problems else 0


def main(argv=None) -> int:
    argv = list(sys.argv if argv is None else ["main.py", *argv])
    args = parse_args(argv[1:])
    from core import comm

    import data_schedule  # noqa: F401  (registers datasets, mappers, samplers)
    import evaluators  # noqa: F401
    import models  # noqa: F401

    comm.init_distributed()
    try:
        if args.trainer_mode == "check_data":
            return run_check_data(args, argv)
        (run_eval if args.trainer_mode == "eval" else run_train)(args, argv)
    except MedVidSegError as e:  # bad input: one line
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 1
    except Exception:  # a bug: its traceback goes to log.txt too, and on to the console
        from core.logger import log_exception_to_file

        log_exception_to_file()
        raise
    finally:
        if comm.is_dist():
            import torch.distributed as dist

            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
