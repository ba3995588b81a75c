"""Profiles of local models: config aliases, tensor-derived rows, tokenizer, tying."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mergetui.engine.errors import ModelError
from mergetui.inspect.profile import TIE_DEFAULTS, profile_model
from mergetui.inspect.tokenizer import count_sentencepiece_pieces, read_tokenizer
from tiny_models import FAMILIES, make_config


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_profile_of_every_family(tiny_model, family: str) -> None:
    path = tiny_model(family, layers=3, seed=1)
    p = profile_model(str(path))
    assert p.kind == "local" and p.model_type == make_config(family).model_type
    assert p.layers == 3 and p.num_layers == 3 and p.tensor_layers == 3
    assert p.hidden_size == 64 and p.num_heads == 4
    assert p.embed_rows == 128 and p.vocab_size == 128 and p.tokenizer_length == 128
    assert p.weight_format == "safetensors" and p.dtypes == {"F32": p.parameters}
    assert p.nbytes == 4 * p.parameters
    assert p.tied_embeddings == make_config(family).tie_word_embeddings
    assert (p.lm_head_rows is None) == p.tied_embeddings
    assert p.max_positions and p.head_dim


def test_tie_defaults_match_transformers() -> None:
    import transformers

    for family, (cls_name, _) in FAMILIES.items():
        cfg = getattr(transformers, cls_name)()
        assert TIE_DEFAULTS[cfg.model_type] == cfg.tie_word_embeddings, family


def test_tied_from_family_default_when_config_is_silent(tiny_model, tmp_path: Path) -> None:
    import shutil

    path = tmp_path / "gemma"
    shutil.copytree(tiny_model("gemma", layers=2), path)
    cfg = json.loads((path / "config.json").read_text())
    cfg.pop("tie_word_embeddings", None)
    (path / "config.json").write_text(json.dumps(cfg))
    p = profile_model(str(path))
    assert p.tied_embeddings is True and p.tied_from == "family default"


def test_added_tokens_and_special_tokens(tiny_model) -> None:
    p = profile_model(str(tiny_model("llama", layers=2, extra_tokens=3)))
    assert p.embed_rows == 131 and p.tokenizer_length == 131
    assert [c for _, c, _ in p.added_tokens] == ["<extra_0>", "<extra_1>", "<extra_2>"]
    assert p.special_tokens["eos_token"] == "</s>"
    d = p.to_dict()
    assert d["added_tokens"][0] == {"id": 128, "content": "<extra_0>", "special": True}
    assert "tensors" not in d and len(p.to_dict(tensors=True)["tensors"]) == len(p.tensors)


def test_chat_template_rope_and_quantization_from_config(tiny_model, tmp_path: Path) -> None:
    import shutil

    path = tmp_path / "m"
    shutil.copytree(tiny_model("llama", layers=2), path)
    cfg = json.loads((path / "config.json").read_text())
    cfg["rope_parameters"] = {"rope_theta": 500000.0, "rope_type": "llama3", "factor": 8.0}
    cfg["quantization_config"] = {"quant_method": "gptq", "bits": 4}
    (path / "config.json").write_text(json.dumps(cfg))
    (path / "chat_template.jinja").write_text("{{ messages }}")
    p = profile_model(str(path))
    assert p.rope_theta == 500000.0 and p.rope_scaling == {"rope_type": "llama3", "factor": 8.0}
    assert p.quantized and p.quantization["quant_method"] == "gptq"
    assert p.chat_template and p.chat_template_hash


def test_tokenizer_fallbacks(tmp_path: Path) -> None:
    (tmp_path / "vocab.json").write_text(json.dumps({f"t{i}": i for i in range(10)}))
    (tmp_path / "added_tokens.json").write_text(json.dumps({"<new>": 10, "t3": 3}))
    tok = read_tokenizer({"vocab.json": tmp_path / "vocab.json", "added_tokens.json": tmp_path / "added_tokens.json"})
    assert tok.length == 11 and [c for _, c, _ in tok.added] == ["<new>"]
    # a sentencepiece model: field 1 (pieces) three times, then a trainer spec (field 2)
    piece = b"\x0a\x03\x0a\x01a"
    (tmp_path / "tokenizer.model").write_bytes(piece * 3 + b"\x12\x02\x08\x01")
    assert count_sentencepiece_pieces(tmp_path / "tokenizer.model") == 3


def test_bad_references_are_model_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not a Hub repo id"):
        profile_model(str(tmp_path / "missing" / "deeper" / "x"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="no config.json"):
        profile_model(str(tmp_path / "empty"))
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ModelError, match="is a file"):
        profile_model(str(tmp_path / "file.txt"))


def test_truncated_header_is_a_model_error(tiny_model, tmp_path: Path) -> None:
    import shutil

    path = tmp_path / "broken"
    shutil.copytree(tiny_model("llama", layers=2), path)
    st = path / "model.safetensors"
    st.write_bytes(st.read_bytes()[:1000])
    with pytest.raises(ModelError, match="model.safetensors"):
        profile_model(str(path))
