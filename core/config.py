"""Config files: Python files of plain data with ``_base_`` inheritance, strict overrides and YAML dumps.

A config file is executed; its public top-level names holding plain data (dict, list/tuple, str, int, float, bool,
None) become the config, merged on top of its ``_base_`` files. The result is an omegaconf DictConfig in struct
mode, so a misspelled key fails loudly whether it comes from the command line or from code. A dumped YAML loads
back to an equal config, so a run directory's ``config.yaml`` is enough to rerun.
"""
from __future__ import annotations

import os
import re
import runpy
import tempfile
import traceback
import types
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from core.registry import closest

__all__ = ["ConfigError", "load_config", "dump_config", "apply_overrides", "config_diff"]

_SCALARS = (str, int, float, bool, type(None))
# Top-level names of these kinds are helpers of the config file (imports, functions), not config values.
_SKIPPED = (types.ModuleType, types.FunctionType, types.BuiltinFunctionType, type)


class ConfigError(ValueError):
    """A config file or override is wrong; the message is one line naming the file or the override."""


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> DictConfig:
    """Load a ``.py`` config (with its bases) or a dumped ``.yaml``, then apply ``key=value`` overrides.

    Returns a struct-mode DictConfig: reading or setting a key that does not exist raises.
    """
    cfg = OmegaConf.create(_load_tree(Path(path), stack=()))
    OmegaConf.set_struct(cfg, True)
    apply_overrides(cfg, overrides)
    return cfg


def _load_tree(path: Path, stack: tuple[Path, ...]) -> dict:
    """Plain-data dict of ``path`` merged on top of its bases; ``stack`` lists the files that include it."""
    if path.resolve() in [p.resolve() for p in stack]:
        raise ConfigError(f"Config base cycle: {' -> '.join(str(p) for p in (*stack, path))}")
    if not path.is_file():
        raise ConfigError(f"Config file not found: {path}")
    data = _read_file(path)
    bases = data.pop("_base_", [])
    bases = [bases] if isinstance(bases, str) else bases
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"Config file {path}: _base_ must be a path or a list of paths, got {bases!r}")
    merged: dict = {}
    for base in bases:
        # normpath keeps the path as relative as the user gave it, so messages stay short.
        base_path = Path(os.path.normpath(path.parent / base))
        if not base_path.is_file():
            raise ConfigError(f"Base config {base!r} of {path} not found (looked for {base_path})")
        merged = _merge(merged, _load_tree(base_path, (*stack, path)))
    return _merge(merged, data)


def _read_file(path: Path) -> dict:
    """Top-level plain data of one file (``_base_`` included, bases not loaded)."""
    if path.suffix in (".yaml", ".yml"):
        try:
            names = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        except Exception as e:
            raise ConfigError(f"Error in config file {path}: {type(e).__name__}: {_one_line(e)}") from None
        if not isinstance(names, dict):
            raise ConfigError(f"Config file {path} does not hold a mapping")
    elif path.suffix == ".py":
        names = _run_python(path)
    else:
        raise ConfigError(f"Unsupported config file type {path.suffix!r}: {path} (expected .py or .yaml)")
    return {
        k: _plain(v, k, path)
        for k, v in names.items()
        if (k == "_base_" or not k.startswith("_")) and not isinstance(v, _SKIPPED)
    }


def _run_python(path: Path) -> dict[str, Any]:
    """Execute a config file in a fresh namespace; any error becomes a ConfigError with the file and line."""
    try:
        return runpy.run_path(str(path))
    except SyntaxError as e:
        own = Path(e.filename or "").resolve() == path.resolve()
        where = f"line {e.lineno}" if own else f"{e.filename}, line {e.lineno}"
        raise ConfigError(f"Error in config file {path}: SyntaxError: {e.msg} ({where})") from None
    except Exception as e:
        frames = traceback.extract_tb(e.__traceback__)
        lines = [f.lineno for f in frames if Path(f.filename).resolve() == path.resolve()]
        where = f" (line {lines[-1]})" if lines else ""
        raise ConfigError(f"Error in config file {path}: {type(e).__name__}: {_one_line(e)}{where}") from None


def _plain(value: Any, where: str, path: Path) -> Any:
    """``value`` checked to be plain data, tuples turned into lists; ``where`` is its dotted key, for errors."""
    if isinstance(value, Mapping):
        bad = [k for k in value if not isinstance(k, str)]
        if bad:
            raise ConfigError(f"Config file {path}: key {bad[0]!r} in '{where}' is not a string")
        return {k: _plain(v, f"{where}.{k}", path) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]", path) for i, v in enumerate(value)]
    if isinstance(value, _SCALARS):
        return value
    raise ConfigError(f"Config file {path}: '{where}' is not plain data (got {type(value).__name__} {value!r:.60})")


def _merge(base: dict, new: dict) -> dict:
    """``new`` on top of ``base`` (neither is modified): dicts merge key by key, anything else replaces.

    A dict holding ``_delete_=True`` replaces its base dict. Hand-written rather than ``OmegaConf.merge`` because
    ``_delete_`` has to be seen together with the base it discards.
    """
    out = dict(base)
    for key, value in new.items():
        if isinstance(value, dict):
            replace = value.get("_delete_", False)
            value = {k: v for k, v in value.items() if k != "_delete_"}
            # Merging into {} still strips `_delete_` flags nested deeper.
            value = _merge(out[key] if isinstance(out.get(key), dict) and not replace else {}, value)
        out[key] = value
    return out


class _ValueLoader(yaml.SafeLoader):
    """YAML as PyYAML reads it, plus floats without a dot (``1e-3``), which YAML 1.1 leaves as strings."""


_ValueLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789")
)


def apply_overrides(cfg: DictConfig, overrides: Sequence[str]) -> None:
    """Apply ``a.b.c=value`` overrides to ``cfg`` in place; ``+a.b=value`` adds a key that does not exist yet.

    Values are YAML (``[x, y]``, ``null``, ``true``, ``1e-3``). Unknown keys and values of the wrong type raise.
    """
    for override in overrides:
        key, sep, text = override.partition("=")
        add = key.startswith("+")
        key = key[1:] if add else key
        if not sep or not key or "" in key.split("."):
            raise ConfigError(f"Override {override!r} is not of the form key=value")
        try:
            # An empty value is the empty string, not null: `a=` should not silently disable `a`.
            value = yaml.load(text, Loader=_ValueLoader) if text.strip() else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"Override {override!r}: cannot parse value: {_one_line(e)}") from None
        _set(cfg, key, value, text, override, add)


def _set(cfg: DictConfig, key: str, value: Any, text: str, override: str, add: bool) -> None:
    """Set dotted ``key`` to ``value`` (parsed from ``text``), checking that the key exists and the type fits."""
    node, parts = cfg, key.split(".")
    for i, part in enumerate(parts):
        here = ".".join(parts[: i + 1])
        if part not in node.keys():
            if not add:
                # Match on the last part only (a shared `train.` prefix would make every sibling look close),
                # but show full dotted keys so the suggestion can be pasted back.
                prefix = ".".join(parts[:i] + [""])
                keys = [str(k) for k in node.keys()]
                hits = closest(part, keys)
                hint = (f"did you mean {', '.join(repr(prefix + h) for h in hits)}?" if hits
                        else f"valid keys here: {', '.join(prefix + k for k in keys)}")
                raise ConfigError(f"Unknown config key {here!r} in override {override!r}; {hint}")
            for missing in reversed(parts[i + 1 :]):
                value = {missing: value}
            with open_dict(node):
                node[part] = value
            return
        if i == len(parts) - 1:
            break
        if not isinstance(node._get_node(part), DictConfig):
            raise ConfigError(f"Override {override!r}: {here!r} is not a dict, it has no key {parts[i + 1]!r}")
        node = node[part]
    if add:
        raise ConfigError(f"Override {override!r}: key {key!r} already exists; drop the '+' to change it")
    if isinstance(value, dict) and isinstance(node._get_node(part), DictConfig):
        # A dict value sets its keys one by one, so each of them is checked too.
        for k, v in value.items():
            _set(cfg, f"{key}.{k}", v, str(v), override, add=False)
        return
    node[part] = _checked(node, part, value, text, override)


def _checked(node: DictConfig, key: str, value: Any, text: str, override: str) -> Any:
    """``value`` converted to fit the current value of ``node[key]``, or a ConfigError when it cannot."""
    if value is None or OmegaConf.is_interpolation(node, key) or (isinstance(value, str) and "${" in value):
        return value  # None disables an option; interpolations are typed by their target, checked on use
    current = node._get_node(key)
    old = current._value() if not isinstance(current, (DictConfig, ListConfig)) else current
    if old is None:
        return value
    if isinstance(old, str) and isinstance(value, (int, float, bool)):
        return text.strip()  # `tag=2024` into a string key means the string '2024'
    expected = {DictConfig: dict, ListConfig: list}.get(type(old), type(old))
    if expected is float and type(value) is int:
        return float(value)
    if type(value) is not expected:  # not isinstance: a bool must not pass for an int
        raise ConfigError(
            f"Override {override!r}: expected {expected.__name__}, got {type(value).__name__} {value!r}"
        )
    return value


def dump_config(cfg: DictConfig, path: str | Path) -> None:
    """Write ``cfg`` as YAML with interpolations resolved, atomically (a reader never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = OmegaConf.to_yaml(cfg, resolve=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def config_diff(a: DictConfig | Mapping, b: DictConfig | Mapping) -> list[str]:
    """Sorted dotted keys whose (resolved) values differ between ``a`` and ``b`` or exist in only one of them.

    Lists compare as whole values; where one side has a dict and the other a scalar, both the key and the dict's
    sub-keys are reported.
    """
    flat_a, flat_b = _flatten(a), _flatten(b)
    return sorted(k for k in flat_a.keys() | flat_b.keys() if flat_a.get(k, _MISSING) != flat_b.get(k, _MISSING))


_MISSING = object()


def _flatten(cfg: DictConfig | Mapping, prefix: str = "") -> dict[str, Any]:
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    out: dict[str, Any] = {}
    for k, v in cfg.items():
        if isinstance(v, Mapping) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
