"""Lazy dataset catalogs, in the spirit of detectron2's DatasetCatalog/MetadataCatalog, and where the data lives.

``DatasetCatalog`` stores *functions*: registering a name is free and touches no disk; the list of sample
metas is built on first ``get`` and cached. ``MetadataCatalog`` stores plain attributes per name
(classes, colours, family, split, mode, how to read frames).

``DatasetRoots``: each dataset *family* (``cardiac_udc``, ``echo_synth``, ``camus``, ...) registers how its folder
is found — the environment variable that sets it (``DATASET_PATH`` for the public datasets), a default, and a
resolver that checks the folder (or generates embedded data) and raises a ``DataError`` naming the variable or
the config key ``data.roots.<family>``. ``main`` hands ``cfg.data.roots`` over with ``configure``; the trainer,
``check_data`` and the tools ask this module, never a dataset module.

``BadData``: the policy for unreadable training data (``data.bad_sample_policy``) and the record of what was
left out under "skip", shared by every register.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

from core.errors import ConfigError
from core.registry import did_you_mean


class _DatasetCatalog:
    def __init__(self) -> None:
        self._fns: dict[str, Callable[[], list[dict]]] = {}
        self._cache: dict[str, list[dict]] = {}
        self._lock = threading.Lock()

    def register(self, name: str, fn: Callable[[], list[dict]]) -> None:
        if not callable(fn):
            raise TypeError(f"DatasetCatalog.register({name!r}) needs a function, got {type(fn).__name__}")
        if name in self._fns:
            raise KeyError(f"Dataset {name!r} is already registered")
        self._fns[name] = fn

    def get(self, name: str) -> list[dict]:
        """The list of sample metas of ``name``, built on first use (and cached)."""
        if name not in self._fns:
            raise ConfigError(f"Dataset {name!r} is not registered; {did_you_mean(name, self._fns)}")
        with self._lock:
            if name not in self._cache:
                self._cache[name] = self._fns[name]()
            return self._cache[name]

    def is_loaded(self, name: str) -> bool:
        return name in self._cache

    def clear_cache(self) -> None:
        self._cache.clear()

    def remove(self, name: str) -> None:
        self._fns.pop(name, None)
        self._cache.pop(name, None)

    def names(self) -> list[str]:
        return sorted(self._fns)

    def __contains__(self, name: str) -> bool:
        return name in self._fns


class _MetadataCatalog:
    def __init__(self) -> None:
        self._meta: dict[str, SimpleNamespace] = {}

    def get(self, name: str) -> SimpleNamespace:
        """Metadata of ``name`` (created empty on first access, so registers can fill it in)."""
        return self._meta.setdefault(name, SimpleNamespace(name=name))

    def set(self, name: str, **kwargs: Any) -> SimpleNamespace:
        m = self.get(name)
        for k, v in kwargs.items():
            setattr(m, k, v)
        return m

    def remove(self, name: str) -> None:
        self._meta.pop(name, None)


DatasetCatalog = _DatasetCatalog()
MetadataCatalog = _MetadataCatalog()


@dataclass
class _Family:
    env: str | None          # environment variable naming the base folder (None: config / default only)
    default: str | None      # base folder when neither the config nor the environment sets it
    resolve: Callable[[str | None, str], Path]  # (base or None, how it was set) -> the dataset folder
    check: Callable[[Path], dict] | None = None  # the family's data check (check_data), report dict


class _DatasetRoots:
    """Family -> (environment variable, default, resolver, checker); ``cfg.data.roots`` overrides per family."""

    def __init__(self) -> None:
        self._families: dict[str, _Family] = {}
        self._configured: dict[str, str | None] = {}

    def register(self, family: str, resolve: Callable[[str | None, str], Path], env: str | None = None,
                 default: str | None = None, check: Callable[[Path], dict] | None = None) -> None:
        if family in self._families:
            raise KeyError(f"Dataset family {family!r} is already registered")
        self._families[family] = _Family(env, default, resolve, check)

    def families(self) -> list[str]:
        return sorted(self._families)

    def _family(self, family: str) -> _Family:
        if family not in self._families:
            raise ConfigError(f"Unknown dataset family {family!r} (data.roots); "
                              f"{did_you_mean(family, self._families)}")
        return self._families[family]

    def set(self, family: str, path: str | None) -> None:
        """The base folder of ``family`` from the config (None: back to the environment / default). Lists of
        that family's names already built are dropped, so they are rebuilt from the new folder."""
        self._family(family)
        if self._configured.get(family) != path:
            self._configured[family] = path
            for name in DatasetCatalog.names():
                if getattr(MetadataCatalog.get(name), "family", None) == family:
                    DatasetCatalog._cache.pop(name, None)

    def configure(self, roots: dict | None) -> None:
        """``cfg.data.roots`` ({family: folder}); unknown families are a ConfigError with the closest names."""
        for family, path in (roots or {}).items():
            self.set(family, None if path is None else str(path))

    def base(self, family: str) -> tuple[str | None, str]:
        """(base folder or None, where it came from: 'data.roots.<family>', '$VAR' or 'default')."""
        fam = self._family(family)
        if self._configured.get(family):
            return self._configured[family], f"data.roots.{family}"
        if fam.env and os.environ.get(fam.env):
            return os.environ[fam.env], f"${fam.env}"
        return fam.default, "default"

    def get(self, family: str) -> Path:
        """The family's dataset folder (its resolver raises a DataError naming what to set when it is missing)."""
        base, how = self.base(family)
        return self._family(family).resolve(base, how)

    def how_to_set(self, family: str) -> str:
        """'export VAR=... or data.roots.<family>': for error messages."""
        fam = self._family(family)
        return (f"export {fam.env}=... or set data.roots.{family}" if fam.env else f"set data.roots.{family}")

    def checker(self, family: str) -> Callable[[Path], dict] | None:
        return self._family(family).check


class _BadData:
    """``data.bad_sample_policy`` and what was skipped under it. "error" (default): a video that cannot be read
    while building a *training* list raises naming the file; "skip": it is left out, logged and recorded here.
    Evaluation lists never skip."""

    def __init__(self) -> None:
        self.policy = "error"
        self.skipped: list[tuple[str, str]] = []  # (file, reason)

    def set_policy(self, policy: str) -> None:
        if policy not in ("error", "skip"):
            raise ConfigError(f"data.bad_sample_policy must be 'error' or 'skip', got {policy!r}")
        if self.policy != policy or policy == "skip":
            # lists built under the other policy (or whose skips were already reported) are rebuilt
            self.policy = policy
            DatasetCatalog.clear_cache()
        self.skipped.clear()

    def may_skip(self) -> bool:
        return self.policy == "skip"

    def record(self, path: str, reason: str) -> None:
        self.skipped.append((str(path), str(reason)))


DatasetRoots = _DatasetRoots()
BadData = _BadData()
