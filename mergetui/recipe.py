"""Recipe edits as pure functions on MergeConfig: the Recipe view's form writes through these.

Every function returns a new, validated config (pydantic raises on an impossible one), so the
form and the YAML pane always show the same single source of truth.
"""

from __future__ import annotations

from typing import Any

import yaml

from mergetui.engine.config import MergeConfig

FIELDS = ("merge_method", "base_model", "dtype", "out_dtype", "tokenizer_source")


def format_value(value: Any) -> str:
    """A parameter value as one line of YAML flow text ('' when unset)."""
    if value is None:
        return ""
    if isinstance(value, list):
        return yaml.safe_dump(plain(value), default_flow_style=True, width=10_000).strip()
    if isinstance(value, dict):
        return yaml.safe_dump(plain(value), default_flow_style=True, width=10_000).strip()
    return str(value)


def plain(value: Any) -> Any:
    """Config values as plain data (conditional parameters are pydantic models)."""
    if hasattr(value, "model_dump"):
        return value.model_dump(exclude_none=True)
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def parse_value(text: str) -> Any:
    """'0.5', '[0, 0.5, 1]' (a gradient) or '[{filter: mlp, value: 0.3}, {value: 0.5}]'; '' is unset."""
    text = text.strip()
    if not text:
        return None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ValueError(f"not a value: {getattr(e, 'problem', None) or e}") from None


def _data(cfg: MergeConfig) -> dict[str, Any]:
    return cfg.model_dump(exclude_none=True, mode="json")


def config_for_bench(bench: list[str], method: str = "linear") -> MergeConfig:
    """A starting recipe over the bench: every model with weight 1 (base = first for base methods)."""
    models = [{"model": m, "parameters": {"weight": 1.0}} for m in bench] or [{"model": "org/model"}]
    return MergeConfig.model_validate({"merge_method": method, "models": models, "dtype": "float32"})


def set_field(cfg: MergeConfig, key: str, value: Any) -> MergeConfig:
    """Set (or with None/'' unset) one top-level field."""
    data = _data(cfg)
    if value in (None, ""):
        data.pop(key, None)
        if key == "tokenizer_source":
            data.pop("tokenizer", None)
    else:
        if key == "tokenizer_source":
            data.pop("tokenizer", None)
        data[key] = value
    return MergeConfig.model_validate(data)


def get_param(cfg: MergeConfig, name: str, model: str | None = None) -> Any:
    """A global parameter, or one model's parameter under `models:`."""
    if model is None:
        return (cfg.parameters or {}).get(name)
    for m in cfg.models or []:
        if m.model == model:
            return (m.parameters or {}).get(name)
    return None


def set_param(cfg: MergeConfig, name: str, value: Any, model: str | None = None) -> MergeConfig:
    """Set (None: remove) a global parameter, or one model's parameter under `models:`."""
    data = _data(cfg)
    if model is None:
        params = data.setdefault("parameters", {})
    else:
        entry = next((m for m in data.get("models", []) if m["model"] == model), None)
        if entry is None:
            raise ValueError(f"{model} is not among the recipe's models")
        params = entry.setdefault("parameters", {})
    if value is None:
        params.pop(name, None)
    else:
        params[name] = value
    _drop_empty_parameters(data)
    return MergeConfig.model_validate(data)


def _drop_empty_parameters(data: dict[str, Any]) -> None:
    if data.get("parameters") == {}:
        del data["parameters"]
    for m in data.get("models", []) or []:
        if m.get("parameters") == {}:
            del m["parameters"]


def sync_models(cfg: MergeConfig, bench: list[str]) -> MergeConfig:
    """Make a `models:` recipe list exactly the bench (kept entries keep their parameters)."""
    if not cfg.models or not bench:
        return cfg
    data = _data(cfg)
    old = {m["model"]: m for m in data["models"]}
    data["models"] = [old.get(ref, {"model": ref}) for ref in bench]
    if data.get("base_model") and data["base_model"] not in bench:
        data.pop("base_model")
    return MergeConfig.model_validate(data)
