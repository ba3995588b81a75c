"""mergekit-moe's YAML schema: base model, experts with their prompts, gate mode, dtype.

Parsing reports file:line for both schema errors and the checks that need the whole config
(prompts present and distinct), so a config fails before any model is opened.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from mergetui.engine.config import DTYPES, load_yaml_mapping, normalize_model_ref, read_config_text, yaml_line_of
from mergetui.engine.errors import ConfigError

GateMode = Literal["hidden", "cheap_embed", "random", "uniform_random"]
PROMPT_MODES = ("hidden", "cheap_embed")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Expert(_Strict):
    """One expert: the model whose MLPs it contributes and the prompts that should route to it."""

    source_model: str
    positive_prompts: Optional[list[str]] = None
    negative_prompts: Optional[list[str]] = None
    noise_scale: Optional[float] = None
    residual_scale: Optional[float] = None

    @field_validator("source_model", mode="before")
    @classmethod
    def _norm_model(cls, v: Any) -> Any:
        return normalize_model_ref(v)

    def prompt_key(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Positive and negative prompts, for comparing experts."""
        return tuple(self.positive_prompts or ()), tuple(self.negative_prompts or ())


class MoEConfig(_Strict):
    """A mergekit-moe config."""

    base_model: str
    experts: list[Expert]
    gate_mode: GateMode = "hidden"  # mergekit's default
    dtype: Optional[str] = None
    experts_per_token: int = 2
    shared_experts: Optional[list[Expert]] = None
    architecture: Optional[str] = None  # "mixtral" or "qwen" (prefix of the output's name, as mergekit)

    @field_validator("base_model", mode="before")
    @classmethod
    def _norm_base(cls, v: Any) -> Any:
        return normalize_model_ref(v)

    @field_validator("dtype")
    @classmethod
    def _check_dtype(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and v not in DTYPES:
            raise ValueError(f"{v!r} is not a dtype; use one of {', '.join(sorted(DTYPES))}")
        return v

    def all_experts(self) -> list[Expert]:
        """Routed experts, then shared experts (the order of the router's rows)."""
        return list(self.experts) + list(self.shared_experts or [])

    def referenced_models(self) -> list[str]:
        """Every model the config names, base first, each once."""
        seen: dict[str, None] = {self.base_model: None}
        for e in self.all_experts():
            seen.setdefault(e.source_model)
        return list(seen)

    def to_yaml(self) -> str:
        """The config as mergekit-moe YAML (unset keys left out)."""
        return yaml.safe_dump(self.model_dump(exclude_none=True, mode="json"), sort_keys=False)


def _semantic_problems(cfg: MoEConfig) -> list[tuple[list[Any], str, str]]:
    """(location, message, fix) for what the schema alone cannot check."""
    out: list[tuple[list[Any], str, str]] = []
    if not cfg.experts:
        return [(["experts"], "no experts listed", "list at least two experts under 'experts:'")]
    if cfg.experts_per_token < 1:
        out.append((["experts_per_token"], f"experts_per_token is {cfg.experts_per_token}", "use 1 or more"))
    elif cfg.experts_per_token > len(cfg.experts):
        out.append((["experts_per_token"], f"experts_per_token is {cfg.experts_per_token} but only {len(cfg.experts)} expert(s) are listed",
                    f"use at most {len(cfg.experts)}, or add experts"))
    if cfg.gate_mode in PROMPT_MODES:
        for group in ("experts", "shared_experts"):
            for i, e in enumerate(getattr(cfg, group) or []):
                if not e.positive_prompts:
                    out.append(([group, i], f"{group}[{i}] ({e.source_model}) has no positive_prompts; gate_mode {cfg.gate_mode} "
                                            "computes its router row from them",
                                "give it positive_prompts that show what should be routed to it, or use gate_mode: random"))
        if len(cfg.experts) > 1 and len({e.prompt_key() for e in cfg.experts}) == 1 and cfg.experts[0].positive_prompts:
            names = ", ".join(f"experts[{i}] ({e.source_model})" for i, e in enumerate(cfg.experts))
            out.append((["experts", 1], f"every expert has the same prompts ({names}): their router rows would be equal, "
                                        "so the router could not tell them apart",
                        "give each expert positive_prompts of its own speciality"))
    return out


def duplicate_prompt_warnings(cfg: MoEConfig) -> list[str]:
    """Pairs of experts with identical prompts (allowed, as mergekit, but worth a warning)."""
    if cfg.gate_mode not in PROMPT_MODES:
        return []
    seen: dict[tuple, int] = {}
    out = []
    for i, e in enumerate(cfg.experts):
        j = seen.setdefault(e.prompt_key(), i)
        if j != i:
            out.append(f"experts[{j}] and experts[{i}] have identical prompts: the router will treat them alike")
    return out


def parse_moe_config(text: str, source: str = "<config>") -> MoEConfig:
    """Parse and validate mergekit-moe YAML; errors name the file, the line and the fix."""
    node, data = load_yaml_mapping(text, source, "base_model and experts (mergekit-moe format)")

    def where(loc: list[Any]) -> str:
        line = yaml_line_of(node, loc)
        return f"{source}:{line}" if line else source

    try:
        cfg = MoEConfig.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = [p for p in err["loc"] if not isinstance(p, str) or not p.startswith("function-")]
        path = ".".join(str(p) for p in loc) or "config"
        msg = err["msg"].removeprefix("Value error, ")
        fix = None
        if err["type"] == "extra_forbidden":
            msg = f"unknown key {loc[-1]!r}"
            fix = "mergekit-moe keys: base_model, experts, shared_experts, gate_mode, experts_per_token, dtype, architecture"
        elif err["type"] == "missing":
            msg = f"missing key {loc[-1]!r}"
        elif err["type"] == "literal_error" and loc[-1:] == ["gate_mode"]:
            fix = "use hidden, cheap_embed or random"
        raise ConfigError(f"{where(loc)}: {path}: {msg}", fix=fix) from None
    problems = _semantic_problems(cfg)
    if problems:
        loc, msg, fix = problems[0]
        raise ConfigError(f"{where(loc)}: {msg}", fix=fix)
    return cfg


def load_moe_config(path: str | Path) -> MoEConfig:
    """Read a mergekit-moe YAML config file."""
    return parse_moe_config(read_config_text(path), str(path))
