"""Router rows: one vector per expert per layer, scored against the hidden state by the gate.

- hidden: the base model's hidden state entering each layer at the last token of each
  prompt, averaged over the prompts, minus the same for the negative prompts, L2-normalised.
- cheap_embed: the prompts' token embeddings summed and normalised (minus the negatives'),
  the same row in every layer; reads only the embedding matrix.
- random / uniform_random: N(0, 1), or U(-1/sqrt(h), 1/sqrt(h)) like nn.Linear's
  initialisation; seeded, so the same seed gives the same model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from mergetui.engine.architecture import is_embedding
from mergetui.engine.errors import ConfigError, ModelError
from mergetui.engine.moe.config import Expert
from mergetui.engine.sources import ModelSource
from mergetui.engine.tensor_io import read_tensor

PROMPT_BATCH = 8  # prompts per forward pass: bounds activation memory on long prompts


def gate_vectors(
    mode: str,
    experts: Sequence[Expert],
    base: ModelSource,
    num_layers: int,
    hidden_size: int,
    *,
    device: torch.device = torch.device("cpu"),
    seed: int = 0,
    labels: Sequence[str] | None = None,
) -> torch.Tensor:
    """Router rows for `experts`, float32 of shape (layers, experts, hidden)."""
    shape = (num_layers, len(experts), hidden_size)
    if mode == "random":
        return torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    if mode == "uniform_random":
        bound = hidden_size ** -0.5
        return (torch.rand(shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1) * bound
    if mode not in ("hidden", "cheap_embed"):  # the config schema admits no other mode
        raise ConfigError(f"gate_mode {mode!r} is not supported", fix="use hidden, cheap_embed or random")
    root = base.fetch(None if mode == "hidden" else set())
    tokenizer = _tokenizer(root, base.label)
    # tokenize everything first: a bad prompt fails before the base model is loaded
    prompts = []
    for i, e in enumerate(experts):
        label = labels[i] if labels else f"expert {i} ({e.source_model})"
        neg = _token_ids(tokenizer, list(e.negative_prompts), label) if e.negative_prompts else None
        prompts.append((_token_ids(tokenizer, list(e.positive_prompts or []), label), neg))
    if mode == "cheap_embed":
        embed = _embedding(base)
        encode: Callable[[list[list[int]]], torch.Tensor] = lambda ids: _cheap_embed(embed, ids, num_layers)
    else:
        model = _load_body(root, base.label, device)
        encode = lambda ids: _hidden_last(model, ids, num_layers, device)
    rows = []
    for pos, neg in prompts:
        vec = encode(pos)
        if neg:
            vec = vec - encode(neg)
        rows.append(_normalise(vec))
    return torch.stack(rows, dim=1)


def _normalise(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp(min=1e-8)


def _tokenizer(root: Path, label: str) -> Any:
    fix = "the prompt-based gate modes tokenize the prompts with the base's tokenizer; or use gate_mode: random"
    if not any((root / f).exists() for f in ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")):
        raise ModelError(f"base model {label}: no tokenizer files in {root}", fix=fix)
    from transformers import AutoTokenizer  # transformers only for prompt-based gates

    try:
        return AutoTokenizer.from_pretrained(str(root))
    except Exception as e:  # tokenizers fail in many ways: missing files, bad JSON, unknown class
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ModelError(f"base model {label}: cannot load its tokenizer ({type(e).__name__}: {first})", fix=fix) from None


def _token_ids(tokenizer: Any, prompts: list[str], label: str) -> list[list[int]]:
    """Each prompt's ids, led by BOS when the tokenizer has one (as the model saw text in training)."""
    bos = tokenizer.bos_token_id
    out = []
    for p in prompts:
        ids = list(tokenizer(p, add_special_tokens=False)["input_ids"])
        if not ids:  # the row would say nothing about the prompt (only BOS, or nothing at all)
            raise ConfigError(f"{label}: prompt {p!r} gives no tokens with the base model's tokenizer",
                              fix="give prompts with some text, and check that the base's tokenizer files are right")
        out.append(([bos] if bos is not None else []) + ids)
    return out


def _embedding(base: ModelSource) -> torch.Tensor:
    metas = base.tensors()
    names = [n for n in metas if is_embedding(n)]
    if not names:
        raise ModelError(f"base model {base.label}: no token embedding tensor found", fix="use gate_mode: hidden or random")
    base.fetch({metas[names[0]].file})
    return read_tensor(base.local_entries()[names[0]]).float()


def _cheap_embed(embed: torch.Tensor, ids: list[list[int]], num_layers: int) -> torch.Tensor:
    flat = torch.tensor([i for seq in ids for i in seq])
    if int(flat.max()) >= embed.shape[0]:
        raise ModelError(f"token id {int(flat.max())} is outside the base's embedding ({embed.shape[0]} rows)",
                         fix="the base's tokenizer and weights disagree; check the base model")
    v = _normalise(embed[flat].sum(dim=0))
    return v.expand(num_layers, -1).clone()


def _load_body(root: Path, label: str, device: torch.device) -> Any:
    """The base's decoder without its head, in its stored dtype, for hidden states."""
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    # the load report (the head we leave out is "unexpected") and progress bars are noise here
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        model = AutoModel.from_pretrained(str(root), dtype="auto")
    except Exception as e:  # loading raises many types (OSError, ValueError, RuntimeError)
        raise ModelError(f"base model {label}: transformers cannot load it for gate_mode hidden ({type(e).__name__}: {e})",
                         fix="check the base model's files, or use gate_mode: cheap_embed or random") from None
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    return model.to(device).eval()


def _decoder_layers(model: Any, num_layers: int) -> Any:
    layers = getattr(model, "layers", None)
    if layers is None or len(layers) != num_layers:
        raise ModelError(f"cannot find the {num_layers} decoder layers of the base model", fix="use gate_mode: cheap_embed or random")
    return layers


def _hidden_last(model: Any, ids: list[list[int]], num_layers: int, device: torch.device) -> torch.Tensor:
    """Mean over prompts of the hidden state entering each layer at the prompt's last token: (layers, hidden)."""
    layers = _decoder_layers(model, num_layers)
    total: torch.Tensor | None = None
    for start in range(0, len(ids), PROMPT_BATCH):
        batch = ids[start:start + PROMPT_BATCH]
        longest = max(len(s) for s in batch)
        # right padding: causal attention keeps real tokens from seeing the pads, and positions stay 0..n-1
        input_ids = torch.zeros((len(batch), longest), dtype=torch.long)
        mask = torch.zeros_like(input_ids)
        for r, seq in enumerate(batch):
            input_ids[r, : len(seq)] = torch.tensor(seq)
            mask[r, : len(seq)] = 1
        last = torch.tensor([len(s) - 1 for s in batch])
        captured: list[torch.Tensor] = [torch.empty(0)] * num_layers

        def hook(i: int) -> Callable:
            def pre(module: Any, args: tuple, kwargs: dict) -> None:
                h = args[0] if args else kwargs["hidden_states"]
                captured[i] = h.detach().float().cpu()[torch.arange(len(batch)), last]
            return pre

        handles = [layer.register_forward_pre_hook(hook(i), with_kwargs=True) for i, layer in enumerate(layers)]
        try:
            with torch.no_grad():
                model(input_ids=input_ids.to(device), attention_mask=mask.to(device), use_cache=False)
        finally:
            for h in handles:
                h.remove()
        part = torch.stack(captured).sum(dim=1)  # (layers, hidden), summed over this batch's prompts
        total = part if total is None else total + part
    assert total is not None
    return total / len(ids)
