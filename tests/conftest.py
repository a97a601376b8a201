"""Shared fixtures: a tiny synthetic CardiacUDC-layout dataset (generated once per test session) and a helper
that writes a tiny training config."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

TINY_SYNTH = dict(seed=0, videos_per_site=3, size_scale=0.5, frames=(16, 24), annotated_frames=(2, 4))


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    """Root holding ``cardiacUDC_dataset`` (tiny); echo_synth_* datasets read it for the whole session."""
    from core.catalog import DatasetCatalog
    from data_schedule.synthetic.echo_synth import generate_echo_synth

    base = tmp_path_factory.mktemp("echo_synth")
    generate_echo_synth(base, **TINY_SYNTH)
    os.environ["ECHO_SYNTH_ROOT"] = str(base)
    os.environ["MEDVIDSEG_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    DatasetCatalog.clear_cache()
    return base


TINY_OVERRIDES = [
    "train.max_iter=4", "train.eval_period=2", "train.checkpoint_period=2", "train.batch_size=2",
    "train.log_period=1", "optim.scheduler.warmup_iters=1", "data.num_workers=0", "data.eval_batch_size=4",
    "data.train_mapper.size=[64,64]", "data.eval_mapper.size=[64,64]", "data.eval_mapper.clip_len=5",
    "data.train_mapper.clip_len=3", "log.wandb.enabled=false", "log.tensorboard=false",
    "data.evaluator.num_vis=1", "model.decoder_channels=[32,16,16,8,8]",
]


@pytest.fixture
def tiny_config(tmp_path) -> Path:
    """A config file inheriting the U-Net baseline (the overrides above shrink it)."""
    repo = Path(__file__).resolve().parents[1]
    path = tmp_path / "tiny_unet.py"
    path.write_text(f'_base_ = ["{repo}/configs/cardiac/unet_tiny.py"]\n')
    return path


@pytest.fixture(autouse=True)
def _reset_dataset_roots():
    """Runs set dataset roots/policies from their configs; give every test the defaults back."""
    yield
    import data_schedule  # noqa: F401
    from core.catalog import BadData, DatasetRoots

    for family in DatasetRoots.families():
        DatasetRoots.set(family, None)
    BadData.set_policy("error")


@contextlib.contextmanager
def crash_at(monkeypatch, iteration: int):
    """Inside the block, ``Trainer.run_step`` raises ``RuntimeError("simulated crash")`` instead of running step
    ``iteration`` (0-based, so the checkpoints of the steps before it are on disk); the real step is back after."""
    from trainers.train_loop import Trainer

    real_step = Trainer.run_step

    def step(self):
        if self.iter == iteration:
            raise RuntimeError("simulated crash")
        real_step(self)

    monkeypatch.setattr(Trainer, "run_step", step)
    try:
        yield
    finally:
        monkeypatch.setattr(Trainer, "run_step", real_step)
