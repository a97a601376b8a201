"""Registries of buildable components, looked up by name from configs, and the checked call that builds them.

Built on fvcore's ``Registry`` (decorator registration, duplicate detection); we add what it lacks: an unknown
name fails with the registry's name and the closest valid names, and ``build`` / ``call`` check a config dict's
keys against the component's signature before calling it, so a misspelt argument is one line naming the config
path (``model.encoder``), the component, the key, the closest valid keys and the full list, instead of a
``TypeError`` from deep inside a constructor.

Nested components build their parts with ``build(REG, cfg, key="encoder")`` / ``call(Cls, cfg, key="scan")``: the
key extends the config path of the component being built (kept in a context variable), so messages name the full
path. A component whose ``**kwargs`` go on to another callable declares it with ``@forwards(Target)``; the check
then accepts (and suggests) the target's arguments too.
"""
from __future__ import annotations

import contextvars
import difflib
import inspect
from typing import Any, Callable, Iterable, Mapping

from fvcore.common.registry import Registry as _FvRegistry

from core.errors import ConfigError

# (dotted config path of the component being built, the root config it came from or None)
_CONTEXT: contextvars.ContextVar[tuple[str, Any]] = contextvars.ContextVar("medvidseg_build", default=("", None))


def closest(name: str, choices: Iterable[str], n: int = 3) -> list[str]:
    """The closest names to ``name`` among ``choices`` (case-insensitive), best first."""
    choices = list(choices)
    lowered = {c.lower(): c for c in choices}
    hits = difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.5)
    if not hits:  # fall back to substring matches, so "unet" finds "unet_baseline"
        hits = [c for c in lowered if name.lower() in c or c in name.lower()][:n]
    return [lowered[h] for h in hits]


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    choices = list(choices)
    hits = closest(name, choices)
    return f"did you mean {', '.join(repr(h) for h in hits)}?" if hits else f"valid: {sorted(choices)}"


class Registry(_FvRegistry):
    """fvcore Registry whose ``get`` names the registry and suggests the closest known names."""

    def get(self, name: str, where: str = "") -> Any:
        ret = self._obj_map.get(name)
        if ret is None:
            at = f" (config key {where}.name)" if where else ""
            raise ConfigError(f"No object named {name!r} in the {self._name} registry{at}; "
                              f"{did_you_mean(str(name), self._obj_map)}")
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
MEMORY_SELECTORS = Registry("MEMORY_SELECTORS")  # which past frames a SAM2-family tracker keeps as memories
SUPPORT_SAMPLERS = Registry("SUPPORT_SAMPLERS")  # which labelled slices/frames form an in-context support set
MASK_TOKENIZERS = Registry("MASK_TOKENIZERS")  # label map <-> token sequence (autoregressive segmentation)


def forwards(*targets: Callable) -> Callable:
    """Class/function decorator: its ``**kwargs`` are passed on to ``targets``, whose arguments the config check
    then accepts too (``build`` refuses the rest)."""
    def mark(obj):
        obj.__config_forwards__ = targets
        return obj
    return mark


def accepted_arguments(fn: Callable) -> tuple[list[str], bool]:
    """(names the callable accepts as keywords, including those of the targets it forwards ``**kwargs`` to;
    whether it takes keys nobody checks: a ``**kwargs`` without a ``@forwards`` declaration)."""
    target = fn.__init__ if inspect.isclass(fn) else fn
    params = list(inspect.signature(target).parameters.values())
    if inspect.isclass(fn) and params and params[0].name == "self":
        params = params[1:]
    names = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    open_ended = False
    if any(p.kind == p.VAR_KEYWORD for p in params):
        targets = getattr(fn, "__config_forwards__", None)
        if targets is None:
            open_ended = True
        for t in targets or ():
            more, unchecked = accepted_arguments(t)
            names += [n for n in more if n not in names]
            open_ended |= unchecked
    return names, open_ended


def build(registry: Registry, cfg: Mapping | Any, *args: Any, key: str | None = None, default: str | None = None,
          **extra: Any) -> Any:
    """Build ``registry[cfg['name']](*args, **rest_of_cfg, **extra)`` after checking the keys.

    ``cfg``: a dict or an omegaconf node (a node knows its config path and file origins). ``key``: the config key
    of ``cfg`` within the component now being built (e.g. ``"encoder"`` inside ``model``), for messages.
    ``default``: the name used when ``cfg`` has none. ``args`` / ``extra``: what the caller supplies itself; the
    config must not set those.
    """
    where, root = _locate(cfg, key)
    data = _as_dict(cfg, where)
    name = data.pop("name", default)
    if name is None:
        raise ConfigError(f"Config {where or 'dict'} for the {registry._name} registry has no 'name' key "
                          f"(one of {', '.join(registry.names())})")
    return _checked_call(registry.get(name, where), name, data, args, extra, where, root)


def call(fn: Callable, cfg: Mapping | None, *args: Any, key: str | None = None, **extra: Any) -> Any:
    """``fn(*args, **cfg, **extra)`` for a config dict without a ``name`` (e.g. ``encoder.scan``), with the same
    checks and messages as ``build``."""
    where, root = _locate(cfg, key)
    return _checked_call(fn, getattr(fn, "__name__", str(fn)), _as_dict(cfg, where, allow_none=True), args, extra,
                         where, root)


def _locate(cfg: Any, key: str | None) -> tuple[str, Any]:
    """(dotted config path of ``cfg``, root config) from an omegaconf node, or the current build context + key."""
    from omegaconf import DictConfig

    parent, root = _CONTEXT.get()
    if isinstance(cfg, DictConfig) and cfg._get_parent() is not None:
        return cfg._get_full_key(None), cfg._get_root()
    if key:
        return (f"{parent}.{key}" if parent else key), root
    return parent, root


def _as_dict(cfg: Any, where: str, allow_none: bool = False) -> dict:
    from omegaconf import DictConfig, OmegaConf

    if cfg is None and allow_none:
        return {}
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"Config {where or 'value'} must be a dict (name=..., arguments), got {cfg!r:.80}")
    return dict(cfg)


def _checked_call(fn: Callable, name: str, data: dict, args: tuple, extra: dict, where: str, root: Any) -> Any:
    check_arguments(fn, name, data, args, extra, where, root)
    token = _CONTEXT.set((where, root))
    try:
        return fn(*args, **data, **extra)
    finally:
        _CONTEXT.reset(token)


def check_arguments(fn: Callable, name: str, data: Mapping, args: tuple, extra: Mapping, where: str,
                    root: Any = None) -> None:
    """Refuse config keys ``fn`` does not take (or that the caller supplies itself) with one line naming the
    config path, the component, the key, the closest valid keys and the full list."""
    names, open_ended = accepted_arguments(fn)
    supplied = set(names[:len(args)]) | set(extra)
    valid = [n for n in names if n not in supplied]
    def path(key: str) -> str:
        return f"{where}.{key}" if where else key

    for key in data:
        if key in supplied:
            raise ConfigError(f"Config key {path(key)!r}{_origin(root, path(key))} cannot be set: the code that "
                              f"builds {name} passes {key!r} itself; remove it from the config")
        if key not in names and not open_ended:
            hits = [repr(path(p)) for p in _nested_paths(data, key) or closest(key, valid)]
            hint = f"did you mean {', '.join(hits)}? " if hits else ""
            raise ConfigError(f"Unknown config key {path(key)!r}{_origin(root, path(key))}: {name} takes no "
                              f"argument {key!r}; {hint}valid keys of {where or name}: {', '.join(valid)}")


def _nested_paths(data: Mapping, key: str, prefix: str = "") -> list[str]:
    """Dotted paths, below ``data``, of dicts that hold ``key`` (a key written one level too high)."""
    out = []
    for k, v in data.items():
        if isinstance(v, Mapping):
            if key in v:
                out.append(f"{prefix}{k}.{key}")
            out += _nested_paths(v, key, f"{prefix}{k}.")
    return out


def _origin(root: Any, dotted: str) -> str:
    from core.config import set_in  # core.config imports this module

    return set_in(root, dotted)
