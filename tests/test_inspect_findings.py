"""Findings for sets of local models, with and without a merge config."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from mergetui.engine.config import parse_config
from mergetui.inspect.check import check_config, check_models
from mergetui.inspect.findings import find_issues
from mergetui.inspect.profile import profile_model


def codes(findings) -> dict[str, str]:
    return {f.code: f.severity for f in findings}


def edited(src: Path, dst: Path, **changes) -> Path:
    """A copy of model `src` with config.json keys changed (None deletes)."""
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    for k, v in changes.items():
        if v is None:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


def test_compatible_fine_tunes_have_no_findings(tiny_model) -> None:
    a = tiny_model("llama", layers=4, seed=1)
    b = tiny_model("llama", layers=4, seed=2, base=a)
    report = check_models([str(a), str(b)])
    assert report.findings == [] and report.exit_code == 0


def test_embedding_rows_differ_lists_the_extra_tokens(tiny_model) -> None:
    a = tiny_model("llama", layers=2, seed=1)
    b = tiny_model("llama", layers=2, seed=1, extra_tokens=2)
    f = next(f for f in check_models([str(a), str(b)]).findings if f.code == "embedding-rows-differ")
    assert f.severity == "error" and "128" in f.message and "130" in f.message
    assert "<extra_0>, <extra_1>" in f.fix and "tokenizer_source: base" in f.fix and str(b) in f.fix
    assert "model.embed_tokens.weight" in f.tensors and "lm_head.weight" in f.tensors
    # a tokenizer source in the config handles it; passthrough of one model's embedding too
    cfg = parse_config(f"merge_method: linear\ntokenizer_source: union\nmodels:\n  - model: {a}\n  - model: {b}\n")
    assert codes(find_issues([profile_model(str(a)), profile_model(str(b))], cfg))["embedding-rows-differ"] == "info"


def test_rows_against_tokenizer_length(tiny_model, tmp_path: Path) -> None:
    padded = tiny_model("llama", layers=2, vocab=128)
    shutil.copytree(padded, tmp_path / "short")
    from tiny_models import write_tokenizer

    write_tokenizer(tmp_path / "short", vocab=128, extra_tokens=4)  # 132 tokens, 128 rows
    got = codes(check_models([str(tmp_path / "short")]).findings)
    assert got == {"tokens-without-rows": "warning"}
    write_tokenizer(tmp_path / "short", vocab=120)
    assert codes(check_models([str(tmp_path / "short")]).findings) == {"rows-exceed-tokenizer": "info"}


def test_different_families_and_sizes(tiny_model) -> None:
    llama = tiny_model("llama", layers=2)
    gpt2 = tiny_model("gpt2", layers=2)
    got = codes(check_models([str(llama), str(gpt2)]).findings)
    assert got["architecture-differs"] == "error"
    assert got["tensor-names-differ"] == "error"
    wide = tiny_model("llama", layers=2, hidden_size=128, intermediate_size=256)
    got = codes(check_models([str(llama), str(wide)]).findings)
    assert got["hidden-size-differs"] == "error" and got["intermediate-size-differs"] == "error"
    assert got["tensor-shape-differs"] == "error"


def test_llama_and_mistral_share_tensors_so_only_a_warning(tiny_model) -> None:
    llama = tiny_model("llama", layers=2)
    mistral = tiny_model("mistral", layers=2)
    got = codes(check_models([str(llama), str(mistral)]).findings)
    assert got["architecture-differs"] == "warning"
    assert "tensor-names-differ" not in got and "tensor-shape-differs" not in got


def test_layer_counts_depend_on_the_config(tiny_model) -> None:
    a = tiny_model("llama", layers=4, seed=1)
    b = tiny_model("llama", layers=2, seed=2)
    pa, pb = profile_model(str(a)), profile_model(str(b))
    assert codes(find_issues([pa, pb]))["layer-count-differs"] == "warning"
    linear = parse_config(f"merge_method: linear\nmodels:\n  - model: {a}\n  - model: {b}\n")
    assert codes(find_issues([pa, pb], linear))["layer-count-differs"] == "error"
    slices = parse_config(
        "merge_method: passthrough\nslices:\n"
        f"  - sources: [{{model: {a}, layer_range: [0, 3]}}]\n"
        f"  - sources: [{{model: {b}, layer_range: [1, 2]}}]\n"
    )
    assert codes(find_issues([pa, pb], slices)) == {"layer-count-differs": "info"}


def test_layer_range_outside_and_unequal_slices(tiny_model, tmp_path: Path) -> None:
    a = tiny_model("llama", layers=4, seed=1)
    b = tiny_model("llama", layers=4, seed=2, base=a)
    cfg = tmp_path / "c.yml"
    cfg.write_text(
        "merge_method: slerp\nbase_model: " + str(a) + "\nparameters: {t: 0.5}\nslices:\n"
        f"  - sources: [{{model: {a}, layer_range: [0, 6]}}, {{model: {b}, layer_range: [0, 4]}}]\n"
    )
    from mergetui.engine.config import load_config

    report = check_config(load_config(cfg), config_path=cfg)
    got = codes(report.findings)
    assert got["layer-range-outside"] == "error" and got["slice-lengths-differ"] == "error"
    f = next(f for f in report.findings if f.code == "layer-range-outside")
    assert "[0, 6]" in f.message and "it has 4" in f.message and f.models == [str(a)]


def test_tied_dtype_rope_positions_template_and_quantized(tiny_model, tmp_path: Path) -> None:
    import torch

    base = tiny_model("llama", layers=2, seed=1)
    tied = tiny_model("llama", layers=2, seed=1, tie=True)
    bf16 = tiny_model("llama", layers=2, seed=1, dtype=torch.bfloat16)
    rope = edited(base, tmp_path / "rope", rope_parameters={"rope_theta": 1e6, "rope_type": "default"}, max_position_embeddings=32768)
    (rope / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ x }}", "eos_token": "</s>"}))
    quant = edited(base, tmp_path / "q", quantization_config={"quant_method": "awq"})
    got = codes(check_models([str(base), str(tied), str(bf16), str(rope), str(quant)]).findings)
    assert got["tied-embeddings-differ"] == "warning"
    assert got["dtype-differs"] == "info"
    assert got["rope-differs"] == "warning"
    assert got["max-positions-differ"] == "info"
    assert got["chat-template-differs"] == "info"
    assert got["quantized"] == "error"
    assert "tensor-names-differ" not in got  # the tied model's missing lm_head is the tying finding's


@pytest.mark.parametrize("method", ["passthrough"])
def test_passthrough_takes_embeddings_from_one_model(tiny_model, method: str) -> None:
    a = tiny_model("llama", layers=4, seed=1)
    b = tiny_model("llama", layers=4, seed=1, extra_tokens=2)
    pa, pb = profile_model(str(a)), profile_model(str(b))
    same_end = parse_config(
        f"merge_method: {method}\nslices:\n"
        f"  - sources: [{{model: {a}, layer_range: [0, 2]}}]\n"
        f"  - sources: [{{model: {b}, layer_range: [2, 3]}}]\n"
        f"  - sources: [{{model: {a}, layer_range: [3, 4]}}]\n"
    )
    assert codes(find_issues([pa, pb], same_end))["embedding-rows-differ"] == "info"
    mixed = parse_config(
        f"merge_method: {method}\nslices:\n"
        f"  - sources: [{{model: {a}, layer_range: [0, 2]}}]\n"
        f"  - sources: [{{model: {b}, layer_range: [2, 4]}}]\n"
    )
    assert codes(find_issues([pa, pb], mixed))["embedding-rows-differ"] == "error"
