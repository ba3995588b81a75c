"""Config parsing (mergekit YAML) and parameter resolution: precedence, filters, gradients."""

from __future__ import annotations

import pytest

from mergetui.engine.config import parse_config
from mergetui.engine.errors import ConfigError
from mergetui.engine.methods.base import ParamSpec
from mergetui.engine.params import evaluate, resolve

W = ParamSpec("weight", per_model=True)
NORM = ParamSpec("normalize", True, type=bool)


def test_parse_models_config_roundtrips_to_yaml() -> None:
    text = """
merge_method: ties
base_model: org/base@main
models:
  - model: org/a
    parameters: {weight: [0, 0.5, 1], density: 0.5}
  - model: ./local
    parameters:
      weight:
        - filter: mlp
          value: 0.3
        - value: 0.7
parameters: {normalize: true}
dtype: bfloat16
tokenizer_source: base
"""
    cfg = parse_config(text)
    assert cfg.referenced_models() == ["org/base@main", "org/a", "./local"]
    again = parse_config(cfg.to_yaml())
    assert again == cfg


@pytest.mark.parametrize(
    "text, line, words",
    [
        ("merge_method: linear\nmodels:\n  - model: a\n    layer_range: [0, 1]\n", 4, "unknown key 'layer_range'"),
        ("merge_method: linear\n  models: [\n", 2, "malformed YAML"),
        ("merge_method: linear\nmodels:\n  - model: a\nslices:\n  - sources: [{model: a, layer_range: [0, 1]}]\n", 1, "exactly one of"),
        ("merge_method: linear\nmodels:\n  - model: a\ndtype: f8\n", 1, "not a dtype"),
        ("models:\n  - model: a\n", 1, "missing key 'merge_method'"),
    ],
)
def test_config_errors_name_file_and_line(text: str, line: int, words: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(text, "recipe.yml")
    assert f"recipe.yml:{line}" in str(e.value)
    assert words in str(e.value)


def test_scalar_and_filter_first_match_wins() -> None:
    setting = parse_config(
        "merge_method: x\nmodels: [{model: a}]\nparameters:\n  weight:\n    - {filter: self_attn, value: 0.1}\n"
        "    - {filter: mlp, value: 0.2}\n    - {value: 0.9}\n"
    ).parameters["weight"]
    assert evaluate(setting, "model.layers.0.self_attn.q_proj.weight", 0, W) == 0.1
    assert evaluate(setting, "model.layers.0.mlp.up_proj.weight", 0, W) == 0.2
    assert evaluate(setting, "model.norm.weight", 0, W) == 0.9


def test_star_filter_matches_everything_and_no_match_falls_through() -> None:
    cfg = parse_config(
        "merge_method: x\nmodels: [{model: a, parameters: {weight: [{filter: mlp, value: 2}]}}]\n"
        "parameters:\n  weight: [{filter: '*', value: 5}]\n"
    )
    scopes = [cfg.models[0].parameters, cfg.parameters]
    assert resolve(W, scopes, "x.mlp.w", 0, "a") == 2.0
    assert resolve(W, scopes, "x.attn.w", 0, "a") == 5.0


@pytest.mark.parametrize(
    "values, t, expected",
    [
        ([0.0, 1.0], 0.0, 0.0),
        ([0.0, 1.0], 0.25, 0.25),
        ([0.0, 0.5, 1.0, 0.0], 0.5, 0.75),  # s = 1.5: between v[1]=0.5 and v[2]=1.0
        ([0.0, 0.5, 1.0, 0.0], 1.0, 0.0),
        ([0.2, 0.8], 1.0, 0.8),
        ([3.0], 0.7, 3.0),
    ],
)
def test_gradient_interpolation(values: list[float], t: float, expected: float) -> None:
    assert evaluate(values, "t", t, W) == pytest.approx(expected)


def test_precedence_source_then_slice_then_top_then_default() -> None:
    src, sl, top = {"weight": 1.0}, {"weight": 2.0}, {"weight": 3.0}
    assert resolve(W, [src, sl, top], "t", 0, "m") == 1.0
    assert resolve(W, [None, sl, top], "t", 0, "m") == 2.0
    assert resolve(W, [None, None, top], "t", 0, "m") == 3.0
    assert resolve(NORM, [None, None, None], "t", 0, "m") is True
    with pytest.raises(ConfigError, match="missing required parameter 'weight'"):
        resolve(W, [None, {}, None], "t", 0, "model x")


def test_bad_parameter_type_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="not a float"):
        resolve(W, [{"weight": "heavy"}], "t", 0, "m")
    assert resolve(NORM, [{"normalize": "false"}], "t", 0, "m") is False
