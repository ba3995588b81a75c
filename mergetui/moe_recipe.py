"""MoE recipe edits as pure functions on MoEConfig (mergekit-moe YAML): the Recipe view's MoE form.

Like recipe.py, every function returns a new config validated against the schema. What only
the whole config can tell (prompts missing for gate_mode hidden, too many experts per token)
is not refused here but reported by `moe_problem`, so a recipe can be built step by step.
"""

from __future__ import annotations

from typing import Any, Union

import yaml
from pydantic import ValidationError

from mergetui.engine.config import MergeConfig, parse_config
from mergetui.engine.errors import ConfigError
from mergetui.engine.moe.config import PROMPT_MODES, Expert, MoEConfig, duplicate_prompt_warnings, parse_moe_config

GATE_MODES = ("hidden", "cheap_embed", "random")
ARCHITECTURES = ("mixtral", "qwen")
GROUPS = ("experts", "shared_experts")
EXPERT_FIELDS = ("source_model", "positive_prompts", "negative_prompts", "noise_scale", "residual_scale")

Recipe = Union[MergeConfig, MoEConfig]


def _data(cfg: MoEConfig) -> dict[str, Any]:
    return cfg.model_dump(exclude_none=True, mode="json")


def moe_for_bench(bench: list[str], base: str | None = None) -> MoEConfig:
    """A starting MoE over the bench: the first (or given) model as base, every bench model an expert."""
    models = list(bench) or ["org/model"]
    base = base or models[0]
    experts = [{"source_model": m} for m in models]
    return MoEConfig.model_validate({"base_model": base, "experts": experts, "gate_mode": "hidden",
                                     "experts_per_token": min(2, len(experts)), "dtype": "float32"})


def set_moe_field(cfg: MoEConfig, key: str, value: Any) -> MoEConfig:
    """Set (None/'' unsets, back to mergekit-moe's default) one top-level field."""
    if key not in ("base_model", "gate_mode", "experts_per_token", "dtype", "architecture"):
        raise ValueError(f"{key!r} is not a MoE setting")
    data = _data(cfg)
    if value in (None, ""):
        if key == "base_model":
            raise ValueError("a MoE needs a base model")
        data.pop(key, None)
    else:
        data[key] = int(value) if key == "experts_per_token" else value
    return MoEConfig.model_validate(data)


def expert_rows(cfg: MoEConfig) -> list[tuple[str, int, Expert]]:
    """(group, index in that group, expert) for routed experts, then shared ones (the router's row order)."""
    return [(g, i, e) for g in GROUPS for i, e in enumerate(getattr(cfg, g) or [])]


def put_expert(cfg: MoEConfig, group: str, index: int | None, expert: dict[str, Any]) -> MoEConfig:
    """Replace expert `index` of `group` (None appends a new one); empty fields are left out."""
    data = _data(cfg)
    entries = data.setdefault(group, [])
    clean = {k: v for k, v in expert.items() if k in EXPERT_FIELDS and v not in (None, "", [])}
    if index is None:
        entries.append(clean)
    else:
        entries[index] = clean
    return MoEConfig.model_validate(data)


def remove_expert(cfg: MoEConfig, group: str, index: int) -> MoEConfig:
    """Take expert `index` out of `group` (an empty shared_experts list disappears)."""
    data = _data(cfg)
    entries = data.get(group) or []
    if not 0 <= index < len(entries):
        raise ValueError(f"{group} has no expert {index}")
    del entries[index]
    if group == "shared_experts" and not entries:
        data.pop(group, None)
    return MoEConfig.model_validate(data)


def toggle_shared(cfg: MoEConfig, group: str, index: int) -> tuple[MoEConfig, str, int]:
    """Move an expert between routed and shared; returns the config and its new (group, index)."""
    data = _data(cfg)
    entry = (data.get(group) or [])[index]
    new = remove_expert(cfg, group, index)
    other = "shared_experts" if group == "experts" else "experts"
    moved = put_expert(new, other, None, entry)
    return moved, other, len(getattr(moved, other) or []) - 1


def prompts_text(prompts: list[str] | None) -> str:
    """Prompts as text for the editor: one a line."""
    return "\n".join(prompts or [])


def prompts_from_text(text: str) -> list[str]:
    """One prompt a line; blank lines and surrounding spaces dropped."""
    return [line.strip() for line in text.splitlines() if line.strip()]


def moe_problem(cfg: MoEConfig) -> str | None:
    """What `mergetui moe` would refuse in this config (first problem, with its fix), else None."""
    try:
        parse_moe_config(cfg.to_yaml(), "YAML")
    except ConfigError as e:
        return e.message + (f" — fix: {e.fix}" if e.fix else "")
    return None


def moe_warnings(cfg: MoEConfig) -> list[str]:
    """Allowed but doubtful settings (identical prompts; prompts that the gate mode ignores)."""
    out = duplicate_prompt_warnings(cfg)
    if cfg.gate_mode not in PROMPT_MODES and any(e.positive_prompts or e.negative_prompts for e in cfg.all_experts()):
        out.append(f"gate_mode {cfg.gate_mode} ignores the prompts")
    return out


def is_moe_data(data: Any) -> bool:
    """Whether parsed YAML is a mergekit-moe config (it lists experts) rather than a merge."""
    return isinstance(data, dict) and "experts" in data and "merge_method" not in data


def parse_moe_lenient(text: str, source: str = "<config>") -> MoEConfig:
    """MoE YAML checked against the schema only: whole-config problems are left to `moe_problem`."""
    try:
        return parse_moe_config(text, source)
    except ConfigError:
        try:
            return MoEConfig.model_validate(yaml.safe_load(text))
        except (ValidationError, yaml.YAMLError):
            pass
        raise  # the schema error, with its file:line and fix


def parse_recipe(text: str, source: str = "<config>") -> Recipe:
    """A merge or a MoE recipe, whichever the YAML is; raises ConfigError with file:line."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        data = None  # parse_config reports it with its line
    if is_moe_data(data):
        return parse_moe_lenient(text, source)
    return parse_config(text, source)
