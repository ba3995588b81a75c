"""The merge recipe: mergekit's YAML schema, validated, loaded and dumped unchanged."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mergetui.engine.errors import ConfigError

Scalar = Union[bool, int, float, str]
ScalarOrGradient = Union[Scalar, list[Scalar]]


class ConditionalParameter(BaseModel):
    """A parameter value that applies to tensors whose name contains `filter`."""

    model_config = ConfigDict(extra="forbid")
    value: ScalarOrGradient
    filter: Optional[str] = None


ParameterSetting = Union[ConditionalParameter, list[ConditionalParameter], ScalarOrGradient]
Parameters = dict[str, ParameterSetting]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class InputModel(_Strict):
    """`models:` entry: a model and its per-model parameters."""

    model: str
    parameters: Optional[Parameters] = None

    @field_validator("model", mode="before")
    @classmethod
    def _norm_model(cls, v: Any) -> Any:
        return normalize_model_ref(v)


class InputSlice(_Strict):
    """A source of an output slice: layers [start, end) of one model."""

    model: str
    layer_range: tuple[int, int]
    parameters: Optional[Parameters] = None

    @field_validator("model", mode="before")
    @classmethod
    def _norm_model(cls, v: Any) -> Any:
        return normalize_model_ref(v)


class OutputSlice(_Strict):
    """One block of output layers, merged from one or more sources of equal length."""

    sources: list[InputSlice]
    base_model: Optional[str] = None
    residual_weight: Optional[float] = None
    parameters: Optional[Parameters] = None

    @field_validator("base_model", mode="before")
    @classmethod
    def _norm_base(cls, v: Any) -> Any:
        return normalize_model_ref(v)


class ModelTokenSource(_Strict):
    """A token's row taken from another token of one model (`kind: model_token`)."""

    kind: Literal["model_token"]
    model: str
    token: Optional[str] = None
    token_id: Optional[int] = None

    @field_validator("model", mode="before")
    @classmethod
    def _norm_model(cls, v: Any) -> Any:
        return normalize_model_ref(v)

    @model_validator(mode="after")
    def _one_token(self) -> "ModelTokenSource":
        if (self.token is None) == (self.token_id is None):
            raise ValueError("model_token needs exactly one of 'token' or 'token_id'")
        return self


class ZeroSource(_Strict):
    """A token's row of zeros (`kind: zero`)."""

    kind: Literal["zero"]


class TokenSource(_Strict):
    """Where one token's embedding row comes from (mergekit's tokenizer.tokens entry).

    `source` is a model (its row for this token), a model_token, zero, or unset (the
    default fill); `force` applies it to every model, not only those lacking the token.
    """

    source: Union[ModelTokenSource, ZeroSource, str, None] = None
    force: Optional[bool] = None

    @field_validator("source", mode="before")
    @classmethod
    def _norm_source(cls, v: Any) -> Any:
        if isinstance(v, dict) and "kind" in v:
            if v["kind"] not in ("model_token", "zero"):
                raise ValueError(f"source kind {v['kind']!r} is not one of model_token, zero")
            return v
        return normalize_model_ref(v)


class TokenizerConfig(_Strict):
    """mergekit's `tokenizer:` section (source defaults to union, as in mergekit)."""

    source: Optional[str] = None
    tokens: Optional[dict[str, TokenSource]] = None
    pad_to_multiple_of: Optional[int] = Field(default=None, ge=1)

    @field_validator("source", mode="before")
    @classmethod
    def _norm_source(cls, v: Any) -> Any:
        return normalize_model_ref(v)


class MergeConfig(_Strict):
    """A mergekit YAML merge config: the single source of truth of a recipe."""

    merge_method: str
    models: Optional[list[InputModel]] = None
    slices: Optional[list[OutputSlice]] = None
    modules: Optional[dict[str, Any]] = None
    base_model: Optional[str] = None
    parameters: Optional[Parameters] = None
    dtype: Optional[str] = None
    out_dtype: Optional[str] = None
    tokenizer_source: Optional[str] = None
    tokenizer: Optional[TokenizerConfig] = None
    chat_template: Optional[str] = None
    name: Optional[str] = None

    @field_validator("base_model", "tokenizer_source", mode="before")
    @classmethod
    def _norm_base(cls, v: Any) -> Any:
        return normalize_model_ref(v)

    @model_validator(mode="after")
    def _one_layout(self) -> "MergeConfig":
        given = [k for k in ("models", "slices", "modules") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError(
                "exactly one of 'models', 'slices' or 'modules' must be given"
                + (f" (found {', '.join(given)})" if given else " (found none)")
            )
        if self.modules:
            raise ValueError("'modules:' (multi-module models) is not supported yet; use 'models:' or 'slices:'")
        if self.tokenizer_source and self.tokenizer:
            raise ValueError("give either 'tokenizer_source' or 'tokenizer', not both")
        for key in ("dtype", "out_dtype"):
            value = getattr(self, key)
            if value is not None and value not in DTYPES:
                raise ValueError(f"{key}: {value!r} is not a dtype; use one of {', '.join(sorted(DTYPES))}")
        return self

    def referenced_models(self) -> list[str]:
        """Every model the config names, base first, each once, in order of appearance."""
        seen: dict[str, None] = {}
        if self.base_model:
            seen.setdefault(self.base_model)
        for m in self.models or []:
            seen.setdefault(m.model)
        for s in self.slices or []:
            if s.base_model:
                seen.setdefault(s.base_model)
            for src in s.sources:
                seen.setdefault(src.model)
        return list(seen)

    def tokenizer_choice(self) -> str | None:
        """The tokenizer source, from `tokenizer.source` (default union) or legacy `tokenizer_source`."""
        if self.tokenizer is not None:
            return self.tokenizer.source or "union"
        return self.tokenizer_source

    def to_yaml(self) -> str:
        """The config as mergekit-compatible YAML (unset keys left out)."""
        data = self.model_dump(exclude_none=True, mode="json")
        return yaml.dump(data, Dumper=_Dumper, sort_keys=False).rstrip() + "\n"


DTYPES = {"float32", "float16", "bfloat16", "float64", "fp32", "fp16", "bf16"}


def normalize_model_ref(value: Any) -> Any:
    """Accept mergekit's model reference forms we support; reject the rest clearly."""
    if value is None or isinstance(value, str):
        if isinstance(value, str) and "+" in value and not Path(value).exists():
            raise ValueError(f"model {value!r}: LoRA references (model+lora) are not supported yet")
        return value
    if isinstance(value, dict) and set(value) <= {"model", "lora", "override_architecture"}:
        inner = value.get("model")
        if value.get("lora"):
            raise ValueError("LoRA references are not supported yet")
        if isinstance(inner, dict) and "path" in inner:
            rev = inner.get("revision")
            return inner["path"] + (f"@{rev}" if rev else "")
        if isinstance(inner, str):
            return inner
    raise ValueError(f"cannot read model reference {value!r}; use 'org/name[@revision]' or a local path")


class _Dumper(yaml.SafeDumper):
    """Flow style for lists of numbers (gradients), like mergekit writes them."""


def _represent_list(dumper: yaml.SafeDumper, data: list) -> yaml.Node:
    flow = all(isinstance(e, (int, float)) and not isinstance(e, bool) for e in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(list, _represent_list)
_Dumper.add_representer(tuple, _represent_list)


def load_yaml_mapping(text: str, source: str, expected: str) -> tuple[yaml.Node | None, dict[str, Any]]:
    """The YAML's node tree (for line numbers) and data; a ConfigError naming the line if malformed."""
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(f"{where}: malformed YAML: {problem}", fix="fix the YAML syntax at that line") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping with {expected}")
    return node, data


def parse_config(text: str, source: str = "<config>") -> MergeConfig:
    """Parse and validate YAML text; errors name the file, the line and the fix."""
    node, data = load_yaml_mapping(text, source, "merge_method and models or slices")
    try:
        return MergeConfig.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = [p for p in err["loc"] if not isinstance(p, str) or not p.startswith("function-")]
        line = yaml_line_of(node, loc)
        where = f"{source}:{line}" if line else source
        path = ".".join(str(p) for p in loc) or "config"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = f"unknown key {loc[-1]!r}"
        elif err["type"] == "missing":
            msg = f"missing key {loc[-1]!r}"
        raise ConfigError(f"{where}: {path}: {msg}") from None


def load_config(path: str | Path) -> MergeConfig:
    """Read a mergekit YAML config file."""
    return parse_config(read_config_text(path), str(path))


def read_config_text(path: str | Path) -> str:
    """A config file's text; a ConfigError naming the file if it cannot be read."""
    p = Path(path)
    try:
        return p.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{p}: config file not found", fix="check the path") from None
    except OSError as e:
        raise ConfigError(f"{p}: cannot read config: {e.strerror}") from None


def yaml_line_of(node: yaml.Node | None, loc: list[Any]) -> int | None:
    """1-based line of the YAML node at pydantic location `loc` (closest existing parent)."""
    line = node.start_mark.line + 1 if node is not None else None
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            nxt = next((v for k, v in node.value if getattr(k, "value", None) == str(key)), None)
            if nxt is None:
                return line
            node = nxt
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
        else:
            return line
        line = node.start_mark.line + 1
    return line
