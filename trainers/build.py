"""Optimizer (with per-module LR multipliers) and LR schedule from config."""
from __future__ import annotations

import torch
from fvcore.common.param_scheduler import (CompositeParamScheduler, ConstantParamScheduler,
                                           CosineParamScheduler, LinearParamScheduler,
                                           MultiStepParamScheduler)
from omegaconf import DictConfig, OmegaConf
from torch import nn

from core.config import set_in
from core.defaults import OPTIM
from core.errors import ConfigError
from core.registry import OPTIMIZERS, SCHEDULERS, accepted_arguments, build, did_you_mean

OPTIMIZERS.register(torch.optim.AdamW)
OPTIMIZERS.register(torch.optim.Adam)
OPTIMIZERS.register(torch.optim.SGD)


def param_groups(model: nn.Module, base_lr: float, weight_decay: float, lr_multipliers: dict[str, float],
                 no_decay_norm_bias: bool = True) -> list[dict]:
    """One group per (lr multiplier, decay) pair over the model's trainable parameters. A parameter's
    multiplier comes from the longest prefix of its name in ``lr_multipliers`` (e.g. {"net.encoder": 0.1});
    biases and 1-D (norm) weights get no decay, nor do parameters marked ``p._no_weight_decay = True`` (the
    selective scan's A_log, as in Mamba)."""
    from models.base import MetaArch

    prefixes = sorted(lr_multipliers, key=len, reverse=True)
    unused = set(prefixes)
    groups: dict[tuple[float, float], list] = {}
    # frozen parts never enter the optimizer: a model's trainable_parameters() (a plain module: requires_grad)
    named = (model.trainable_parameters() if isinstance(model, MetaArch) else
             ((n, p) for n, p in model.named_parameters() if p.requires_grad))
    for name, p in named:
        mult = 1.0
        for pre in prefixes:
            if name == pre or name.startswith(pre + "."):
                mult = lr_multipliers[pre]
                unused.discard(pre)
                break
        wd = 0.0 if ((no_decay_norm_bias and p.ndim <= 1) or getattr(p, "_no_weight_decay", False)) else weight_decay
        groups.setdefault((mult, wd), []).append(p)
    if unused:
        raise ConfigError(f"optim.lr_multipliers: prefixes {sorted(unused)} match no trainable parameter")
    return [{"params": ps, "lr": base_lr * m, "lr_mult": m, "weight_decay": wd} for (m, wd), ps in groups.items()]


# The keys of the ``optim`` section that the framework reads itself; every other key is an argument of the optimizer.
_OPTIM_KEYS = ("name", "base_lr", "weight_decay", "lr_multipliers", "no_decay_norm_bias", "scheduler")
# Family options of core/defaults.py: passed to the optimizers that take them; a non-default value for one that
# does not take it is refused (it would have no effect).
_FAMILY_DEFAULTS = {k: OPTIM[k] for k in ("betas", "momentum")}


def build_optimizer(model: nn.Module, cfg) -> torch.optim.Optimizer:
    """``cfg`` = the ``optim`` config node: name, base_lr, weight_decay, lr_multipliers, no_decay_norm_bias,
    betas (Adam*), momentum (SGD); see core/defaults.py."""
    cls = OPTIMIZERS.get(cfg.name, "optim")
    names = [n for n in accepted_arguments(cls)[0] if n not in ("params", "lr", "weight_decay")]  # ours to set
    settings = {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k not in _OPTIM_KEYS}
    kwargs = {}
    for key, value in settings.items():
        if key in names:
            kwargs[key] = tuple(value) if isinstance(value, list) else value
        elif key in _FAMILY_DEFAULTS:
            if value != _FAMILY_DEFAULTS[key]:
                raise ConfigError(f"optim.{key}={value}{_set_in(cfg, key)} has no effect on {cfg.name}, which "
                                  f"takes no {key!r}; remove it or pick an optimizer that uses it")
        else:
            raise ConfigError(f"Unknown config key 'optim.{key}'{_set_in(cfg, key)}: neither a setting of the "
                              f"framework nor an argument of {cfg.name}; {did_you_mean(key, [*_OPTIM_KEYS, *names])}")
    groups = param_groups(model, cfg.base_lr, cfg.weight_decay, dict(cfg.get("lr_multipliers") or {}),
                          cfg.get("no_decay_norm_bias", True))
    return cls(groups, lr=cfg.base_lr, **kwargs)


def _set_in(cfg, key: str) -> str:
    return set_in(cfg._get_root(), f"optim.{key}") if isinstance(cfg, DictConfig) else ""


@SCHEDULERS.register()
def warmup_cosine(max_iter: int, warmup_iters: int = 0, warmup_factor: float = 0.001,
                  min_lr_ratio: float = 0.0) -> CompositeParamScheduler:
    return _with_warmup(CosineParamScheduler(1.0, min_lr_ratio), max_iter, warmup_iters, warmup_factor, "rescaled")


@SCHEDULERS.register()
def warmup_step(max_iter: int, milestones: list[int] = (), gamma: float = 0.1, warmup_iters: int = 0,
                warmup_factor: float = 0.001) -> CompositeParamScheduler:
    values = [gamma ** i for i in range(len(milestones) + 1)]
    sched = MultiStepParamScheduler(values, num_updates=max_iter, milestones=list(milestones))
    return _with_warmup(sched, max_iter, warmup_iters, warmup_factor, "fixed")  # milestones are absolute


@SCHEDULERS.register()
def warmup_constant(max_iter: int, warmup_iters: int = 0, warmup_factor: float = 0.001) -> CompositeParamScheduler:
    return _with_warmup(ConstantParamScheduler(1.0), max_iter, warmup_iters, warmup_factor, "fixed")


def _with_warmup(main, max_iter: int, warmup_iters: int, warmup_factor: float, scaling: str):
    """Linear warmup over the first ``warmup_iters``; ``scaling`` "rescaled" stretches ``main`` over the rest of
    training, "fixed" evaluates it at the absolute training fraction."""
    if warmup_iters <= 0:
        return main
    frac = min(warmup_iters / max_iter, 1.0)
    warm = LinearParamScheduler(warmup_factor, 1.0)
    return CompositeParamScheduler([warm, main], [frac, 1 - frac], ["rescaled", scaling])


def build_scheduler(optimizer: torch.optim.Optimizer, cfg, max_iter: int) -> torch.optim.lr_scheduler.LambdaLR:
    """LR(iter) = base LR × multiplier × schedule(iter / max_iter); stepped once per iteration. ``cfg`` = the
    ``optim.scheduler`` node (name + the schedule's arguments, checked)."""
    sched = build(SCHEDULERS, cfg, max_iter=max_iter)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: sched(min(it, max_iter - 1) / max_iter))
