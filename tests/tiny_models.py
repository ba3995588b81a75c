"""Tiny random models of several families, built with transformers for the tests.

Every model has hidden size 64 and a few layers, is saved as safetensors (or .bin), and
comes with a small word-level tokenizer so tokenizer files can be copied and compared.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

VOCAB = 128

FAMILIES: dict[str, tuple[str, dict[str, Any]]] = {
    "llama": ("LlamaConfig", dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2)),
    "mistral": ("MistralConfig", dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2)),
    "qwen2": ("Qwen2Config", dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2)),
    "gemma": ("GemmaConfig", dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=1, head_dim=16)),
    "phi3": ("Phi3Config", dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=4, pad_token_id=0)),
    "gpt2": ("GPT2Config", dict(n_embd=64, n_head=4, n_positions=128)),
    "gpt_neox": ("GPTNeoXConfig", dict(hidden_size=64, intermediate_size=128, num_attention_heads=4)),
    "falcon": ("FalconConfig", dict(hidden_size=64, num_attention_heads=4, new_decoder_architecture=False, multi_query=True)),
    "stablelm": ("StableLmConfig", dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=4)),
}

_LAYER_KEY = {"gpt2": "n_layer"}


def make_config(family: str, layers: int = 4, vocab: int = VOCAB, tie: bool | None = None, **overrides: Any):
    """A transformers config of `family` with tiny sizes."""
    import transformers

    cls_name, kw = FAMILIES[family]
    kw = dict(kw)
    kw[_LAYER_KEY.get(family, "num_hidden_layers")] = layers
    kw["vocab_size"] = vocab
    if tie is not None:
        kw["tie_word_embeddings"] = tie
    kw.update(overrides)
    return getattr(transformers, cls_name)(**kw)


def make_model(
    path: Path,
    family: str = "llama",
    layers: int = 4,
    seed: int = 0,
    vocab: int = VOCAB,
    tie: bool | None = None,
    dtype: torch.dtype = torch.float32,
    safe_serialization: bool = True,
    max_shard_size: str | None = None,
    base: Path | None = None,
    noise: float = 0.02,
    extra_tokens: int = 0,
    **overrides: Any,
) -> Path:
    """Save a tiny random model at `path` and return it.

    With `base`, the weights are the base model's plus N(0, noise) (a "fine-tune"), so
    task-vector methods see realistic small deltas.
    """
    from transformers import AutoModelForCausalLM

    cfg = make_config(family, layers=layers, vocab=vocab + extra_tokens, tie=tie, **overrides)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    if base is not None:
        from safetensors.torch import load_file

        sd = {}
        for f in sorted(Path(base).glob("*.safetensors")):
            sd.update(load_file(f))
        g = torch.Generator().manual_seed(seed + 1000)
        with torch.no_grad():
            for name, p in model.state_dict().items():
                if name in sd and sd[name].shape == p.shape:
                    p.copy_(sd[name].float() + noise * torch.randn(p.shape, generator=g))
    model = model.to(dtype)
    kwargs: dict[str, Any] = {}
    if max_shard_size:
        kwargs["max_shard_size"] = max_shard_size
    model.save_pretrained(path, **kwargs)
    if not safe_serialization:  # transformers 5 always writes safetensors: convert to .bin
        from safetensors.torch import load_file

        sd: dict[str, torch.Tensor] = {}
        for f in sorted(path.glob("*.safetensors")):
            sd.update(load_file(f))
            f.unlink()
        (path / "model.safetensors.index.json").unlink(missing_ok=True)
        torch.save(sd, path / "pytorch_model.bin")
    write_tokenizer(path, vocab=vocab, extra_tokens=extra_tokens)
    return path


def write_tokenizer(path: Path, vocab: int = VOCAB, extra_tokens: int = 0) -> None:
    """A word-level fast tokenizer with `vocab` tokens plus `extra_tokens` added tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = ["<unk>", "<s>", "</s>"] + [f"w{i}" for i in range(vocab - 3)]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    added = [f"<extra_{i}>" for i in range(extra_tokens)]
    if added:
        tok.add_special_tokens(added)
    path.mkdir(parents=True, exist_ok=True)
    tok.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": "<s>",
                "eos_token": "</s>",
                "unk_token": "<unk>",
                "model_max_length": 128,
            }
        )
    )
    (path / "special_tokens_map.json").write_text(json.dumps({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}))
