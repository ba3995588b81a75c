"""Compatibility findings for a set of model profiles, optionally read against a merge config.

Every finding has a stable code (tests, JSON consumers and the workbench key on it), a
severity (error: the merge fails or produces a broken model; warning: it runs but the result
may not be what you want; info: worth knowing), the models and tensors involved, a plain
explanation and a concrete fix.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable

from mergetui.inspect.profile import Profile

if TYPE_CHECKING:
    from mergetui.engine.config import MergeConfig  # pydantic: imported only when a config is checked

ERROR, WARNING, INFO = "error", "warning", "info"
SEVERITY_ORDER = {ERROR: 0, WARNING: 1, INFO: 2}
# Methods that copy tensors rather than combining them.
COPY_METHODS = {"passthrough"}
# Non-weight buffers some checkpoints carry; never worth a finding.
IGNORED_SUFFIXES = ("rotary_emb.inv_freq", ".attn.bias", ".attn.masked_bias", "position_ids")
MAX_LISTED = 5


@dataclass
class Finding:
    """One thing to know before merging."""

    code: str
    severity: str
    message: str  # one line: what is the case
    explanation: str  # why it matters
    fix: str | None = None
    models: list[str] = field(default_factory=list)
    tensors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


@dataclass
class MergeContext:
    """What a config says that changes how serious a difference is."""

    method: str | None = None
    slices: bool = False
    tokenizer_source: str | None = None
    base: str | None = None
    embed_from: list[str] = field(default_factory=list)  # models whose embeddings reach the output
    head_from: list[str] = field(default_factory=list)  # models whose lm_head reaches the output

    @property
    def combines(self) -> bool | None:
        """Whether tensors of several models are combined (None: unknown, no config)."""
        return None if self.method is None else self.method not in COPY_METHODS

    @classmethod
    def from_config(cls, config: MergeConfig) -> "MergeContext":
        """The context of a parsed merge config."""
        ctx = cls(method=config.merge_method, slices=bool(config.slices), tokenizer_source=config.tokenizer_choice(), base=config.base_model)
        if config.slices:
            first, last = config.slices[0], config.slices[-1]
            ctx.embed_from = list(dict.fromkeys(s.model for s in first.sources))
            ctx.head_from = list(dict.fromkeys(s.model for s in last.sources))
        else:
            ctx.embed_from = ctx.head_from = config.referenced_models()
        return ctx


Rule = Callable[[list[Profile], MergeContext], Iterable[Finding]]


def find_issues(profiles: list[Profile], config: MergeConfig | None = None) -> list[Finding]:
    """All findings for `profiles` (and `config`, when given), most severe first."""
    ctx = MergeContext.from_config(config) if config else MergeContext()
    out: list[Finding] = []
    for rule in RULES:
        out.extend(rule(profiles, ctx))
    if config is not None:
        out.extend(config_findings(config, {p.ref: p for p in profiles}))
    out.sort(key=lambda f: SEVERITY_ORDER[f.severity])
    return out


# -- helpers -------------------------------------------------------------------------------------


def _groups(profiles: list[Profile], key: Callable[[Profile], Any]) -> dict[Any, list[Profile]]:
    """Profiles grouped by a known (non-None) value of `key`."""
    g: dict[Any, list[Profile]] = defaultdict(list)
    for p in profiles:
        v = key(p)
        if v is not None:
            g[_hashable(v)].append(p)
    return g


def _hashable(v: Any) -> Any:
    if isinstance(v, dict):
        return tuple(sorted((k, _hashable(x)) for k, x in v.items()))
    if isinstance(v, list):
        return tuple(_hashable(x) for x in v)
    return v


def _describe(groups: dict[Any, list[Profile]], fmt: Callable[[Any], str] = str) -> str:
    return "; ".join(f"{', '.join(p.label for p in ps)}: {fmt(v)}" for v, ps in groups.items())


def _refs(ps: Iterable[Profile]) -> list[str]:
    return [p.ref for p in ps]


def _listing(items: list[str], n: int = MAX_LISTED) -> str:
    shown = ", ".join(items[:n])
    return shown + (f" and {len(items) - n} more" if len(items) > n else "")


def _normalized(p: Profile) -> dict[str, str]:
    """Tensor name -> name with the layer index replaced by '*' (first layer's shape wins)."""
    out: dict[str, str] = {}
    prefix = p.layer_prefix
    pat = re.compile(rf"^{re.escape(prefix)}\.\d+\.") if prefix else None
    for n in p.tensors:
        if n.endswith(IGNORED_SUFFIXES):
            continue
        out[n] = pat.sub(f"{prefix}.*.", n) if pat else n
    return out


def _vocab_tensor_names(p: Profile) -> set[str]:
    return {n for n in (p.embed_tensor, p.lm_head_tensor) if n}


# -- rules: the models themselves -------------------------------------------------------------------


def rule_no_weights(profiles: list[Profile], ctx: MergeContext) -> Iterable[Finding]:
    for p in profiles:
        if p.weight_format is None:
            yield Finding(
                "no-weights",
                ERROR,
                f"{p.label} has no weight files (*.safetensors or *.bin)",
                "A merge needs the weights; this repo may hold an adapter, GGUF files or only a config.",
                "use a full transformers checkpoint (for a LoRA adapter, merge it into its base model first)",
                [p.ref],
            )


def rule_quantized(profiles: list[Profile], ctx: MergeContext) -> Iterable[Finding]:
    for p in profiles:
        if p.quantized:
            method = (p.quantization or {}).get("quant_method") or "quantized"
            yield Finding(
                "quantized",
                ERROR,
                f"{p.label} is {method} quantized",
                "Quantized weights (packed integers with scales) cannot be averaged or interpolated; merges need fp16, bf16 or fp32 weights.",
                "use the original unquantized model (usually the repo the quantization was made from)",
                [p.ref],
            )


def rule_bin_weights(profiles: list[Profile], ctx: MergeContext) -> Iterable[Finding]:
    for p in profiles:
        if p.weight_format == "bin":
            yield Finding(
                "bin-weights",
                WARNING,
                f"{p.label} has only .bin (PyTorch pickle) weights",
                "Tensor shapes of .bin files cannot be read without downloading them, so this check could not compare them; "
                "the merge loads them with torch.load (slower, and pickles can run code).",
                "prefer a safetensors copy of the model (look for a 'safetensors' revision such as refs/pr/N, or convert it once)",
                [p.ref],
            )


def rule_architecture(profiles: list[Profile], ctx: MergeContext) -> Iterable[Finding]:
    archs = _groups(profiles, lambda p: tuple(p.architectures) or None)
    types = _groups(profiles, lambda p: p.model_type)
    if len(archs) <= 1 and len(types) <= 1:
        return
    same_names = len({frozenset(_normalized(p).values()) for p in profiles if p.tensors}) <= 1
    severity = WARNING if same_names else ERROR
    detail = _describe(archs, lambda v: "/".join(v)) if len(archs) > 1 else _describe(types)
    yield Finding(
        "architecture-differs",
        severity,
        f"architectures differ ({detail})",
        "The output gets one config.json (the base model's, or the first model's). "
        + (
            "The tensor names match, so the merge can run, but check that the families really are compatible (e.g. Llama and Mistral are)."
            if same_names
            else "The tensor layouts differ too, so these models cannot be merged tensor by tensor."
        ),
        "merge models of one architecture" if not same_names else "set base_model to the model whose config the output should keep",
        _refs(profiles),
    )


def _size_rule(code: str, attr: str, what: str) -> Rule:
    def rule(profiles: list[Profile], ctx: MergeContext) -> Iterable[Finding]:
        g = _groups(profiles, lambda p: getattr(p, attr))
        if len(g) > 1:
            yield Finding(
                code,
                ERROR,
                f"{what} differs ({_describe(g)})",
                f"Every weight matrix is shaped by the {what}; models that differ in it cannot be merged, not even by stacking layers.",
                "pick models fine-tuned from the same base model (same family and size)",
                _refs(profiles),
            )

    rule.__name__ = f"rule_{attr}"
    return rule


def rule_layers(profiles: list[Profile], ctx: MergeContext) -> Iterable[Finding]:
    g = _groups(profiles, lambda p: p.layers)
    if len(g) <= 1:
        return
    if ctx.slices:
        severity, why = INFO, "Fine for a slices (frankenmerge) config: each slice names its layer range."
    elif ctx.method is None:
        severity, why = WARNING, "Fine for slices (frankenmerges); an error for whole-model methods (linear, slerp, ties, ...)."
    else:
        severity, why = ERROR, f"{ctx.method} over `models:` merges layer i with layer i; the models must have the same number of layers."
    yield Finding(
        "layer-count-differs",
        severity,
        f"layer counts differ ({_describe(g)})",
        why,
        None if severity == INFO else "use `slices:` with a layer_range per model, or models of the same size",
        _refs(profiles),
    )


def rule_vocab_rows(profiles: list[Profile], ctx: MergeContext) -> Iterable[Finding]:
    g = _groups(profiles, lambda p: p.embed_rows or p.lm_head_rows)
    if len(g) <= 1:
        return
    smallest = min(g)
    extra = []
    for p in profiles:
        rows = p.embed_rows or p.lm_head_rows
        if rows and rows > smallest:
            toks = [c for i, c, _ in p.added_tokens if i >= smallest]
            if toks:
                extra.append(f"{p.label} adds {_listing(toks, 8)}")
            else:
                extra.append(f"{p.label} has {rows - smallest} extra rows (padding or tokens not listed as added)")
    tensors = sorted({n for p in profiles for n in _vocab_tensor_names(p)})
    if ctx.tokenizer_source:
        severity = INFO
        why = f"tokenizer source {ctx.tokenizer_source!r} sets the output vocabulary; rows are aligned by token, not by position."
    elif ctx.combines is False:
        rows = {(p.embed_rows or p.lm_head_rows) for p in profiles if p.ref in set(ctx.embed_from) | set(ctx.head_from)}
        severity = ERROR if len(rows) > 1 else INFO
        why = (
            "The output's embedding and lm_head come from models with different vocabularies."
            if severity == ERROR
            else "passthrough copies the embedding and lm_head from one model, so this is fine."
        )
    else:
        severity = ERROR
        why = (
            "Combining embedding matrices row by row needs the same number of rows; this is the classic "
            "'Trying to set a tensor of shape [32003, 4096] ... (which has shape [32001, 4096])' failure."
        )
    yield Finding(
        "embedding-rows-differ",
        severity,
        f"embedding rows differ ({_describe(g)})",
        why,
        None
        if severity == INFO
        else "set the output vocabulary in the config: `tokenizer_source: union` (the tokens of every model), "
        f"`tokenizer_source: base` (the base model's) or `tokenizer_source: {max(profiles, key=lambda p: p.embed_rows or 0).ref}` (one model's)"
        + (f"; the extra tokens: {'; '.join(extra)}" if extra else ""),
        _refs(profiles),
        tensors,
    )


def rule_rows_vs_tokenizer(profiles: list[Profile], ctx: MergeContext) -> Iterable[Finding]:
    for p in profiles:
        rows, n = p.embed_rows, p.tokenizer_length
        if not rows or not n or rows == n:
            continue
        if rows > n:
            yield Finding(
                "rows-exceed-tokenizer",
                INFO,
                f"{p.label}: {rows} embedding rows for {n} tokens (padded vocabulary)",
                f"The last {rows - n} rows belong to no token; padding to a multiple of 64/128 is common and harmless.",
                None,
                [p.ref],
                [p.embed_tensor] if p.embed_tensor else [],
            )
        else:
            missing = [c for i, c, _ in p.added_tokens if i >= rows]
            yield Finding(
                "tokens-without-rows",
                WARNING,
                f"{p.label}: the tokenizer has {n} tokens but the embedding only {rows} rows",
                f"Token ids {rows}..{n - 1} have no embedding row"
                + (f" ({_listing(missing)})" if missing else "")
                + "; feeding them to the model fails with an index error.",
                "use a tokenizer_source whose tokens all have rows, or resize the embeddings before merging",
                [p.ref],
                [p.embed_tensor] if p.embed_tensor else [],
            )


def rule_tied(profiles: list[Profile], ctx: MergeContext) -> Iterable[Finding]:
    g = _groups(profiles, lambda p: p.tied_embeddings)
    if len(g) > 1:
        yield Finding(
            "tied-embeddings-differ",
            WARNING,
            f"tied embeddings differ ({_describe(g, lambda v: 'tied' if v else 'separate lm_head')})",
            "Models with tied embeddings have no lm_head of their own; merging them with untied models mixes the input "
            "embedding of one into the output head of another.",
            "set base_model to a model whose tying the output should keep, or merge models that agree",
            _refs(profiles),
            sorted({p.lm_head_tensor for p in profiles if p.lm_head_tensor}),
        )


def rule_tensor_names(profiles: list[Profile], ctx: MergeContext) -> Iterable[Finding]:
    with_t = [p for p in profiles if p.tensors]
    if len(with_t) < 2:
        return
    norm = {p.ref: set(_normalized(p).values()) for p in with_t}
    heads = {n for p in with_t for n in _vocab_tensor_names(p) if n == p.lm_head_tensor}
    union = set().union(*norm.values())
    missing: dict[str, list[str]] = {}
    for p in with_t:
        # an lm_head missing from a tied model is the tied finding's business
        lack = sorted(n for n in union - norm[p.ref] if not (n in heads and p.tied_embeddings))
        if lack:
            missing[p.label] = lack
    if missing:
        yield Finding(
            "tensor-names-differ",
            ERROR,
            "tensor names differ: " + "; ".join(f"{m} lacks {_listing(v, 3)}" for m, v in missing.items()),
            "A merge pairs tensors by name; a tensor missing from one model has nothing to be merged with.",
            "merge models of the same architecture (check for renamed or extra modules such as a vision tower)",
            _refs(with_t),
            sorted({n for v in missing.values() for n in v})[:20],
        )


def rule_tensor_shapes(profiles: list[Profile], ctx: MergeContext) -> Iterable[Finding]:
    with_t = [p for p in profiles if p.tensors]
    if len(with_t) < 2:
        return
    shapes: dict[str, dict[tuple[int, ...], list[str]]] = defaultdict(lambda: defaultdict(list))
    for p in with_t:
        vocab = _vocab_tensor_names(p)
        seen: set[str] = set()
        for name, key in _normalized(p).items():
            if name in vocab or key in seen:
                continue
            seen.add(key)
            shapes[key][p.tensors[name].shape].append(p.label)
    bad = {k: v for k, v in shapes.items() if len(v) > 1}
    if not bad:
        return
    examples = []
    for k, v in list(bad.items())[:MAX_LISTED]:
        examples.append(f"{k}: " + " vs ".join(f"{list(s)} ({', '.join(ms)})" for s, ms in v.items()))
    yield Finding(
        "tensor-shape-differs",
        ERROR,
        f"{len(bad)} tensor{'s' if len(bad) != 1 else ''} differ in shape: " + "; ".join(examples[:2]),
        "Tensors merged together must have the same shape. " + ("Further: " + "; ".join(examples[2:]) if len(examples) > 2 else ""),
        "pick models of the same size and architecture",
        _refs(with_t),
        sorted(bad)[:20],
    )


def rule_dtypes(profiles: list[Profile], ctx: MergeContext) -> Iterable[Finding]:
    g = _groups(profiles, lambda p: max(p.dtypes, key=p.dtypes.__getitem__) if p.dtypes else None)
    if len(g) > 1:
        yield Finding(
            "dtype-differs",
            INFO,
            f"weight dtypes differ ({_describe(g)})",
            "Fine: tensors are computed in float32 and written in the config's dtype (or the first model's).",
            "set `dtype:` in the config to choose the output dtype",
            _refs(profiles),
        )


def rule_rope(profiles: list[Profile], ctx: MergeContext) -> Iterable[Finding]:
    g = _groups(profiles, lambda p: (p.rope_theta, _hashable(p.rope_scaling)) if p.rope_theta or p.rope_scaling else None)
    if len(g) > 1:
        yield Finding(
            "rope-differs",
            WARNING,
            "rope settings differ ("
            + _describe(g, lambda v: f"theta {v[0]:g}" + (f", scaling {dict(v[1])}" if v[1] else "") if v[0] else f"scaling {dict(v[1])}")
            + ")",
            "Models trained with different rotary position settings encode positions differently; averaging their "
            "attention weights usually degrades long-context behaviour. The output keeps one model's settings.",
            "prefer models that share rope settings, or set base_model to the model whose settings should win",
            _refs(profiles),
        )


def rule_positions(profiles: list[Profile], ctx: MergeContext) -> Iterable[Finding]:
    g = _groups(profiles, lambda p: p.max_positions)
    if len(g) > 1:
        yield Finding(
            "max-positions-differ",
            INFO,
            f"max positions differ ({_describe(g)})",
            "The output's config keeps one value (the base model's or the first model's); the merged model is only reliable up to the shortest.",
            "edit max_position_embeddings in the output config if needed",
            _refs(profiles),
        )


def rule_chat_template(profiles: list[Profile], ctx: MergeContext) -> Iterable[Finding]:
    g = _groups(profiles, lambda p: p.chat_template_hash or "none")
    if len(g) > 1:
        yield Finding(
            "chat-template-differs",
            INFO,
            "chat templates differ (" + _describe(g, lambda v: "none" if v == "none" else f"template {v}") + ")",
            "The output copies the chat template of the tokenizer source (or the base model); prompts formatted for the other models may work less well.",
            "set `chat_template:` in the config (e.g. chatml, llama3, or a model's name)",
            _refs(profiles),
        )


RULES: list[Rule] = [
    rule_no_weights,
    rule_quantized,
    rule_bin_weights,
    rule_architecture,
    _size_rule("hidden-size-differs", "hidden_size", "hidden size"),
    _size_rule("intermediate-size-differs", "intermediate_size", "intermediate (MLP) size"),
    _size_rule("heads-differ", "num_heads", "number of attention heads"),
    _size_rule("kv-heads-differ", "num_kv_heads", "number of key/value heads"),
    rule_layers,
    rule_vocab_rows,
    rule_rows_vs_tokenizer,
    rule_tied,
    rule_tensor_names,
    rule_tensor_shapes,
    rule_dtypes,
    rule_rope,
    rule_positions,
    rule_chat_template,
]


# -- rules: the config against the models ------------------------------------------------------------


def config_findings(config: MergeConfig, by_ref: dict[str, Profile]) -> list[Finding]:
    """Findings about the config's use of the models: layer ranges and slice lengths."""
    out: list[Finding] = []
    for si, sl in enumerate(config.slices or []):
        lengths = set()
        for src in sl.sources:
            a, b = src.layer_range
            lengths.add(b - a)
            p = by_ref.get(src.model)
            n = p.layers if p else None
            if a < 0 or b <= a or (n is not None and b > n):
                out.append(
                    Finding(
                        "layer-range-outside",
                        ERROR,
                        f"slice {si + 1}: layer_range [{a}, {b}] of {src.model} is outside its layers"
                        + (f" (it has {n}: 0..{n - 1})" if n is not None else ""),
                        "layer_range is [start, end) with end exclusive; it must lie within the model's layers and be non-empty.",
                        f"use a range within [0, {n}]" if n is not None else "use a non-empty range [start, end) with start < end",
                        [src.model],
                    )
                )
        if len(lengths) > 1:
            out.append(
                Finding(
                    "slice-lengths-differ",
                    ERROR,
                    f"slice {si + 1}: its sources span different numbers of layers ({', '.join(str(x) for x in sorted(lengths))})",
                    "Sources of one slice are merged layer by layer, so they need equally long ranges.",
                    "give every source of the slice a layer_range of the same length",
                    [s.model for s in sl.sources],
                )
            )
    return out
