"""`python -m mergetui.demo` (`make demo`): three tiny local models on the bench, no network.

demo/base-a and demo/tune-b are llama-shaped (hidden 64, 8 layers) and merge cleanly (tune-b
is base-a plus small noise); demo/extra-c has two added special tokens and so two extra
embedding rows, which Compare flags at once (u there fixes it: `tokenizer: {source: union}`).
Models are built once with transformers (seeded) and reused. A starting recipe is written to
demo/demo-merge.yml, and a two-expert MoE recipe to demo/demo-moe.yml (`mergetui edit` it).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

LAYERS = 8
VOCAB = 128
MODELS = {"base-a": dict(seed=1), "tune-b": dict(seed=2, base="base-a"), "extra-c": dict(seed=3, extra_tokens=2)}

DEMO_CONFIG = """\
# A demo recipe: average the two compatible models. Try Layout (3) for a frankenmerge,
# or put extra-c in and watch Compare (2) and Run's preflight catch the vocabulary mismatch.
merge_method: linear
models:
- model: demo/base-a
  parameters:
    weight: 0.5
- model: demo/tune-b
  parameters:
    weight: 0.5
dtype: float32
"""


DEMO_MOE_CONFIG = """\
# A demo Mixture of Experts (mergekit-moe YAML): open it with `mergetui edit demo/demo-moe.yml`,
# edit the experts' prompts in Recipe (4) and assemble it from Run (5).
base_model: demo/base-a
gate_mode: cheap_embed
experts_per_token: 2
dtype: float32
experts:
- source_model: demo/base-a
  positive_prompts: ["w1 w2 w3", "w4 w5"]
- source_model: demo/tune-b
  positive_prompts: ["w10 w11 w12"]
"""


def build_model(path: Path, seed: int, base: Path | None = None, extra_tokens: int = 0) -> None:
    """Save a seeded tiny llama (with a word-level tokenizer) at `path`."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    cfg = LlamaConfig(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2,
                      num_hidden_layers=LAYERS, vocab_size=VOCAB + extra_tokens, max_position_embeddings=256,
                      tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    if base is not None:  # a "fine-tune": the base's weights plus small noise
        from safetensors.torch import load_file

        sd = load_file(str(base / "model.safetensors"))
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, p in model.state_dict().items():
                if name in sd and sd[name].shape == p.shape:
                    p.copy_(sd[name] + 0.02 * torch.randn(p.shape, generator=g))
    model.save_pretrained(path, safe_serialization=True)
    write_tokenizer(path, extra_tokens)


def write_tokenizer(path: Path, extra_tokens: int = 0) -> None:
    """A word-level fast tokenizer of VOCAB tokens plus `extra_tokens` added special tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = ["<unk>", "<s>", "</s>"] + [f"w{i}" for i in range(VOCAB - 3)]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    if extra_tokens:
        tok.add_special_tokens([f"<|extra_{i}|>" for i in range(extra_tokens)])
    tok.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
        "model_max_length": 256}))


def build_demo(root: Path = Path("demo"), log=print) -> list[str]:
    """Build (or reuse) the three demo models and the demo config; returns their paths."""
    root.mkdir(parents=True, exist_ok=True)
    refs = []
    for name, spec in MODELS.items():
        path = root / name
        refs.append(str(path))
        if (path / "model.safetensors").exists() and (path / "tokenizer.json").exists():
            continue
        log(f"building {path} …")
        base = root / spec["base"] if "base" in spec else None
        build_model(path, spec["seed"], base, spec.get("extra_tokens", 0))
    for name, text in (("demo-merge.yml", DEMO_CONFIG), ("demo-moe.yml", DEMO_MOE_CONFIG)):
        if not (root / name).exists():
            (root / name).write_text(text)
    return refs


def main(argv: list[str] | None = None) -> int:
    """Build the demo models, then open the workbench on Compare with all three on the bench."""
    argv = sys.argv[1:] if argv is None else argv
    refs = build_demo()
    if "--build-only" in argv:
        return 0
    from mergetui.commands.workbench import open_workbench
    from mergetui.state import WorkbenchState

    # all three on the bench (Compare shows the mismatch); the recipe merges the two that fit
    state = WorkbenchState(bench=list(refs), out_dir="demo/merged")
    state.open_config("demo/demo-merge.yml")
    return open_workbench(state, mode="compare")


if __name__ == "__main__":
    raise SystemExit(main())
