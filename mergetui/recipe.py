"""Recipe edits as pure functions on MergeConfig: the Recipe view's form writes through these.

Every function returns a new, validated config (pydantic raises on an impossible one), so the
form and the YAML pane always show the same single source of truth.
"""

from __future__ import annotations

from typing import Any

import yaml

from mergetui.engine.config import MergeConfig

FIELDS = ("merge_method", "base_model", "dtype", "out_dtype", "tokenizer_source", "chat_template")


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


# ---- vocabulary and chat template ---------------------------------------------------------------
# The built-in chat template names (engine.chat_templates.BUILTIN), plus 'auto'; unset keeps the base's.
CHAT_TEMPLATES = ("auto", "chatml", "llama3", "mistral", "alpaca", "exaone")
_KEEP: Any = object()  # "leave this setting as it is"


def set_tokenizer(cfg: MergeConfig, *, source: Any = _KEEP, pad: Any = _KEEP) -> MergeConfig:
    """Set the output vocabulary's source and/or pad_to_multiple_of (None or '' unsets).

    New settings go into mergekit's `tokenizer:` section; a legacy `tokenizer_source:` stays
    legacy while only its source changes, so an opened file keeps its shape. Unsetting the
    source removes the whole section (no vocabulary alignment at all).
    """
    data = _data(cfg)
    legacy = data.pop("tokenizer_source", None)
    section = data.pop("tokenizer", None)
    if source is not _KEEP and source in (None, ""):
        return MergeConfig.model_validate(data)
    had_section = section is not None
    if section is None and legacy is not None:
        section = {"source": legacy}
    elif section is None:
        section = {}
    if source is not _KEEP:
        section["source"] = source
    if pad is not _KEEP:
        if pad in (None, ""):
            section.pop("pad_to_multiple_of", None)
        else:
            section["pad_to_multiple_of"] = int(pad)
    if legacy is not None and set(section) <= {"source"}:
        data["tokenizer_source"] = section.get("source", legacy)  # still expressible the legacy way
    elif section or had_section or source is not _KEEP:
        data["tokenizer"] = section  # an empty section stays: it means union, as in mergekit
    return MergeConfig.model_validate(data)


def tokenizer_pad(cfg: MergeConfig) -> int | None:
    """The tokenizer section's pad_to_multiple_of, if any."""
    return cfg.tokenizer.pad_to_multiple_of if cfg.tokenizer else None


def token_overrides(cfg: MergeConfig) -> dict[str, Any]:
    """The per-token embedding overrides (`tokenizer.tokens`), token -> its source setting."""
    return dict(cfg.tokenizer.tokens or {}) if cfg.tokenizer else {}


def chat_template_choice(cfg: MergeConfig) -> str | None:
    """'auto', a built-in name, 'literal' (Jinja text, edited in the YAML) or None (keep the base's)."""
    t = cfg.chat_template
    if t is None:
        return None
    return t if t in CHAT_TEMPLATES else "literal"


def vocab_fix_choices(cfg: MergeConfig, refs: list[str]) -> list[tuple[str, str]]:
    """(tokenizer source, what it means) for the embedding-rows-differ fix: union, base, each model."""
    base = cfg.base_model or (cfg.referenced_models() or refs or ["the first model"])[0]
    out = [("union", "union: every model's tokens (rows aligned by token)"), ("base", f"base: the base model's tokens ({_short(base)})")]
    for ref in dict.fromkeys(refs):
        out.append((ref, f"{_short(ref)}: that model's tokens only"))
    return out


def _short(ref: str) -> str:
    return ref.rstrip("/").rsplit("/", 1)[-1]
