"""One model's profile: the shape facts a merge depends on, computed from ModelFacts.

Config keys differ between families for the same quantity (hidden_size / n_embd / d_model),
so each quantity is read from a short list of aliases; vocabulary rows come from the tensor
shapes, which are the truth a merge has to live with.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

from mergetui.engine.architecture import config_layer_count, find_layers, is_embedding, is_lm_head
from mergetui.engine.errors import MergeError, ModelError
from mergetui.engine.sources import looks_like_repo_id, split_ref
from mergetui.inspect.facts import ModelFacts, TensorInfo, local_facts

HIDDEN_KEYS = ("hidden_size", "n_embd", "d_model", "dim")
INTERMEDIATE_KEYS = ("intermediate_size", "n_inner", "ffn_dim", "ffn_hidden_size")
HEAD_KEYS = ("num_attention_heads", "n_head", "num_heads", "n_heads")
KV_HEAD_KEYS = ("num_key_value_heads", "num_kv_heads", "n_head_kv", "multi_query_group_num")
POSITION_KEYS = ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length", "n_ctx")

# Whether input and output embeddings are tied when config.json does not say: the default of
# each family's transformers config class (checked against transformers 5). Unknown families
# fall back to the tensors: no lm_head tensor means tied.
TIE_DEFAULTS: dict[str, bool] = {
    "llama": False,
    "mistral": False,
    "mixtral": False,
    "qwen2": False,
    "qwen2_moe": False,
    "qwen3": False,
    "gemma": True,
    "gemma2": True,
    "gemma3_text": True,
    "phi3": False,
    "gpt2": True,
    "gpt_neox": False,
    "falcon": True,
    "stablelm": False,
}
# Tensor name endings that only quantized checkpoints have.
QUANT_SUFFIXES = (".qweight", ".qzeros", ".scales", ".g_idx", "weight_scale", "weight_scale_inv", ".absmax", "weight_packed", ".SCB")
QUANT_DTYPES = ("F8_E4M3", "F8_E5M2", "U16", "U32", "U64")


@dataclass
class Profile:
    """Everything `mergetui inspect` shows about one model."""

    ref: str
    kind: str  # local | hub
    repo_id: str | None
    revision: str | None
    commit: str | None
    architectures: list[str]
    model_type: str | None
    num_layers: int | None  # from the config
    tensor_layers: int | None  # counted from tensor names (None without headers)
    hidden_size: int | None
    intermediate_size: int | None
    num_heads: int | None
    num_kv_heads: int | None
    head_dim: int | None
    vocab_size: int | None  # from the config
    embed_rows: int | None  # from the embedding tensor's shape
    lm_head_rows: int | None
    embed_tensor: str | None
    lm_head_tensor: str | None
    tokenizer_length: int | None
    added_tokens: list[tuple[int, str, bool]]
    special_tokens: dict[str, str]
    tied_embeddings: bool | None
    tied_from: str  # config | family default | tensors | unknown
    dtypes: dict[str, int]  # dtype -> parameters
    parameters: int | None
    nbytes: int | None
    weight_format: str | None
    weight_files: dict[str, int | None]
    quantization: dict[str, Any] | None
    quantized: bool
    rope_theta: float | None
    rope_scaling: dict[str, Any] | None
    max_positions: int | None
    chat_template: bool
    chat_template_hash: str | None
    license: str | None
    gated: str | bool | None
    from_cache: bool = False
    layer_prefix: str | None = None
    tensors: dict[str, TensorInfo] = field(default_factory=dict, repr=False)

    @property
    def label(self) -> str:
        """Short name for tables and messages."""
        return self.ref

    @property
    def layers(self) -> int | None:
        """Layer count: the tensors' when known, else the config's."""
        return self.tensor_layers or self.num_layers

    def to_dict(self, *, tensors: bool = False) -> dict[str, Any]:
        """JSON-ready dict; tensors included only when asked."""
        d = asdict(self)
        d.pop("tensors")
        d["added_tokens"] = [{"id": i, "content": c, "special": s} for i, c, s in self.added_tokens]
        if tensors:
            d["tensors"] = {n: {"file": t.file, "dtype": t.dtype, "shape": list(t.shape)} for n, t in self.tensors.items()}
        return d


def profile_from_facts(facts: ModelFacts) -> Profile:
    """Compute a Profile from gathered facts."""
    cfg = facts.config
    text = _text_config(cfg)
    hidden = _first(text, HIDDEN_KEYS)
    heads = _first(text, HEAD_KEYS)
    kv = _first(text, KV_HEAD_KEYS)
    if text.get("multi_query") and not text.get("new_decoder_architecture"):
        kv = 1  # falcon-style multi-query attention: one shared key/value head
    head_dim = _first(text, ("head_dim",)) or (hidden // heads if hidden and heads else None)
    num_layers = config_layer_count(text)
    tensors = facts.tensors
    layer_map = find_layers(tensors, num_layers) if tensors else None
    vocab = _first(text, ("vocab_size", "padded_vocab_size"))
    embed = _vocab_tensor(tensors, is_embedding, vocab)
    head = _vocab_tensor(tensors, is_lm_head, vocab)
    tied, tied_from = _tied(cfg, text, facts.config.get("model_type"), tensors, head)
    dtypes: Counter[str] = Counter()
    for t in tensors.values():
        dtypes[t.dtype] += _numel(t.shape)
    if tensors:
        params: int | None = sum(dtypes.values())
        nbytes: int | None = sum(t.nbytes for t in tensors.values())
    else:
        params = sum(facts.hub_parameters.values()) if facts.hub_parameters else None
        sizes = [facts.files.get(f) for f in facts.weight_files]
        nbytes = sum(s for s in sizes if s) if sizes and all(s is not None for s in sizes) else None
    qc = cfg.get("quantization_config") or text.get("quantization_config")
    quantized = bool(qc) or any(d in QUANT_DTYPES for d in dtypes) or any(n.endswith(QUANT_SUFFIXES) for n in tensors)
    theta, scaling = _rope(text)
    tok = facts.tokenizer
    template = tok.chat_template if tok else None
    return Profile(
        ref=facts.ref,
        kind=facts.kind,
        repo_id=facts.repo_id,
        revision=facts.revision,
        commit=facts.commit,
        architectures=list(cfg.get("architectures") or []),
        model_type=cfg.get("model_type"),
        num_layers=num_layers,
        tensor_layers=layer_map.num_layers if layer_map and layer_map.prefix else None,
        hidden_size=hidden,
        intermediate_size=_first(text, INTERMEDIATE_KEYS),
        num_heads=heads,
        num_kv_heads=kv or heads,
        head_dim=head_dim,
        vocab_size=vocab,
        embed_rows=tensors[embed].shape[0] if embed else None,
        lm_head_rows=tensors[head].shape[0] if head else None,
        embed_tensor=embed,
        lm_head_tensor=head,
        tokenizer_length=tok.length if tok else None,
        added_tokens=list(tok.added) if tok else [],
        special_tokens=dict(tok.special) if tok else {},
        tied_embeddings=tied,
        tied_from=tied_from,
        dtypes=dict(dtypes) or dict(facts.hub_parameters or {}),
        parameters=params,
        nbytes=nbytes,
        weight_format=facts.weight_format,
        weight_files={f: facts.files.get(f) for f in facts.weight_files},
        quantization=qc if isinstance(qc, dict) else None,
        quantized=quantized,
        rope_theta=theta,
        rope_scaling=scaling,
        max_positions=_first(text, POSITION_KEYS),
        chat_template=template is not None,
        chat_template_hash=hashlib.sha1(template.encode()).hexdigest()[:12] if template else None,
        license=facts.license,
        gated=facts.gated,
        from_cache=facts.from_cache,
        layer_prefix=layer_map.prefix if layer_map else None,
        tensors=dict(tensors),
    )


def _text_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The config holding the language model's sizes (multimodal configs nest it in text_config)."""
    inner = cfg.get("text_config")
    if isinstance(inner, dict) and not any(k in cfg for k in HIDDEN_KEYS):
        return {**cfg, **inner}
    return dict(cfg)


def _first(cfg: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
    for k in keys:
        v = cfg.get(k)
        if v is not None:
            return v
    return None


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _vocab_tensor(tensors: Mapping[str, TensorInfo], pred: Any, vocab: int | None) -> str | None:
    """The tensor with one row per token: a 2-D match, preferring one with vocab_size rows."""
    found = [n for n, t in tensors.items() if pred(n) and len(t.shape) == 2]
    if not found:
        return None
    exact = [n for n in found if tensors[n].shape[0] == vocab]
    return sorted(exact or found, key=lambda n: (n.count("."), n))[0]


def _tied(cfg: Mapping[str, Any], text: Mapping[str, Any], model_type: str | None, tensors: Mapping[str, TensorInfo], head: str | None) -> tuple[bool | None, str]:
    for c in (cfg, text):
        if isinstance(c.get("tie_word_embeddings"), bool):
            return c["tie_word_embeddings"], "config"
    if model_type in TIE_DEFAULTS:
        return TIE_DEFAULTS[model_type], "family default"
    if tensors:
        return head is None, "tensors"
    return None, "unknown"


def _rope(cfg: Mapping[str, Any]) -> tuple[float | None, dict[str, Any] | None]:
    """(theta, scaling) from rope_theta / rope_scaling or transformers 5's rope_parameters."""
    params = cfg.get("rope_parameters") if isinstance(cfg.get("rope_parameters"), dict) else {}
    theta = cfg.get("rope_theta") or params.get("rope_theta") or cfg.get("rotary_emb_base")
    scaling = cfg.get("rope_scaling") if isinstance(cfg.get("rope_scaling"), dict) else None
    if scaling is None and params:
        rest = {k: v for k, v in params.items() if k not in ("rope_theta", "partial_rotary_factor")}
        if rest.get("rope_type", rest.get("type")) not in (None, "default"):
            scaling = rest
    if scaling is not None and scaling.get("rope_type", scaling.get("type")) in (None, "default") and len(scaling) <= 1:
        scaling = None
    return (float(theta) if isinstance(theta, (int, float)) else None), scaling


# -- entry points -------------------------------------------------------------------------------


def gather_facts(ref: str, *, refresh: bool = False) -> ModelFacts:
    """Facts of a model reference: an existing directory, else a Hub repo id."""
    name, _ = split_ref(ref)
    p = Path(os.path.expanduser(name))
    if p.exists():
        if not p.is_dir():
            raise ModelError(f"model {ref}: {p} is a file, not a model directory", fix="point at the directory holding config.json")
        return local_facts(ref, p.resolve())
    if looks_like_repo_id(ref):
        from mergetui.inspect.hub import hub_facts

        return hub_facts(ref, refresh=refresh)
    raise ModelError(f"model {ref}: no such directory, and not a Hub repo id (org/name)", fix="check the path or the repo id")


def profile_model(ref: str, *, refresh: bool = False) -> Profile:
    """The profile of one model (local directory or Hub repo `org/name[@revision]`)."""
    return profile_from_facts(gather_facts(ref, refresh=refresh))


def profile_models(refs: list[str], *, refresh: bool = False) -> list[Profile]:
    """Profiles of several models, read in parallel.

    If some cannot be read, one ModelError names them all (so a typo and a gated repo show up
    in one run); any other exception propagates as is.
    """
    refs = list(dict.fromkeys(refs))
    if len(refs) <= 1:
        return [profile_model(r, refresh=refresh) for r in refs]
    with ThreadPoolExecutor(min(8, len(refs))) as ex:
        futures = [ex.submit(profile_model, r, refresh=refresh) for r in refs]
        wait(futures)
    failed = [f.exception() for f in futures if f.exception() is not None]
    errors = [e for e in failed if isinstance(e, MergeError)]
    if len(errors) != len(failed):
        raise next(e for e in failed if not isinstance(e, MergeError))
    if len(errors) == 1:
        raise errors[0]
    if errors:
        fixes = list(dict.fromkeys(e.fix for e in errors if e.fix))
        raise ModelError("\n".join(e.message for e in errors), fix="; ".join(fixes) or None)
    return [f.result() for f in futures]
