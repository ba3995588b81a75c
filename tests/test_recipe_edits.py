"""The workbench's UI-free recipe edits: tokenizer section, vocabulary fix, MoE recipe, recipe kinds, job commands."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from mergetui import jobs
from mergetui.engine.config import parse_config
from mergetui.engine.moe.config import MoEConfig, parse_moe_config
from mergetui.moe_recipe import (
    expert_rows, moe_for_bench, moe_problem, parse_recipe, prompts_from_text, prompts_text, put_expert, remove_expert,
    set_moe_field, toggle_shared,
)
from mergetui.recipe import chat_template_choice, config_for_bench, set_field, set_tokenizer, token_overrides, vocab_fix_choices
from mergetui.state import WorkbenchState

TOKENS_YAML = """\
merge_method: linear
models:
- model: org/a
- model: org/b
tokenizer:
  source: union
  tokens:
    <|im_start|>:
      source: org/b
    <|pad|>:
      source:
        kind: zero
      force: true
    <|x|>:
      source:
        kind: model_token
        model: org/a
        token: w1
chat_template: chatml
"""


def test_set_tokenizer_writes_the_section_and_keeps_the_rest() -> None:
    cfg = config_for_bench(["org/a", "org/b"])
    union = set_tokenizer(cfg, source="union")
    assert union.tokenizer is not None and union.tokenizer.source == "union" and union.tokenizer_source is None
    assert "tokenizer:\n  source: union\n" in union.to_yaml()
    padded = set_tokenizer(union, pad=64)
    assert padded.tokenizer.pad_to_multiple_of == 64 and padded.tokenizer.source == "union"
    assert set_tokenizer(padded, pad=None).tokenizer.pad_to_multiple_of is None
    assert set_tokenizer(padded, source=None).tokenizer is None  # no source: no alignment at all
    # clearing a pad that was never set adds nothing (an empty section would mean union)
    assert set_tokenizer(cfg, pad="").tokenizer is None
    with pytest.raises(ValueError):
        set_tokenizer(cfg, pad=0)
    # token overrides survive source and padding edits
    full = parse_config(TOKENS_YAML)
    edited = set_tokenizer(set_tokenizer(full, source="base"), pad=8)
    assert token_overrides(edited) == token_overrides(full) and len(token_overrides(edited)) == 3
    assert parse_config(edited.to_yaml()) == edited


def test_legacy_tokenizer_source_stays_legacy_until_padding() -> None:
    cfg = parse_config("merge_method: linear\nmodels:\n- model: org/a\n- model: org/b\ntokenizer_source: union\n")
    base = set_tokenizer(cfg, source="base")
    assert base.tokenizer_source == "base" and base.tokenizer is None
    padded = set_tokenizer(base, pad=32)
    assert padded.tokenizer_source is None and padded.tokenizer.source == "base" and padded.tokenizer.pad_to_multiple_of == 32


def test_chat_template_choice() -> None:
    cfg = config_for_bench(["org/a"])
    assert chat_template_choice(cfg) is None
    assert chat_template_choice(set_field(cfg, "chat_template", "auto")) == "auto"
    assert chat_template_choice(set_field(cfg, "chat_template", "llama3")) == "llama3"
    assert chat_template_choice(set_field(cfg, "chat_template", "{% for m in messages %}{{ m.content }}{% endfor %}")) == "literal"


def test_vocab_fix_choices_name_union_base_and_models() -> None:
    cfg = set_field(config_for_bench(["org/a", "org/b"], "task_arithmetic"), "base_model", "org/b")
    choices = vocab_fix_choices(cfg, ["org/a", "org/b"])
    assert [v for v, _ in choices] == ["union", "base", "org/a", "org/b"]
    assert "(b)" in choices[1][1]


def test_moe_recipe_edits() -> None:
    cfg = moe_for_bench(["org/base", "org/code", "org/math"])
    assert cfg.base_model == "org/base" and [e.source_model for e in cfg.experts] == ["org/base", "org/code", "org/math"]
    assert "has no positive_prompts" in (moe_problem(cfg) or "")
    cfg = set_moe_field(cfg, "gate_mode", "random")
    assert moe_problem(cfg) is None
    cfg = put_expert(cfg, "experts", 1, {"source_model": "org/code", "positive_prompts": prompts_from_text("def f():\n\n  class A:  \n"),
                                         "negative_prompts": [], "noise_scale": None})
    assert cfg.experts[1].positive_prompts == ["def f():", "class A:"] and cfg.experts[1].negative_prompts is None
    assert prompts_text(cfg.experts[1].positive_prompts) == "def f():\nclass A:"
    cfg = remove_expert(cfg, "experts", 0)
    assert [e.source_model for e in cfg.experts] == ["org/code", "org/math"]
    cfg, group, index = toggle_shared(cfg, "experts", 1)
    assert (group, index) == ("shared_experts", 0) and [e.source_model for e in cfg.shared_experts] == ["org/math"]
    assert [(g, i) for g, i, _ in expert_rows(cfg)] == [("experts", 0), ("shared_experts", 0)]
    assert "experts_per_token is 2 but only 1" in (moe_problem(cfg) or "")
    cfg = set_moe_field(set_moe_field(cfg, "experts_per_token", "1"), "architecture", "qwen")
    assert moe_problem(cfg) is None
    assert parse_moe_config(cfg.to_yaml()) == cfg  # what Save writes is mergekit-moe YAML
    cfg, _, _ = toggle_shared(cfg, "shared_experts", 0)
    assert cfg.shared_experts is None and len(cfg.experts) == 2
    with pytest.raises(ValueError):
        set_moe_field(cfg, "gate_mode", "sideways")
    with pytest.raises(ValueError):
        set_moe_field(cfg, "base_model", None)


def test_parse_recipe_tells_merge_from_moe() -> None:
    assert isinstance(parse_recipe(TOKENS_YAML), type(parse_config(TOKENS_YAML)))
    moe = parse_recipe("base_model: org/a\ngate_mode: hidden\nexperts:\n- source_model: org/a\n- source_model: org/b\n")
    assert isinstance(moe, MoEConfig)  # prompts missing: accepted as a draft, moe_problem tells
    assert moe_problem(moe) is not None


def test_state_keeps_both_recipes_and_saves_the_active_one(tmp_path) -> None:
    state = WorkbenchState(bench=["org/a", "org/b"])
    state.recipe()
    state.set_method("moe")
    assert state.kind == "moe" and state.method() == "moe" and isinstance(state.active(), MoEConfig)
    path = state.save_config(str(tmp_path / "moe.yml"))
    assert "experts:" in path.read_text() and "merge_method" not in path.read_text()
    state.set_method("slerp")
    assert state.kind == "merge" and state.active().merge_method == "slerp" and state.moe is not None
    other = WorkbenchState()
    other.open_config(str(path))
    assert other.kind == "moe" and other.bench == ["org/a", "org/b"]


def test_job_command_knows_merge_from_moe(tmp_path) -> None:
    merge = jobs.job_command("merge", "c.yml", "out", "ev", True, [])
    moe = jobs.job_command("moe", "c.yml", "out", "ev", True, [])
    assert merge[:4] == [sys.executable, "-m", "mergetui", "merge"] and "--resume" in merge
    assert moe[:4] == [sys.executable, "-m", "mergetui", "moe"] and "--resume" not in moe  # a MoE starts over
    assert moe[4:] == ["c.yml", "out", "--events", "ev", "--quiet"]
    with pytest.raises(ValueError):
        jobs.job_command("bake", "c.yml", "out", "ev", False, [])
    job = jobs.start_job("x: 1\n", str(tmp_path / "out"), root=tmp_path / "jobs", kind="moe",
                         command=[sys.executable, "-c", "pass"])
    assert jobs.load_job(Path(job.dir)).kind == "moe"


def test_moe_preflight_plans_or_says_why_not(tiny_model, tmp_path) -> None:
    from mergetui import backend

    a, b = str(tiny_model("llama", layers=2, seed=1)), str(tiny_model("llama", layers=2, seed=2))
    deeper = str(tiny_model("llama", layers=3, seed=1))
    cfg = set_moe_field(moe_for_bench([a, b]), "gate_mode", "random")
    pf = backend.preflight(cfg, str(tmp_path / "out"))
    assert not pf.error and pf.summary["method"].startswith("moe (Mixtral, 2 experts") and pf.output_bytes > 0
    assert pf.summary["output_layers"] == 2 and pf.free_disk
    bad = put_expert(cfg, "experts", 1, {"source_model": deeper})
    assert "3 layers" in backend.preflight(bad, str(tmp_path / "out")).error
    assert "no positive_prompts" in backend.preflight(set_moe_field(cfg, "gate_mode", "hidden"), str(tmp_path / "out")).error
