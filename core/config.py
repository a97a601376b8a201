"""Config files: Python files of plain data with ``_base_`` inheritance, strict keys and YAML dumps.

A config file is executed; its public top-level names holding plain data (dict, list/tuple, str, int, float, bool,
None) become the config, merged on top of its ``_base_`` files, which are merged on top of the framework's
defaults (``core/defaults.py``). Keys are strict wherever they come from:

- a file (``.py`` or ``.yaml``: a run's ``config.yaml``, a checkpoint's stored config) may set, in the sections
  the framework owns (``train``, ``optim``, ``log``, ``data`` and their nested dicts), only keys that the defaults
  or its bases define; ``"+key"`` (e.g. ``data = {"+my_option": 1}``) adds one on purpose, as ``+a.b=1`` does on
  the command line. A misspelt key fails naming the file, the dotted key and the closest valid keys. A dict that
  changes a component's ``name`` or holds ``_delete_=True`` replaces what its base said, so its keys are checked
  against the component's signature when it is built (``core.registry.build``), as every ``model`` key is.
- command-line ``a.b.c=value`` overrides are applied after loading, with the same rule (``+a.b=value`` adds).

The result is an omegaconf DictConfig in struct mode, so reading or setting a missing key in code raises too. It
remembers where each key was set (``origin``) for the build-time messages and which keys were added on purpose,
which ``dump_config`` / ``config_to_container`` write back with their ``+``, so that a dumped config loads back
to an equal config under the same checks.
"""
from __future__ import annotations

import copy
import os
import re
import runpy
import tempfile
import traceback
import types
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from core.defaults import DEFAULTS, FREE_FORM
from core.errors import ConfigError
from core.registry import closest

__all__ = ["ConfigError", "load_config", "dump_config", "apply_overrides", "config_diff", "config_from_container",
           "config_to_container", "origin", "set_in"]

_SCALARS = (str, int, float, bool, type(None))
# Top-level names of these kinds are helpers of the config file (imports, functions), not config values.
_SKIPPED = (types.ModuleType, types.FunctionType, types.BuiltinFunctionType, type)
_UNCHECKED = ("model",)  # sections whose keys are checked against the components' signatures at build time
_META = "_medvidseg_config_meta"  # attribute of a loaded DictConfig: {"origins": {...}, "added": set()}


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def load_config(path: str | Path, overrides: Sequence[str] = (), defaults: Mapping | None = DEFAULTS) -> DictConfig:
    """Load a ``.py`` config (with its bases) or a dumped ``.yaml``, then apply ``key=value`` overrides.

    ``defaults`` is the implicit first base and the schema of the owned sections (``None``: no schema, only the
    file-over-base rule; for tests of the mechanics). Returns a struct-mode DictConfig.
    """
    meta = _new_meta(defaults)
    tree = _load_tree(Path(path), (), defaults, meta)
    return _finish(_merge(copy.deepcopy(dict(defaults or {})), tree), meta, overrides)


def config_from_container(data: Mapping, source: str, overrides: Sequence[str] = (),
                          defaults: Mapping | None = DEFAULTS) -> DictConfig:
    """A config stored as plain data (e.g. in a checkpoint), under the same checks as a file; ``source`` names it
    in messages (e.g. ``"checkpoint output/run/checkpoints/model_final.pth"``)."""
    meta = _new_meta(defaults)
    data = {k: _plain(v, k, source) for k, v in dict(data).items()}
    _check_keys(data, defaults, "", source, meta)
    _record(data, "", source, meta)
    return _finish(_merge(copy.deepcopy(dict(defaults or {})), data), meta, overrides)


def _new_meta(defaults: Mapping | None) -> dict:
    meta: dict = {"origins": {}, "added": set()}
    _record(defaults or {}, "", "core/defaults.py", meta)
    return meta


def _finish(tree: dict, meta: dict, overrides: Sequence[str]) -> DictConfig:
    cfg = OmegaConf.create(tree)
    OmegaConf.set_struct(cfg, True)
    object.__setattr__(cfg, _META, meta)
    apply_overrides(cfg, overrides)
    return cfg


def set_in(cfg: DictConfig | None, key: str) -> str:
    """``" (set in <origin>)"`` for messages about the dotted ``key`` of a loaded config, or ``""``."""
    found = origin(cfg, key)
    return f" (set in {found})" if found else ""


def origin(cfg: DictConfig | None, key: str) -> str | None:
    """Where the dotted ``key`` (or the closest enclosing key) of a loaded config was set: a file, an override or
    a stored config; None when unknown."""
    origins = getattr(cfg, _META, {}).get("origins", {}) if cfg is not None else {}
    parts = key.split(".")
    for n in range(len(parts), 0, -1):
        hit = origins.get(".".join(parts[:n]))
        if hit:
            return hit
    return None


def _load_tree(path: Path, stack: tuple[Path, ...], defaults: Mapping | None, meta: dict) -> dict:
    """Plain-data dict of ``path`` merged on top of its bases (not the defaults), after checking the file's keys
    against defaults + bases; ``stack`` lists the files that include it."""
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
        merged = _merge(merged, _load_tree(base_path, (*stack, path), defaults, meta), final=False)
    schema = _merge(copy.deepcopy(dict(defaults)), merged) if defaults is not None else (merged if bases else None)
    _check_keys(data, schema, "", path, meta)
    _record(data, "", str(path), meta)
    return _merge(merged, data, final=False)


def _check_keys(new: Mapping, base: Mapping | None, where: str, source: Any, meta: dict) -> None:
    """Every key of ``new`` (a file's dict at dotted ``where``) must exist in ``base`` (what defaults and bases
    define there) unless added with ``+``; recurses into dicts of the owned sections. ``base=None``: no schema."""
    if base is None:
        return
    for key, value in new.items():
        if key == "_delete_":
            continue
        name = _bare(key)
        dotted = f"{where}.{name}" if where else name
        if key.startswith("+"):
            if name in base:
                raise ConfigError(f"Config file {source}: key {dotted!r} already exists; drop the '+' to change it")
            meta["added"].add(dotted)
            continue
        if name not in base and not (not where and name in _UNCHECKED):
            raise ConfigError(f"Unknown config key {dotted!r} in config file {source}; "
                              f"{_key_hint(name, base, where)} (a new key on purpose is written '+{name}')")
        sub = base.get(name)
        if (isinstance(value, Mapping) and isinstance(sub, Mapping) and dotted not in FREE_FORM
                and dotted.split(".")[0] not in _UNCHECKED and not value.get("_delete_")
                and value.get("name", sub.get("name")) == sub.get("name")):  # a renamed component: its own keys
            _check_keys(value, sub, dotted, source, meta)


def _bare(key: str) -> str:
    """A file's key without its ``+`` (added-on-purpose) mark."""
    return key[1:] if key.startswith("+") else key


def _key_hint(name: str, keys: Iterable, where: str) -> str:
    """'did you mean ...?' for an unknown key ``name`` among ``keys`` at dotted ``where``. Matched on the last
    part only (a shared ``train.`` prefix would make every sibling look close), shown as full dotted keys so the
    suggestion can be pasted back."""
    prefix = f"{where}." if where else ""
    keys = [str(k) for k in keys]
    hits = closest(name, keys)
    return (f"did you mean {', '.join(repr(prefix + h) for h in hits)}?" if hits
            else f"valid keys here: {', '.join(prefix + k for k in keys)}")


def _record(data: Mapping, where: str, source: str, meta: dict) -> None:
    """Note ``source`` as the origin of every dotted key (dicts and leaves) that ``data`` sets."""
    for key, value in data.items():
        name = _bare(key)
        if name == "_delete_":
            continue
        dotted = f"{where}.{name}" if where else name
        meta["origins"][dotted] = source
        if isinstance(value, Mapping):
            _record(value, dotted, source, meta)


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


def _plain(value: Any, where: str, path: Any) -> Any:
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


def _merge(base: dict, new: dict, final: bool = True) -> dict:
    """``new`` on top of ``base`` (neither is modified): dicts merge key by key, anything else replaces; a
    ``+key`` is stored as ``key`` (the check that it is new happened before).

    A dict holding ``_delete_=True`` replaces its base dict. ``final=False`` (merging files, before the defaults
    go underneath) keeps the flag in the result, so that the dict replaces the defaults' one too. Hand-written
    rather than ``OmegaConf.merge`` because ``_delete_`` has to be seen together with the base it discards.
    """
    out = dict(base)
    for key, value in new.items():
        key = _bare(key)
        if isinstance(value, dict):
            replace = value.get("_delete_", False)
            value = {k: v for k, v in value.items() if k != "_delete_"}
            # Merging into {} still strips `_delete_` flags and `+` marks nested deeper.
            value = _merge(out[key] if isinstance(out.get(key), dict) and not replace else {}, value, final)
            if replace and not final:
                value = {"_delete_": True, **value}
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
    meta = getattr(cfg, _META, None)
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
        if meta is not None:
            meta["origins"][key] = f"override {override!r}"
            if add:
                meta["added"].add(key)


def _set(cfg: DictConfig, key: str, value: Any, text: str, override: str, add: bool) -> None:
    """Set dotted ``key`` to ``value`` (parsed from ``text``), checking that the key exists and the type fits."""
    node, parts = cfg, key.split(".")
    for i, part in enumerate(parts):
        here = ".".join(parts[: i + 1])
        if part not in node.keys():
            if not add:
                raise ConfigError(f"Unknown config key {here!r} in override {override!r}; "
                                  f"{_key_hint(part, node.keys(), '.'.join(parts[:i]))}")
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


def config_to_container(cfg: DictConfig) -> dict:
    """``cfg`` as plain data with interpolations resolved and keys added on purpose written ``+key`` again, so
    that ``config_from_container`` / ``load_config`` accept it under the same checks."""
    data = OmegaConf.to_container(cfg, resolve=True)
    for dotted in sorted(getattr(cfg, _META, {}).get("added", ()), key=lambda k: -k.count(".")):
        *parents, last = dotted.split(".")
        node = data
        for p in parents:
            node = node.get(p) if isinstance(node, dict) else None
        if isinstance(node, dict) and last in node:
            node[f"+{last}"] = node.pop(last)
    return data


def dump_config(cfg: DictConfig, path: str | Path) -> None:
    """Write ``cfg`` as YAML (``config_to_container``), atomically (a reader never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = OmegaConf.to_yaml(OmegaConf.create(config_to_container(cfg)))
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
