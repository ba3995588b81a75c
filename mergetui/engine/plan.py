"""The plan: every output tensor, derived from config + model headers before any weight is read.

Dry run, resource estimates, progress totals and the executor all read the same Plan.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from mergetui.engine.architecture import LayerMap, config_layer_count, find_layers, is_embedding, is_lm_head, is_vocab_tensor, layer_count_key
from mergetui.engine.config import InputSlice, MergeConfig, OutputSlice
from mergetui.engine.errors import ConfigError, ModelError, ShapeMismatchError
from mergetui.engine.methods.base import MethodSpec
from mergetui.engine.methods.registry import closest_method, get_method
from mergetui.engine.output import check_chat_template
from mergetui.engine.params import resolve
from mergetui.engine.sources import ModelSource, TensorMeta, open_source
from mergetui.engine.vocab import AlignSpec, VocabPlan, build_vocab

DTYPE_NAMES = {
    "float32": "F32", "fp32": "F32", "float16": "F16", "fp16": "F16",
    "bfloat16": "BF16", "bf16": "BF16", "float64": "F64",
}
ST_TO_NAME = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64"}
ELEMENT_SIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
DEFAULT_SHARD_SIZE = 5 * 1000**3
TORCH_BASELINE_BYTES = 400 * 1024**2  # interpreter + torch, measured RSS before any tensor


@dataclass(frozen=True)
class TensorInput:
    """One input of an output tensor: which model, which tensor."""

    model: str
    tensor: str


@dataclass
class PlannedTensor:
    """One output tensor: inputs, method, resolved parameters, shape, dtype and place on disk."""

    name: str
    inputs: list[TensorInput]
    base_index: int | None
    method: str
    params: dict[str, Any]
    model_params: list[dict[str, Any]]
    shape: tuple[int, ...]
    dtype: str  # safetensors code of the output
    section: str  # pre | layer | post
    out_layer: int | None = None
    shard: str = ""
    offset: int = 0
    align: AlignSpec | None = None  # vocab tensor whose inputs are moved into the output vocabulary

    @property
    def numel(self) -> int:
        """Number of elements."""
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def nbytes(self) -> int:
        """Output bytes."""
        return self.numel * ELEMENT_SIZE[self.dtype]


@dataclass
class Plan:
    """A whole merge, planned."""

    config: MergeConfig
    method: MethodSpec
    tensors: list[PlannedTensor]
    sources: dict[str, ModelSource]
    out_config: dict[str, Any]
    template_model: str
    tokenizer_model: str
    out_layers: int
    tied: bool
    shard_size: int = DEFAULT_SHARD_SIZE
    shards: list[tuple[str, list[str]]] = field(default_factory=list)  # filename -> tensor names
    vocab: VocabPlan | None = None  # the output vocabulary, when the config sets a tokenizer

    @property
    def total_bytes(self) -> int:
        """Bytes of all output tensors."""
        return sum(t.nbytes for t in self.tensors)

    @property
    def total_params(self) -> int:
        """Parameters in the output model."""
        return sum(t.numel for t in self.tensors)

    def input_bytes(self, t: PlannedTensor) -> int:
        """Bytes of the stored inputs of one output tensor."""
        total = 0
        for inp in t.inputs:
            meta = self.sources[inp.model].tensors()[inp.tensor]
            n = 1
            for d in meta.shape:
                n *= d
            total += n * ELEMENT_SIZE[meta.dtype]
        return total

    def tensor_working_bytes(self, t: PlannedTensor, chunk_elements: int) -> int:
        """Memory one tensor needs while merging: stored inputs + output + fp32 chunk scratch."""
        scratch = min(t.numel, chunk_elements) * 4 * (len(t.inputs) + 4)
        aligned = 0
        if t.align is not None:  # align() builds a copy of every input in the output vocabulary
            aligned = len(t.inputs) * t.numel * max(ELEMENT_SIZE[self.sources[i.model].tensors()[i.tensor].dtype] for i in t.inputs)
        return self.input_bytes(t) + aligned + t.nbytes + scratch

    def peak_memory(self, in_flight: int, chunk_elements: int) -> int:
        """Estimated peak RSS with `in_flight` tensors at once (the largest ones)."""
        sizes = sorted((self.tensor_working_bytes(t, chunk_elements) for t in self.tensors), reverse=True)
        return TORCH_BASELINE_BYTES + sum(sizes[: max(1, in_flight)])

    def fingerprint(self) -> str:
        """Hash of everything that determines the output bytes (for --resume)."""
        h = hashlib.sha256()
        for t in self.tensors:
            h.update(json.dumps([t.name, [(i.model, i.tensor) for i in t.inputs], t.base_index, t.method,
                                 t.params, t.model_params, t.shape, t.dtype, t.shard, t.offset], sort_keys=True, default=str).encode())
        if self.vocab is not None:
            h.update(self.vocab.digest.encode())
        return h.hexdigest()[:16]

    def summary(self) -> dict[str, Any]:
        """Numbers a dry run prints."""
        return {
            "method": self.method.name,
            "models": list(self.sources),
            "output_layers": self.out_layers,
            "tensors": len(self.tensors),
            "parameters": self.total_params,
            "bytes": self.total_bytes,
            "shards": len(self.shards),
            "tied_embeddings": self.tied,
            "template": self.template_model,
            "tokenizer_from": self.tokenizer_model,
            "vocabulary": f"{self.vocab.source}: {self.vocab.n_tokens} tokens, {self.vocab.size} rows" if self.vocab else "unchanged",
        }


@dataclass
class _Model:
    ref: str
    source: ModelSource
    metas: dict[str, TensorMeta]
    layers: LayerMap
    config: dict[str, Any]

    @property
    def tied(self) -> bool:
        head = [n for n in self.layers.post if is_lm_head(n)]
        if not head:
            return True  # no lm_head stored: the head is the embedding
        return bool(self.config.get("tie_word_embeddings", False))


def _load_model(ref: str, sources: dict[str, ModelSource]) -> _Model:
    src = sources.get(ref) or open_source(ref)
    sources[ref] = src
    metas = src.tensors()
    if not metas:
        raise ModelError(f"model {ref}: no tensors found", fix="check that the weights downloaded completely")
    cfg = src.config()
    layers = find_layers(metas, config_layer_count(cfg))
    return _Model(ref, src, metas, layers, cfg)


def resolve_method(name: str) -> MethodSpec:
    """The method for a config's merge_method, or a ConfigError suggesting the closest."""
    spec = get_method(name)
    if spec is None:
        guess = closest_method(name)
        hint = f"did you mean '{guess}'?" if guess else "see `mergetui merge --help` for the list"
        raise ConfigError(f"unknown merge method {name!r}", fix=hint)
    return spec


def _normalize_slices(cfg: MergeConfig, method: MethodSpec, models: dict[str, _Model]) -> list[OutputSlice]:
    """`models:` becomes one output slice over every model's full layer range (as mergekit)."""
    if cfg.slices:
        return cfg.slices
    sources = [InputSlice(model=m.model, layer_range=(0, models[m.model].layers.num_layers), parameters=m.parameters) for m in cfg.models or []]
    base = cfg.base_model
    if base and method.base != "ignored" and all(s.model != base for s in sources):
        sources.append(InputSlice(model=base, layer_range=(0, models[base].layers.num_layers)))
    return [OutputSlice(sources=sources)]


def _check_slice(i: int, sl: OutputSlice, cfg: MergeConfig, method: MethodSpec, models: dict[str, _Model]) -> str | None:
    """Validate one output slice; returns its base model (if any)."""
    where = f"slice {i}" if cfg.slices else "models"
    lengths = []
    for src in sl.sources:
        lo, hi = src.layer_range
        n = models[src.model].layers.num_layers
        if lo < 0 or hi > n:
            raise ConfigError(f"{where}: layer_range [{lo}, {hi}] of {src.model} is outside its {n} layers", fix=f"use a range within [0, {n}]")
        if hi <= lo:
            raise ConfigError(f"{where}: layer_range [{lo}, {hi}] of {src.model} is empty", fix="end must be greater than start")
        lengths.append(hi - lo)
    if len(set(lengths)) > 1:
        detail = ", ".join(f"{s.model} {list(s.layer_range)}" for s in sl.sources)
        raise ConfigError(f"{where}: sources have different lengths ({detail})", fix="give every source of a slice the same number of layers")
    base = sl.base_model or cfg.base_model
    refs = [s.model for s in sl.sources]
    if method.base == "required":
        if not base:
            raise ConfigError(f"merge method {method.name} needs a base_model", fix="add 'base_model: <model>' to the config")
        if base not in refs:
            raise ConfigError(f"{where}: base model {base} is not among the slice's sources", fix="add the base model to the slice's sources")
    n = len(refs)
    if n < method.min_models or (method.max_models is not None and n > method.max_models):
        want = _how_many(method.min_models, method.max_models)
        raise ConfigError(f"{where}: {method.name} takes {want} models (base included), got {n}", fix=f"list {want} models for {method.name}")
    others = n - (1 if base in refs and method.base != "ignored" else 0)
    if others < method.min_others or (method.max_others is not None and others > method.max_others):
        want = _how_many(method.min_others, method.max_others)
        noun = "model" if want.endswith(" 1") or want == "1" else "models"
        raise ConfigError(f"{where}: {method.name} takes {want} {noun} besides the base, got {others}",
                          fix=f"list {want} {noun} besides base_model for {method.name}")
    return base if (base in refs and method.base != "ignored") else None


def _how_many(lo: int, hi: int | None) -> str:
    """'2', 'at least 2' or '2 to 3', for messages about model counts."""
    if hi == lo:
        return str(lo)
    return f"at least {lo}" if hi is None else f"{lo} to {hi}"


def build_plan(
    cfg: MergeConfig,
    sources: dict[str, ModelSource] | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
) -> Plan:
    """Plan every output tensor of `cfg`; reads only configs and tensor headers."""
    method = resolve_method(cfg.merge_method)
    check_chat_template(cfg.chat_template)
    sources = {} if sources is None else sources
    models = {ref: _load_model(ref, sources) for ref in cfg.referenced_models()}
    slices = _normalize_slices(cfg, method, models)
    bases = [_check_slice(i, sl, cfg, method, models) for i, sl in enumerate(slices)]

    template_ref = cfg.base_model if cfg.base_model in models else slices[0].sources[0].model
    template = models[template_ref]
    tied = template.tied
    out_dtype = DTYPE_NAMES.get(cfg.out_dtype or cfg.dtype or "", "")
    vocab = _plan_vocab(cfg, models, sources) if cfg.tokenizer_choice() else None

    planned: list[PlannedTensor] = []

    def add(out_name: str, sl: OutputSlice, base: str | None, input_names: list[str], section: str, t: float, out_layer: int | None) -> None:
        refs = [s.model for s in sl.sources]
        metas = []
        for ref, tname in zip(refs, input_names):
            meta = models[ref].metas.get(tname)
            if meta is None:
                raise ModelError(f"model {ref}: has no tensor {tname!r} (needed for {out_name})", fix="the models must share an architecture; run `mergetui check`")
            metas.append(meta)
        spec = None
        if vocab is not None and section != "layer" and _is_vocab(out_name):
            if len({m.shape[1:] for m in metas}) > 1:
                raise _shape_error(out_name, refs, input_names, metas, cfg)
            spec = vocab.spec(refs, sl.base_model or cfg.base_model, out_name)
        if spec is None and len({m.shape for m in metas}) > 1:
            raise _shape_error(out_name, refs, input_names, metas, cfg)
        base_index = refs.index(base) if base is not None else None
        params = {
            p.name: resolve(p, [sl.parameters, cfg.parameters], out_name, t, out_name)
            for p in method.params if not p.per_model
        }
        model_params = []
        for i, (ref, tname) in enumerate(zip(refs, input_names)):
            scopes = [s.parameters for s in sl.sources if s.model == ref][:1] + [sl.parameters, cfg.parameters]
            mp = {}
            for p in method.params:
                if not p.per_model:
                    continue
                if i == base_index and p.non_base:
                    # parameters of a model's delta (weight, density) do not apply to the base
                    mp[p.name] = _try_resolve(p, scopes, tname, t, f"{ref} tensor {tname}")
                else:
                    mp[p.name] = resolve(p, scopes, tname, t, f"{ref} tensor {tname}")
            model_params.append(mp)
        planned.append(PlannedTensor(
            name=out_name,
            inputs=[TensorInput(r, n) for r, n in zip(refs, input_names)],
            base_index=base_index,
            method=method.name,
            params=params,
            model_params=model_params,
            shape=metas[0].shape if spec is None else (spec.size, *metas[0].shape[1:]),
            dtype=out_dtype or metas[0].dtype,
            section=section,
            out_layer=out_layer,
            align=spec,
        ))

    # pre: embeddings from the first slice's sources (t = 0, as mergekit)
    for name in template.layers.pre:
        add(name, slices[0], bases[0], [_input_name(models[s.model], name, template) for s in slices[0].sources], "pre", 0.0, None)

    out_layer = 0
    out_prefix = template.layers.prefix
    for sl, base in zip(slices, bases):
        n = sl.sources[0].layer_range[1] - sl.sources[0].layer_range[0]
        first = models[sl.sources[0].model]
        for off in range(n):
            t = off / (n - 1) if n > 1 else 1.0
            src_layer0 = sl.sources[0].layer_range[0] + off
            for suffix in first.layers.layer_suffixes[src_layer0]:
                inputs = [models[s.model].layers.layer_tensor(s.layer_range[0] + off, suffix) for s in sl.sources]
                add(f"{out_prefix}.{out_layer}.{suffix}", sl, base, inputs, "layer", t, out_layer)
            out_layer += 1

    # post: final norm and head from the last slice's sources
    for name in template.layers.post:
        if is_lm_head(name) and tied:
            continue  # tied output: the head is the embedding, not written
        add(name, slices[-1], bases[-1], [_input_name(models[s.model], name, template) for s in slices[-1].sources], "post", 0.0, None)

    out_config = _output_config(template.config, out_layer, tied, out_dtype)
    if vocab is not None:
        tok_model = vocab.tokenizer_from
        _set_vocab_size(out_config, vocab.size)
    else:
        tok_model = cfg.base_model if cfg.base_model in models else slices[0].sources[0].model
    plan = Plan(cfg, method, planned, {r: models[r].source for r in models}, out_config, template_ref, tok_model, out_layer, tied, shard_size, vocab=vocab)
    assign_shards(plan)
    return plan


def _is_vocab(name: str) -> bool:
    """Whether a pre/post tensor has one row per token (embedding, lm_head and its bias)."""
    return is_vocab_tensor(name) or (name.endswith("bias") and is_lm_head(name.removesuffix("bias") + "weight"))


def _vocab_rows(model: _Model) -> int:
    """Rows the model has for its tokens (its smallest vocab tensor; config vocab_size if none)."""
    dims = [model.metas[n].shape[0] for n in model.layers.pre + model.layers.post if _is_vocab(n) and model.metas[n].shape]
    return min(dims) if dims else int(model.config.get("vocab_size") or 0)


def _plan_vocab(cfg: MergeConfig, models: dict[str, _Model], sources: dict[str, ModelSource]) -> VocabPlan:
    """The output vocabulary (tokenizer files are read now; weights are not)."""
    choice = cfg.tokenizer_choice()
    refs = cfg.referenced_models()
    if choice not in ("union", "base") and choice not in models:
        models[choice] = _load_model(choice, sources)  # type: ignore[index]
    roots = {ref: models[ref].source.fetch(set()) for ref in {*refs, choice} if ref in models}
    rows = {ref: _vocab_rows(models[ref]) for ref in refs}
    return build_vocab(cfg, refs[0], roots, rows)  # refs[0]: the base model, else the first (as mergekit)


def _set_vocab_size(out: dict[str, Any], size: int) -> None:
    """Write the output's vocab_size (also in a nested text_config that declares one)."""
    text = out.get("text_config")
    if isinstance(text, dict) and "vocab_size" in text:
        text["vocab_size"] = size
    if "vocab_size" in out or not (isinstance(text, dict) and "vocab_size" in text):
        out["vocab_size"] = size


def _try_resolve(p: Any, scopes: list, tname: str, t: float, where: str) -> Any:
    try:
        return resolve(p, scopes, tname, t, where)
    except ConfigError:
        return None


def _input_name(model: _Model, name: str, template: _Model) -> str:
    """The name of a pre/post tensor in `model` (its own naming; a tied model's head is its embedding)."""
    if name in model.metas:
        return name
    if is_lm_head(name):
        emb = [n for n in model.layers.pre if is_embedding(n)]
        if emb:
            return emb[0]
    return name


def _shape_error(out_name: str, refs: list[str], names: list[str], metas: list[TensorMeta], cfg: MergeConfig) -> ShapeMismatchError:
    detail = ", ".join(f"{r}: {list(m.shape)}" for r, m in zip(refs, metas))
    if is_embedding(names[0]) or is_lm_head(names[0]):
        if cfg.tokenizer_choice():  # aligned, yet the rows differ in width
            return ShapeMismatchError(f"{out_name}: hidden sizes differ ({detail})", fix="these models cannot be merged; run `mergetui check`")
        return ShapeMismatchError(
            f"{out_name}: vocabulary sizes differ ({detail}); the models' tokenizers do not match",
            fix="add 'tokenizer_source: union' to the config (every model's tokens; or 'base' for the base model's, "
            "or a model's name for its tokenizer) so rows are aligned by token; `mergetui check` lists the extra tokens",
        )
    return ShapeMismatchError(f"{out_name}: shapes differ ({detail})", fix="these models cannot be merged tensor by tensor; run `mergetui check`")


def _output_config(template: dict[str, Any], layers: int, tied: bool, out_dtype: str) -> dict[str, Any]:
    """The template model's config with the new layer count, dtype and tying."""
    out = json.loads(json.dumps(template))
    key = layer_count_key(out) or "num_hidden_layers"
    out[key] = layers
    for k in ("layer_types",):  # per-layer lists must follow the new depth
        if isinstance(out.get(k), list) and out[k]:
            out[k] = [out[k][min(i, len(out[k]) - 1)] for i in range(layers)]
    if out_dtype:
        out["torch_dtype"] = ST_TO_NAME[out_dtype]
        if "dtype" in out:
            out["dtype"] = ST_TO_NAME[out_dtype]
    out["tie_word_embeddings"] = tied
    return out


def assign_shards(plan: Plan) -> None:
    """Group tensors (pre, layers, post order) into shards of at most shard_size bytes."""
    groups: list[list[PlannedTensor]] = [[]]
    size = 0
    for t in plan.tensors:
        if groups[-1] and size + t.nbytes > plan.shard_size:
            groups.append([])
            size = 0
        groups[-1].append(t)
        size += t.nbytes
    n = len(groups)
    plan.shards = []
    for i, g in enumerate(groups):
        fname = f"model-{i + 1:05d}-of-{n:05d}.safetensors"
        for t in g:
            t.shard = fname
        plan.shards.append((fname, [t.name for t in g]))
