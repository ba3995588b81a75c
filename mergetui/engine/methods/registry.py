"""Merge methods by mergekit's names."""

from __future__ import annotations

import difflib
import importlib
import threading

from mergetui.engine.methods.base import MethodSpec

# One module per family; each defines METHODS: tuple[MethodSpec, ...].
_FAMILY_MODULES = (
    "linear",
    "slerp",
    "task_arithmetic",
    "model_stock",
    "passthrough",
    "multislerp",
    "karcher",
    "sce",
    "nearswap",
    "arcee_fusion",
    "ram",
)

_REGISTRY: dict[str, MethodSpec] = {}
_LOCK = threading.Lock()  # workers of the workbench may ask for methods at the same time


def _load() -> dict[str, MethodSpec]:
    if _REGISTRY:
        return _REGISTRY
    with _LOCK:
        if not _REGISTRY:
            found: dict[str, MethodSpec] = {}
            for mod in _FAMILY_MODULES:
                module = importlib.import_module(f"mergetui.engine.methods.{mod}")
                for spec in module.METHODS:
                    if spec.name in found:
                        raise RuntimeError(f"merge method {spec.name!r} registered twice")
                    found[spec.name] = spec
            _REGISTRY.update(found)  # published whole, never half-filled
    return _REGISTRY


def method_names() -> list[str]:
    """Every registered method name, sorted."""
    return sorted(_load())


def closest_method(name: str) -> str | None:
    """The registered name closest to a misspelt one (`dare-ties` -> `dare_ties`)."""
    names = method_names()
    norm = name.strip().lower().replace("-", "_").replace(" ", "_")
    if norm in names:
        return norm
    hits = difflib.get_close_matches(norm, names, n=1, cutoff=0.6)
    return hits[0] if hits else None


def get_method(name: str) -> MethodSpec | None:
    """The method registered under `name`, or None."""
    return _load().get(name)
