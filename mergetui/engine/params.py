"""Parameter resolution: precedence, filters and gradients, as mergekit defines them."""

from __future__ import annotations

import math
from typing import Any, Iterable, Optional

from mergetui.engine.config import ConditionalParameter, Parameters
from mergetui.engine.errors import ConfigError
from mergetui.engine.methods.base import ParamSpec

_MISSING = object()


def evaluate(setting: Any, tensor_name: str, t: float, spec: ParamSpec) -> Any:
    """Value of one setting for `tensor_name` at gradient position t, or _MISSING.

    A list of {filter, value}: the first whose filter is a substring of the tensor name
    (missing or "*" matches all) wins. A list of numbers is a gradient: s = t(K-1), linear
    between v[floor(s)] and the next value. A list of non-numbers picks v[floor(s)].
    """
    if isinstance(setting, ConditionalParameter):
        setting = [setting]
    if isinstance(setting, list):
        if not setting:
            return _MISSING
        if all(isinstance(e, ConditionalParameter) for e in setting):
            for cond in setting:
                if cond.filter in (None, "*") or (tensor_name and cond.filter in tensor_name):
                    return evaluate(cond.value, tensor_name, t, spec)
            return _MISSING
        if any(isinstance(e, ConditionalParameter) for e in setting):
            raise ConfigError(f"parameter {spec.name}: mixes filtered values and plain values in one list")
        values = [_coerce(e, spec) for e in setting]
        s = t * (len(values) - 1)
        i0 = int(math.floor(s))
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            return values[i0]
        i1 = min(len(values) - 1, i0 + 1)
        frac = s - i0
        return _coerce((1 - frac) * values[i0] + frac * values[i1], spec)
    return _coerce(setting, spec)


def _coerce(value: Any, spec: ParamSpec) -> Any:
    """Cast a YAML scalar to the parameter's type, with a clear error."""
    try:
        if spec.type is bool:
            if isinstance(value, str):
                low = value.strip().lower()
                if low in ("true", "yes", "1"):
                    return True
                if low in ("false", "no", "0"):
                    return False
                raise ValueError(value)
            return bool(value)
        if spec.type is float:
            return float(value)
        if spec.type is int:
            return int(value)
        return value
    except (TypeError, ValueError):
        raise ConfigError(
            f"parameter {spec.name}: {value!r} is not a {spec.type.__name__}",
            fix=f"give {spec.name} as a {spec.type.__name__} (or a list of them for a gradient)",
        ) from None


def resolve(
    spec: ParamSpec,
    scopes: Iterable[Optional[Parameters]],
    tensor_name: str,
    t: float,
    where: str,
) -> Any:
    """Resolve one parameter through scopes given highest precedence first, then the default."""
    for scope in scopes:
        if scope and spec.name in scope:
            value = evaluate(scope[spec.name], tensor_name, t, spec)
            if value is not _MISSING:
                return value
    if spec.required:
        raise ConfigError(
            f"missing required parameter {spec.name!r} for {where}",
            fix=f"add '{spec.name}:' under the model's parameters or the top-level parameters",
        )
    return spec.default
