"""Loading a trained run for the benchmarks (shared by incontext_ablation.py, incontext_comparison.py and
samurai_vs_sam2.py)."""
from __future__ import annotations

from pathlib import Path


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
