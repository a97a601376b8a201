"""Registries of buildable components, looked up by name from configs.

Built on fvcore's ``Registry`` (decorator registration, duplicate detection); we add the one thing it lacks:
an unknown name fails with the registry's name and the closest valid names.
"""
from __future__ import annotations

import difflib
from typing import Any, Iterable

from fvcore.common.registry import Registry as _FvRegistry


def closest(name: str, choices: Iterable[str], n: int = 3) -> list[str]:
    """The closest names to ``name`` among ``choices`` (case-insensitive), best first."""
    choices = list(choices)
    lowered = {c.lower(): c for c in choices}
    hits = difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.5)
    if not hits:  # fall back to substring matches, so "unet" finds "unet_baseline"
        hits = [c for c in lowered if name.lower() in c or c in name.lower()][:n]
    return [lowered[h] for h in hits]


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    hits = closest(name, choices)
    return f"did you mean {', '.join(repr(h) for h in hits)}?" if hits else f"valid: {sorted(choices)}"


class Registry(_FvRegistry):
    """fvcore Registry whose ``get`` names the registry and suggests the closest known names."""

    def get(self, name: str) -> Any:
        ret = self._obj_map.get(name)
        if ret is None:
            raise KeyError(
                f"No object named {name!r} in the {self._name} registry; {did_you_mean(name, self._obj_map)}"
            )
        return ret

    def names(self) -> list[str]:
        return sorted(self._obj_map)


MAPPERS = Registry("MAPPERS")
SAMPLERS = Registry("SAMPLERS")
TRANSFORMS = Registry("TRANSFORMS")
MODELS = Registry("MODELS")  # meta-architectures
BACKBONES = Registry("BACKBONES")
ENCODERS = Registry("ENCODERS")
DECODERS = Registry("DECODERS")
LOSSES = Registry("LOSSES")
EVALUATORS = Registry("EVALUATORS")
OPTIMIZERS = Registry("OPTIMIZERS")
SCHEDULERS = Registry("SCHEDULERS")
HOOKS = Registry("HOOKS")


def build(registry: Registry, cfg: dict | Any, **extra: Any) -> Any:
    """Build ``registry[cfg['name']](**rest_of_cfg, **extra)``; ``cfg`` may be a dict or an omegaconf node."""
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    cfg = dict(cfg)
    if "name" not in cfg:
        raise KeyError(f"Config for the {registry._name} registry has no 'name' key: {cfg}")
    name = cfg.pop("name")
    return registry.get(name)(**cfg, **extra)
