"""Optimizer param groups, LR schedules, and trainer options (accumulation, wandb offline)."""
from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

import main as cli
from core.checkpoint import load_checkpoint
from tests.conftest import TINY_OVERRIDES
from trainers.build import build_optimizer, build_scheduler, param_groups


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
        self.head = nn.Linear(4, 2)
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)


def test_param_groups_apply_multipliers_and_skip_frozen_and_decay_on_norms():
    groups = param_groups(Net(), base_lr=1.0, weight_decay=0.1, lr_multipliers={"encoder": 0.1, "encoder.0": 0.5})
    by = {(g["lr"], g["weight_decay"]): sum(p.numel() for p in g["params"]) for g in groups}
    assert by == {(0.5, 0.1): 108, (0.5, 0.0): 4, (0.1, 0.0): 8, (1.0, 0.1): 8, (1.0, 0.0): 2}
    with pytest.raises(KeyError, match="match no trainable parameter"):
        param_groups(Net(), 1.0, 0.0, {"decoder": 0.1})


def lrs(name, max_iter=100, **kw):
    cfg = OmegaConf.create({"name": name, **kw})
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=2.0)
    sched = build_scheduler(opt, cfg, max_iter)
    out = []
    for _ in range(max_iter):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_warmup_cosine_values():
    v = lrs("warmup_cosine", warmup_iters=10, warmup_factor=0.0, min_lr_ratio=0.0)
    assert v[0] == pytest.approx(0.0) and v[5] == pytest.approx(1.0)  # linear warmup to 2.0 over 10 iters
    assert v[10] == pytest.approx(2.0)
    assert v[55] == pytest.approx(2.0 * 0.5 * (1 + math.cos(math.pi * 45 / 90)))
    assert v[99] < 0.01


def test_warmup_step_milestones_are_absolute():
    v = lrs("warmup_step", milestones=[50, 80], gamma=0.1, warmup_iters=0)
    assert v[49] == pytest.approx(2.0) and v[50] == pytest.approx(0.2) and v[80] == pytest.approx(0.02)


def test_optimizer_from_config_uses_base_lr_and_betas():
    cfg = OmegaConf.create({"name": "AdamW", "base_lr": 0.01, "weight_decay": 0.05, "betas": [0.8, 0.9],
                            "lr_multipliers": {"head": 2.0}})
    opt = build_optimizer(Net(), cfg)
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["betas"] == (0.8, 0.9)
    assert sorted({g["lr"] for g in opt.param_groups}) == [0.01, 0.02]


def test_grad_accumulation_consumes_accum_batches_per_step(synth_root, tiny_config, tmp_path):
    out = tmp_path / "acc"
    assert cli.main(["--config_file", str(tiny_config), "--output_dir", str(out), *TINY_OVERRIDES,
                     "train.max_iter=2", "train.grad_accum=3", "train.eval_period=-1"]) == 0
    ck = load_checkpoint(out / "checkpoints" / "model_final.pth")
    assert ck["sampler"]["consumed"] == 2 * 3 * 2


def test_wandb_offline_run_is_written_locally(synth_root, tiny_config, tmp_path):
    out = tmp_path / "wb"
    assert cli.main(["--config_file", str(tiny_config), "--output_dir", str(out), *TINY_OVERRIDES,
                     "train.max_iter=1", "train.eval_period=-1", "log.wandb.enabled=true"]) == 0
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and (out / "wandb_id.txt").read_text().strip() in runs[0].name
