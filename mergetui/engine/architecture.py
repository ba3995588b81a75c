"""Where the layers are, found from tensor names alone: no per-architecture tables.

A decoder's repeated blocks are tensors named `<prefix>.<N>.<rest>` for N in 0..L-1 under one
prefix (model.layers, transformer.h, gpt_neox.layers, ...). The other tensors are "pre" when
they feed the first layer (token and position embeddings) and "post" otherwise (final norm,
lm_head). File order cannot tell: safetensors headers are sorted by name.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

_LAYER_RE = re.compile(r"^(?P<prefix>.+?)\.(?P<idx>\d+)\.(?P<rest>.+)$")

# Config keys that hold the number of decoder layers, by family convention.
LAYER_COUNT_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")

_EMBED_HINTS = ("embed_tokens", "wte", "embed_in", "word_embeddings", "tok_embeddings", "embeddings.word")
_PRE_HINTS = _EMBED_HINTS + ("wpe", "embed_positions", "position_embeddings", "embed_layer_norm", "word_embeddings_layernorm")
_HEAD_HINTS = ("lm_head", "embed_out", "output.weight")


@dataclass
class LayerMap:
    """The layer structure of one model, derived from its tensor names."""

    prefix: str | None
    num_layers: int
    pre: list[str] = field(default_factory=list)
    post: list[str] = field(default_factory=list)
    # per layer: the tensor suffixes (`self_attn.q_proj.weight`, ...) in file order
    layer_suffixes: list[list[str]] = field(default_factory=list)

    def layer_tensor(self, layer: int, suffix: str) -> str:
        """Full name of tensor `suffix` in layer `layer`."""
        return f"{self.prefix}.{layer}.{suffix}"


def layer_count_key(config: Mapping[str, Any]) -> str | None:
    """The key under which this config stores its layer count (text_config aside)."""
    for key in LAYER_COUNT_KEYS:
        if key in config:
            return key
    return None


def config_layer_count(config: Mapping[str, Any]) -> int | None:
    """The layer count the model config declares, if any."""
    key = layer_count_key(config)
    return int(config[key]) if key else None


def find_layers(names: Iterable[str], num_layers: int | None = None) -> LayerMap:
    """Split tensor names into pre / layers / post.

    The layer prefix is the one whose indices form the longest run 0..L-1 (matching the
    config's layer count when it is given), so `model.layers.3.mlp` beats
    `model.vision.blocks.0` or numbered experts inside a layer.
    """
    names = list(names)
    indices: dict[str, set[int]] = {}
    for n in names:
        m = _LAYER_RE.match(n)
        if m:
            indices.setdefault(m["prefix"], set()).add(int(m["idx"]))
    best: str | None = None
    best_count = 0
    for prefix, idx in indices.items():
        count = len(idx)
        if idx != set(range(count)):
            continue
        # a nested prefix (model.layers.0.mlp.experts) also matches; prefer the shortest
        # prefix whose count equals the config's, else the largest count
        score = (count == num_layers, count, -len(prefix))
        if best is None or score > (best_count == num_layers, best_count, -len(best)):
            best, best_count = prefix, count
    if best is None:
        return LayerMap(prefix=None, num_layers=0, pre=names, post=[], layer_suffixes=[])
    suffixes: list[list[str]] = [[] for _ in range(best_count)]
    pre: list[str] = []
    post: list[str] = []
    plen = len(best) + 1
    for n in names:
        if n.startswith(best + "."):
            rest = n[plen:]
            idx_s, _, suffix = rest.partition(".")
            if idx_s.isdigit() and suffix:
                suffixes[int(idx_s)].append(suffix)
                continue
        (pre if _is_input_side(n) else post).append(n)
    return LayerMap(prefix=best, num_layers=best_count, pre=pre, post=post, layer_suffixes=suffixes)


def _is_input_side(name: str) -> bool:
    return any(h in name for h in _PRE_HINTS) and not any(h in name for h in _HEAD_HINTS)


def _is_embedding(name: str) -> bool:
    return any(h in name for h in _EMBED_HINTS)


def is_embedding(name: str) -> bool:
    """Whether `name` is an input-embedding matrix (rows indexed by token id)."""
    return _is_embedding(name) and not is_lm_head(name) and name.endswith("weight")


def is_lm_head(name: str) -> bool:
    """Whether `name` is the output projection onto the vocabulary."""
    return any(h in name for h in _HEAD_HINTS) and name.endswith("weight")


def is_vocab_tensor(name: str) -> bool:
    """Whether `name` has one row per token (embedding or lm_head)."""
    return is_embedding(name) or is_lm_head(name)


def most_common_suffixes(layer_suffixes: list[list[str]]) -> list[str]:
    """Suffixes present in most layers, in first-seen order (for summaries)."""
    c = Counter(s for layer in layer_suffixes for s in layer)
    half = len(layer_suffixes) / 2
    seen: dict[str, None] = {}
    for layer in layer_suffixes:
        for s in layer:
            if c[s] >= half:
                seen.setdefault(s)
    return list(seen)
