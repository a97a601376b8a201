"""Lazy dataset catalogs, in the spirit of detectron2's DatasetCatalog/MetadataCatalog.

``DatasetCatalog`` stores *functions*: registering a name is free and touches no disk; the list of sample
metas is built on first ``get`` and cached. ``MetadataCatalog`` stores plain attributes per name
(classes, colours, root, split, mode, how to read frames).
"""
from __future__ import annotations

import threading
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
