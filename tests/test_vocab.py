"""Vocabulary alignment (tokenizer / tokenizer_source) and chat templates, unit level and end to end.

The end-to-end case is the classic 32003-vs-32001 one in small: a base with 128 tokens and a
fine-tune that added two special tokens (<extra_0>, <extra_1>) and two embedding rows.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mergetui.cli import main
from mergetui.engine.chat_templates import BUILTIN, check_chat_template, resolve_chat_template
from mergetui.engine.config import parse_config
from mergetui.engine.errors import ConfigError, ShapeMismatchError
from mergetui.engine.plan import build_plan
from mergetui.engine.vocab import ModelVocab, VocabPlan, align, padded, row_maps, union_additions
from tiny_models import make_model

EMB, HEAD = "model.embed_tokens.weight", "lm_head.weight"


def load_dir(path: Path) -> dict[str, torch.Tensor]:
    sd: dict[str, torch.Tensor] = {}
    for f in sorted(path.glob("*.safetensors")):
        sd.update(load_file(f))
    return sd


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("vocab")
    a = make_model(d / "a", "llama", layers=1, seed=1)
    return {
        "a": a,  # base: 128 tokens
        "b": make_model(d / "b", "llama", layers=1, seed=2, base=a, extra_tokens=2),  # + <extra_0>, <extra_1>
        "c": make_model(d / "c", "llama", layers=1, seed=3, base=a, extra_tokens=3),  # + <extra_0..2>
        "bt": make_model(d / "bt", "llama", layers=1, seed=4, base=a, extra_tokens=2, tie=True),  # tied head
        "a2": make_model(d / "a2", "llama", layers=1, seed=5, base=a),  # same vocabulary as a
    }


def linear(m: dict[str, Path], other: str = "b", extra: str = "") -> str:
    return (f"merge_method: linear\nbase_model: {m['a']}\nmodels:\n  - model: {m['a']}\n    parameters: {{weight: 0.5}}\n"
            f"  - model: {m[other]}\n    parameters: {{weight: 0.5}}\n" + extra)


def run_merge(tmp: Path, text: str, *flags: str) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    cfg = tmp / "cfg.yml"
    cfg.write_text(text)
    out = tmp / "out"
    assert main(["merge", str(cfg), str(out), "--quiet", *flags]) == 0
    return out


def tokenizer(out: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(out)


def vocab_size(out: Path) -> int:
    return json.loads((out / "config.json").read_text())["vocab_size"]


# -- end to end: the 32003-vs-32001 case -----------------------------------------------------------


@pytest.mark.parametrize("setting", ["tokenizer_source: union\n", "tokenizer: {source: union}\n", "tokenizer: {}\n"])
def test_union_linear_maps_added_tokens_to_the_fine_tunes_rows(tmp_path: Path, models: dict[str, Path], setting: str) -> None:
    from transformers import AutoModelForCausalLM

    out = run_merge(tmp_path, linear(models, extra=setting))
    sa, sb, so = load_dir(models["a"]), load_dir(models["b"]), load_dir(out)
    tok, tok_b = tokenizer(out), tokenizer(models["b"])
    assert len(tok) == 130 and vocab_size(out) == 130
    for name in (EMB, HEAD):
        assert so[name].shape == (130, 64)
        assert torch.allclose(so[name][:128], 0.5 * sa[name] + 0.5 * sb[name][:128], atol=1e-6)
        for t in ("<extra_0>", "<extra_1>"):
            i = tok.convert_tokens_to_ids(t)
            # only the fine-tune has the token: both models' aligned rows are its row
            assert torch.equal(so[name][i], sb[name][tok_b.convert_tokens_to_ids(t)]), (name, t)
    assert tok("w1 <extra_1>").input_ids == [4, 129]
    model = AutoModelForCausalLM.from_pretrained(out)
    with torch.no_grad():
        assert model(torch.tensor([[1, 128, 129]])).logits.shape == (1, 3, 130)


def test_base_source_keeps_the_base_vocabulary(tmp_path: Path, models: dict[str, Path]) -> None:
    out = run_merge(tmp_path, linear(models, extra="tokenizer_source: base\n"))
    sa, sb, so = load_dir(models["a"]), load_dir(models["b"]), load_dir(out)
    assert so[EMB].shape == (128, 64) and vocab_size(out) == 128
    assert torch.allclose(so[HEAD], 0.5 * sa[HEAD] + 0.5 * sb[HEAD][:128], atol=1e-6)
    # the base's tokenizer, unchanged: copied byte for byte
    assert (out / "tokenizer.json").read_bytes() == (models["a"] / "tokenizer.json").read_bytes()
    assert tokenizer(out).convert_tokens_to_ids("<extra_0>") == 0  # unknown


def test_ties_over_three_models_union_and_base(tmp_path: Path, models: dict[str, Path]) -> None:
    m = models
    text = (f"merge_method: ties\nbase_model: {m['a']}\nmodels:\n  - model: {m['a']}\n"
            f"  - model: {m['b']}\n    parameters: {{weight: 0.6, density: 1.0}}\n"
            f"  - model: {m['c']}\n    parameters: {{weight: 0.4, density: 1.0}}\n")
    union = run_merge(tmp_path / "u", text + "tokenizer_source: union\n")
    base = run_merge(tmp_path / "b", text + "tokenizer_source: base\n")
    sb, sc, su, so = load_dir(m["b"]), load_dir(m["c"]), load_dir(union), load_dir(base)
    assert su[EMB].shape == (131, 64) and vocab_size(union) == 131 == len(tokenizer(union))
    assert so[EMB].shape == (128, 64) and vocab_size(base) == 128 == len(tokenizer(base))
    for name in (EMB, HEAD):
        # tokens every model has: the same rows either way (TIES is element-wise at density 1)
        assert torch.allclose(su[name][:128], so[name][:128], atol=1e-6)
        # <extra_0/1>: b and c have them, the base does not, so the base's row is their mean;
        # the deltas are then opposite, b's weighs more and wins the sign election: b's row
        assert torch.allclose(su[name][128:130], sb[name][128:130], atol=1e-6)
        # <extra_2>: only c has it, so every model's row is c's and nothing moves
        assert torch.equal(su[name][130], sc[name][130])


def test_model_source_and_tied_fine_tune(tmp_path: Path, models: dict[str, Path]) -> None:
    """tokenizer_source: <the fine-tune>; the fine-tune's head is its embedding (tied)."""
    out = run_merge(tmp_path, linear(models, "bt", f"tokenizer_source: {models['bt']}\n"), "--allow-crimes")
    sa, sbt, so = load_dir(models["a"]), load_dir(models["bt"]), load_dir(out)
    assert HEAD not in sbt and HEAD in so  # the output follows the untied base
    assert so[HEAD].shape == (130, 64) and vocab_size(out) == 130
    assert torch.allclose(so[HEAD][:128], 0.5 * sa[HEAD] + 0.5 * sbt[EMB][:128], atol=1e-6)
    assert torch.equal(so[HEAD][128:], sbt[EMB][128:])
    assert torch.equal(so[EMB][128:], sbt[EMB][128:])


def test_pad_to_multiple_of_pads_with_the_mean_row(tmp_path: Path, models: dict[str, Path]) -> None:
    out = run_merge(tmp_path, linear(models, extra="tokenizer:\n  source: union\n  pad_to_multiple_of: 64\n"))
    so = load_dir(out)
    assert so[EMB].shape == (192, 64) and vocab_size(out) == 192 and len(tokenizer(out)) == 130
    for name in (EMB, HEAD):
        # each model's padding is its mean row; linear of means = mean of the linear rows
        mean = so[name][:130].mean(0)
        assert torch.allclose(so[name][130:], mean.expand(62, 64), atol=1e-6)


def test_same_vocabulary_with_a_tokenizer_setting_changes_nothing(tmp_path: Path, models: dict[str, Path]) -> None:
    cfg = parse_config(linear(models, "a2", "tokenizer_source: union\n"))
    plan = build_plan(cfg)
    assert all(t.align is None for t in plan.tensors) and plan.vocab is not None and not plan.vocab.changed
    assert plan.out_config["vocab_size"] == 128


def test_token_overrides_each_kind(tmp_path: Path, models: dict[str, Path]) -> None:
    a, b = models["a"], models["b"]
    tokens = (
        "tokenizer:\n  source: union\n  tokens:\n"
        "    <extra_0>: {source: {kind: zero}}\n"  # a lacks it: a's row is zero, b keeps its own
        "    <extra_1>: {source: {kind: zero}, force: true}\n"  # every model's row is zero
        f"    w7: {{source: {b}, force: true}}\n"  # both take b's w7 row
        f"    w9: {{source: {{kind: model_token, model: {b}, token_id: 5}}, force: true}}\n"
        f"    <new>: {{source: {{kind: model_token, model: {a}, token: w3}}}}\n"  # added to the vocabulary
        "    w11: {force: true}\n"  # the default rule for everyone: the base's row
    )
    out = run_merge(tmp_path, linear(models, extra=tokens))
    sa, sb, so = load_dir(a), load_dir(b), load_dir(out)
    tok = tokenizer(out)
    ids = dict(zip(["<extra_0>", "<extra_1>", "w7", "w9", "<new>", "w11", "w3"],
                   tok.convert_tokens_to_ids(["<extra_0>", "<extra_1>", "w7", "w9", "<new>", "w11", "w3"])))
    assert ids["<new>"] == 130 and vocab_size(out) == 131 and tok("w1 <new>").input_ids == [4, 130]
    for name in (EMB, HEAD):
        o, xa, xb = so[name], sa[name], sb[name]
        assert torch.allclose(o[128], 0.5 * xb[128], atol=1e-6)
        assert torch.equal(o[129], torch.zeros(64))
        assert torch.allclose(o[ids["w7"]], xb[ids["w7"]], atol=1e-6)
        assert torch.allclose(o[ids["w9"]], xb[5], atol=1e-6)
        assert torch.allclose(o[130], xa[ids["w3"]], atol=1e-6)
        assert torch.allclose(o[ids["w11"]], xa[ids["w11"]], atol=1e-6)


@pytest.mark.parametrize(
    "entry, words",
    [
        ("<extra_0>: {source: A}", ["has no token '<extra_0>'", "model_token"]),
        ("w1: {source: {kind: model_token, model: A, token: nope}}", ["has no token 'nope'"]),
        ("w1: {source: {kind: model_token, model: A, token_id: 500}}", ["row 500 is outside", "128"]),
        ("w1: {source: /nowhere/model}", ["not one of the merged models"]),
    ],
)
def test_override_errors_name_token_and_model(models: dict[str, Path], entry: str, words: list[str]) -> None:
    text = linear(models, extra=f"tokenizer:\n  source: union\n  tokens:\n    {entry.replace('A', str(models['a']))}\n")
    with pytest.raises(ConfigError) as e:
        build_plan(parse_config(text))
    for w in words:
        assert w in str(e.value)


def test_vocab_mismatch_without_a_setting_says_what_to_write(models: dict[str, Path]) -> None:
    with pytest.raises(ShapeMismatchError) as e:
        build_plan(parse_config(linear(models)))
    assert "128" in str(e.value) and "130" in str(e.value) and "tokenizer_source: union" in str(e.value)


# -- unit level: fill rules, padding, a 150k-token union -------------------------------------------


def plan_of(vocabs: dict[str, ModelVocab], out_vocab: dict[str, int], pad: int | None = None) -> VocabPlan:
    n = max(out_vocab.values()) + 1
    maps = row_maps(out_vocab, n, vocabs)
    return VocabPlan("union", "m0", None, True, n, padded(n, pad), maps, {r: v.rows for r, v in vocabs.items()})


def test_fill_rules_only_model_base_mean_zero() -> None:
    # output tokens: p (everyone), q (only m2), r (m1, m2; base m0 lacks it), s (m0, m2), z (nobody)
    out = {"p": 0, "q": 1, "r": 2, "s": 3, "z": 4}
    vocabs = {
        "m0": ModelVocab("m0", {"p": 1, "s": 0}, 2),
        "m1": ModelVocab("m1", {"r": 0, "p": 1}, 2),
        "m2": ModelVocab("m2", {"p": 0, "q": 1, "r": 2, "s": 3, "extra": 4}, 4),  # 'extra' has no row
    }
    vp = plan_of(vocabs, out, pad=8)
    spec = vp.spec(["m0", "m1", "m2"], "m0", "emb")
    xs = [torch.arange(rows * 3.0).view(rows, 3) + 100 * (j + 1) for j, rows in enumerate((2, 2, 4))]
    x0, x1, x2 = (x.clone() for x in xs)
    y0, y1, y2 = align(xs, spec)
    assert all(y.shape == (8, 3) for y in (y0, y1, y2)) and all(x.numel() == 0 for x in xs)
    assert torch.equal(y0[0], x0[1]) and torch.equal(y1[0], x1[1]) and torch.equal(y2[0], x2[0])  # own rows
    assert all(torch.equal(y[1], x2[1]) for y in (y0, y1, y2))  # only m2 has q
    assert torch.equal(y0[2], (x1[0] + x2[2]) / 2) and torch.equal(y1[2], x1[0])  # base lacks r: mean
    assert torch.equal(y1[3], x0[0]) and torch.equal(y2[3], x2[3])  # s: the base's row where missing
    assert all(torch.equal(y[4], torch.zeros(3)) for y in (y0, y1, y2))  # z: zeros
    assert all(torch.allclose(y[5:], y[:5].mean(0).expand(3, 3)) for y in (y0, y1, y2))  # padding


def test_align_keeps_bf16_and_skips_identity() -> None:
    out = {f"t{i}": i for i in range(6)}
    vocabs = {"a": ModelVocab("a", dict(out), 6), "b": ModelVocab("b", dict(out), 6)}
    assert plan_of(vocabs, out).spec(["a", "b"], "a", "emb") is None
    vocabs["b"] = ModelVocab("b", {f"t{i}": 5 - i for i in range(6)}, 6)  # same tokens, other order
    spec = plan_of(vocabs, out).spec(["a", "b"], "a", "emb")
    x = torch.randn(6, 4).to(torch.bfloat16)
    ya, yb = align([x.clone(), x.flip(0)], spec)
    assert yb.dtype == torch.bfloat16 and torch.equal(ya, x) and torch.equal(yb, x)


def test_union_of_150k_tokens_is_index_ops() -> None:
    """A 150k-token union: maps and spec take ~0.5 s, align of 2 x 150k x 1024 bf16 ~3 s (2-core box)."""
    base_vocab = {f"t{i}": i for i in range(100_000)}
    other_vocab = {f"t{i}": i - 40_000 for i in range(40_000, 150_000)}  # 60k shared, 50k new
    other_vocab["t149999"] = 200_000  # an id past its rows: not part of the union
    base, other = ModelVocab("base", base_vocab, 100_000), ModelVocab("other", other_vocab, 110_000)
    regular, extra = union_additions(base, [other])
    assert len(regular) == 49_999 and not extra and regular[:2] == ["t100000", "t100001"]
    out = dict(base_vocab, **{t: 100_000 + i for i, t in enumerate(regular)})
    vp = plan_of({"base": base, "other": other}, out, pad=128)
    spec = vp.spec(["base", "other"], "base", "emb")
    assert vp.size == 150_016 and spec.fill_ids.numel() == 40_000 + 49_999
    xb = torch.randn(100_000, 2)
    xo = torch.randn(110_000, 2)
    yb, yo = align([xb.clone(), xo.clone()], spec)
    assert torch.equal(yb[:100_000], xb) and torch.equal(yo[:40_000], xb[:40_000])  # other lacks t0..t39999
    assert torch.equal(yb[100_000:149_999], xo[60_000:109_999]) and torch.equal(yo[100_000:149_999], xo[60_000:109_999])
    assert torch.equal(yo[40_000:100_000], xo[:60_000])


# -- chat templates ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(BUILTIN) + ["literal"])
def test_chat_template_names_and_literal_render(tmp_path: Path, models: dict[str, Path], name: str) -> None:
    literal = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
    value = json.dumps(literal) if name == "literal" else name
    out = run_merge(tmp_path, linear(models, "a2", f"chat_template: {value}\n"))
    tok = tokenizer(out)
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    text = tok.apply_chat_template(msgs, tokenize=False)
    assert "hi" in text and "yo" in text
    expected = {
        "chatml": "<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nyo<|im_end|>\n",
        "llama3": "<s><|start_header_id|>system<|end_header_id|>\n\nbe brief<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>"
                  "<|start_header_id|>assistant<|end_header_id|>\n\nyo<|eot_id|>",
        "mistral": "<s> [INST] be brief\n\nhi [/INST] yo</s>",
        "alpaca": "be brief\n\n### Instruction:\nhi\n\n### Response:\nyo",
        "exaone": "[|system|]be brief[|endofturn|]\n[|user|]hi\n[|assistant|]yo[|endofturn|]\n",
        "literal": "[system] be brief\n[user] hi\n[assistant] yo\n",
    }
    assert text == expected[name]
    assert json.loads((out / "tokenizer_config.json").read_text())["chat_template"] == BUILTIN.get(name, literal)


def test_chat_template_auto_picks_the_most_common(tmp_path: Path) -> None:
    roots = []
    for i, tpl in enumerate(["{{ 'one' }}", None, "{{ 'two' }}", "{{ 'two' }}\n"]):
        r = tmp_path / f"m{i}"
        r.mkdir()
        if tpl:
            (r / "chat_template.jinja" if i % 2 else r / "tokenizer_config.json").write_text(
                tpl if i % 2 else json.dumps({"chat_template": tpl}))
        roots.append(r)
    assert resolve_chat_template("auto", roots) == "{{ 'two' }}"
    assert resolve_chat_template("auto", roots[:2]) == "{{ 'one' }}"
    assert resolve_chat_template("auto", [roots[1]]) is None  # none: keep the tokenizer's
    assert resolve_chat_template("chatml", []) == BUILTIN["chatml"]


def test_chat_template_auto_end_to_end_with_union(tmp_path: Path, models: dict[str, Path]) -> None:
    import shutil

    b = tmp_path / "b"
    shutil.copytree(models["b"], b)
    (b / "chat_template.jinja").write_text("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}")
    text = linear(models, extra="tokenizer_source: union\nchat_template: auto\n").replace(str(models["b"]), str(b))
    tok = tokenizer(run_merge(tmp_path, text))
    assert len(tok) == 130 and tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False) == "<user>hi"


@pytest.mark.parametrize("bad", ["chatm", "llama-3", "{{ x }}"])
def test_unknown_chat_template_names_are_config_errors(bad: str) -> None:
    with pytest.raises(ConfigError) as e:
        check_chat_template(bad)
    assert "chatml" in str(e.value)


# -- the config section --------------------------------------------------------------------------


def test_tokenizer_section_parses_every_kind_and_round_trips() -> None:
    text = """
merge_method: linear
models: [{model: org/a}, {model: org/b}]
tokenizer:
  source: org/b
  pad_to_multiple_of: 64
  tokens:
    <x>: {source: {kind: zero}}
    <y>: {source: org/a, force: true}
    <z>: {source: {kind: model_token, model: {model: {path: org/a, revision: main}}, token_id: 3}}
    <v>: {source: {kind: model_token, model: org/b, token: <s>}}
    <w>: {force: true}
chat_template: chatml
"""
    cfg = parse_config(text)
    assert cfg.tokenizer_choice() == "org/b"
    assert cfg.tokenizer.tokens["<z>"].source.model == "org/a@main"
    assert parse_config(cfg.to_yaml()) == cfg
    assert "force: true" in cfg.to_yaml() and "force: false" not in cfg.to_yaml()
    assert parse_config("merge_method: linear\nmodels: [{model: org/a}]\ntokenizer: {pad_to_multiple_of: 8}\n").tokenizer_choice() == "union"


@pytest.mark.parametrize(
    "section, words",
    [
        ("{tokens: {<x>: {source: {kind: model_token, model: org/a}}}}", "exactly one of 'token' or 'token_id'"),
        ("{tokens: {<x>: {source: {kind: bogus}}}}", "source kind 'bogus'"),
        ("{pad_to_multiple_of: 0}", "greater than or equal to 1"),
    ],
)
def test_tokenizer_section_errors(section: str, words: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(f"merge_method: linear\nmodels: [{{model: org/a}}]\ntokenizer: {section}\n")
    assert words in str(e.value)
