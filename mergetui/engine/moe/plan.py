"""The MoE plan: every output tensor and where its bytes come from, from configs and headers only.

Per layer, attention and norms come from the base model, each expert's dense MLP becomes
that expert's tensors, and the router (and shared-expert gate) rows are computed at run
time. Shapes are checked here, so a mismatched expert fails before anything is read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mergetui.engine.architecture import config_layer_count, find_layers, is_embedding
from mergetui.engine.errors import ConfigError, ModelError, ShapeMismatchError
from mergetui.engine.moe.config import MoEConfig, duplicate_prompt_warnings
from mergetui.engine.moe.families import (
    ATTN_SUFFIXES, IGNORED_SUFFIXES, MLP_SUFFIXES, QKV_BIASES, RESIDUAL_SUFFIX, MoEFamily, choose_family, moe_config,
)
# the merge plan's shard grouping only needs .tensors/.shard_size/.shards and each tensor's name/nbytes/shard
from mergetui.engine.plan import DEFAULT_SHARD_SIZE, DTYPE_NAMES, ELEMENT_SIZE, ST_TO_NAME, assign_shards
from mergetui.engine.sources import ModelSource, TensorMeta, open_source


@dataclass
class MoETensor:
    """One output tensor: copied from a model (maybe with noise or scaling), or generated."""

    name: str
    shape: tuple[int, ...]
    dtype: str  # safetensors code of the output
    model: str | None = None  # source model ref; None for generated tensors
    tensor: str | None = None  # source tensor name
    noise: float | None = None  # expert's noise_scale: add N(0, noise) to the weights
    scale: float | None = None  # expert's residual_scale (down projections only)
    gate: tuple[int, int, int] | None = None  # (layer, first row, end row) of the router rows
    zeros: bool = False  # a bias the output family needs and the base lacks
    shard: str = ""

    @property
    def nbytes(self) -> int:
        """Output bytes."""
        n = ELEMENT_SIZE[self.dtype]
        for d in self.shape:
            n *= d
        return n


@dataclass
class MoEPlan:
    """A whole MoE assembly, planned."""

    config: MoEConfig
    family: MoEFamily
    tensors: list[MoETensor]
    sources: dict[str, ModelSource]
    out_config: dict[str, Any]
    num_layers: int
    hidden_size: int
    warnings: list[str] = field(default_factory=list)
    shards: list[tuple[str, list[str]]] = field(default_factory=list)
    shard_size: int = DEFAULT_SHARD_SIZE

    @property
    def total_bytes(self) -> int:
        """Bytes of all output tensors."""
        return sum(t.nbytes for t in self.tensors)

    def expert_labels(self) -> list[str]:
        """`experts[i] (model)` for each router row, as the config names them."""
        cfg = self.config
        return ([f"experts[{i}] ({e.source_model})" for i, e in enumerate(cfg.experts)]
                + [f"shared_experts[{i}] ({e.source_model})" for i, e in enumerate(cfg.shared_experts or [])])

    @property
    def num_gates(self) -> int:
        """Router rows per layer: routed experts, then the shared expert's gate."""
        return len(self.config.all_experts())


@dataclass
class _Model:
    ref: str
    source: ModelSource
    metas: dict[str, TensorMeta]
    config: dict[str, Any]
    prefix: str | None
    num_layers: int
    layer_suffixes: list[list[str]]
    pre: list[str]
    post: list[str]


def _open(ref: str, sources: dict[str, ModelSource]) -> _Model:
    src = sources.get(ref) or open_source(ref)
    sources[ref] = src
    metas = src.tensors()
    cfg = src.config()
    lm = find_layers(metas, config_layer_count(cfg))
    return _Model(ref, src, metas, cfg, lm.prefix, lm.num_layers, lm.layer_suffixes, lm.pre, lm.post)


def build_moe_plan(cfg: MoEConfig, sources: dict[str, ModelSource] | None = None, shard_size: int = DEFAULT_SHARD_SIZE) -> MoEPlan:
    """Plan every output tensor of the MoE; reads only configs and tensor headers."""
    sources = {} if sources is None else sources
    models = {ref: _open(ref, sources) for ref in cfg.referenced_models()}
    base = models[cfg.base_model]
    family = choose_family(cfg.architecture, len(cfg.shared_experts or []),
                           {ref: str(m.config.get("model_type", "?")) for ref, m in models.items()})
    if base.prefix is None or base.num_layers == 0:
        raise ModelError(f"base model {base.ref}: no decoder layers found in its tensor names", fix="check the base model")
    L = base.num_layers
    hidden = int(base.config.get("hidden_size") or _embed_width(base))
    out_dtype = _out_dtype(cfg, base)

    # experts: layer count, hidden size, and one MLP shape shared by all routed experts
    groups = [("experts", i, e) for i, e in enumerate(cfg.experts)] + [("shared_experts", i, e) for i, e in enumerate(cfg.shared_experts or [])]
    mlp_shapes: dict[str, dict[str, tuple[int, ...]]] = {}
    first_routed: tuple[str, dict[str, tuple[int, ...]]] | None = None
    for group, i, e in groups:
        m = models[e.source_model]
        label = f"{group}[{i}] ({m.ref})"
        if m.num_layers != L:
            raise ShapeMismatchError(f"{label} has {m.num_layers} layers, the base model ({base.ref}) has {L}",
                                     fix="every expert must have the base's layer count (use fine-tunes of one base model)")
        act, base_act = m.config.get("hidden_act", "silu"), base.config.get("hidden_act", "silu")
        if act != base_act:
            raise ModelError(f"{label}: its MLP uses {act}, the base model's uses {base_act}",
                             fix="every expert must use the base's activation (use fine-tunes of one base model)")
        shapes = _mlp_shapes(m, label)
        inter = shapes[MLP_SUFFIXES[0]][0]
        want = {MLP_SUFFIXES[0]: (inter, hidden), MLP_SUFFIXES[1]: (inter, hidden), MLP_SUFFIXES[2]: (hidden, inter)}
        for suffix, shape in shapes.items():
            if shape != want[suffix]:
                raise ShapeMismatchError(f"{label}: {m.prefix}.N.{suffix} is {list(shape)}, but the base model's hidden size is {hidden}",
                                         fix="every expert must have the base's hidden size (use fine-tunes of one base model)")
        if group == "experts":
            if first_routed is None:
                first_routed = (label, shapes)
            elif shapes != first_routed[1]:
                suffix = next(s for s in MLP_SUFFIXES if shapes[s] != first_routed[1][s])
                raise ShapeMismatchError(
                    f"{label}: {m.prefix}.N.{suffix} is {list(shapes[suffix])}, but {first_routed[0]} has {list(first_routed[1][suffix])}",
                    fix="experts of one MoE must have the same shape (same intermediate size); use fine-tunes of one base model")
        mlp_shapes[f"{group}[{i}]"] = shapes

    warnings = duplicate_prompt_warnings(cfg)
    if len(cfg.experts) > 1 and len({e.source_model for e in cfg.experts}) == 1:
        warnings.append("every expert is the same model: the MoE will compute exactly what that model does, with more memory")

    tensors: list[MoETensor] = []

    def copy(name: str, m: _Model, src_name: str, noise: float | None = None, scale: float | None = None) -> None:
        tensors.append(MoETensor(name, m.metas[src_name].shape, out_dtype, m.ref, src_name, noise, scale))

    for name in base.pre:
        copy(name, base, name)
    n_routed = len(cfg.experts)
    for layer in range(L):
        suffixes = base.layer_suffixes[layer]
        for suffix in suffixes:
            name = f"{base.prefix}.{layer}.{suffix}"
            if suffix in MLP_SUFFIXES or suffix in IGNORED_SUFFIXES:
                continue
            if suffix in ATTN_SUFFIXES or (suffix in QKV_BIASES and family.qkv_bias):
                copy(name, base, name)
            else:
                raise ModelError(f"base model {base.ref}: tensor {name} has no place in a {family.name} model",
                                 fix=f"{family.name} layers hold attention, norms and expert MLPs only; use a Llama, Mistral or Qwen2 base")
        if family.qkv_bias:
            for suffix in QKV_BIASES:
                if suffix not in suffixes:  # Qwen2-MoE attention has q/k/v biases: zeros keep the base's maths
                    w = base.metas[f"{base.prefix}.{layer}.{suffix.replace('.bias', '.weight')}"]
                    tensors.append(MoETensor(f"{base.prefix}.{layer}.{suffix}", (w.shape[0],), out_dtype, zeros=True))
        tensors.append(MoETensor(family.router(base.prefix, layer), (n_routed, hidden), out_dtype, gate=(layer, 0, n_routed)))
        for group, i, e in groups:
            m = models[e.source_model]
            for suffix in MLP_SUFFIXES:
                src_name = f"{m.prefix}.{layer}.{suffix}"
                out_name = family.expert(base.prefix, layer, i, suffix) if group == "experts" else family.shared(base.prefix, layer, suffix)
                copy(out_name, m, src_name, e.noise_scale, e.residual_scale if suffix == RESIDUAL_SUFFIX else None)
        if family.shared_expert:
            tensors.append(MoETensor(family.shared_gate(base.prefix, layer), (1, hidden), out_dtype, gate=(layer, n_routed, n_routed + 1)))
    for name in base.post:
        copy(name, base, name)

    routed = mlp_shapes["experts[0]"][MLP_SUFFIXES[0]][0]
    shared = mlp_shapes["shared_experts[0]"][MLP_SUFFIXES[0]][0] if cfg.shared_experts else None
    out_config = moe_config(family, base.config, num_experts=n_routed, experts_per_token=cfg.experts_per_token,
                            intermediate_size=routed, shared_intermediate_size=shared, dtype_name=ST_TO_NAME.get(out_dtype, "float32"),
                            num_layers=L)
    plan = MoEPlan(cfg, family, tensors, {r: m.source for r, m in models.items()}, out_config, L, hidden, warnings, shard_size=shard_size)
    assign_shards(plan)  # type: ignore[arg-type]  # duck-typed: same fields as the merge Plan
    return plan


def _mlp_shapes(m: _Model, label: str) -> dict[str, tuple[int, ...]]:
    """The dense MLP shapes of a model, the same in every layer (else a clear error)."""
    first: dict[str, tuple[int, ...]] = {}
    for layer in range(m.num_layers):
        for suffix in MLP_SUFFIXES:
            meta = m.metas.get(f"{m.prefix}.{layer}.{suffix}")
            if meta is None:
                raise ModelError(f"{label}: has no tensor {m.prefix}.{layer}.{suffix}",
                                 fix="experts must be Llama, Mistral or Qwen2 models with a gate/up/down MLP in every layer")
            if first.setdefault(suffix, meta.shape) != meta.shape:
                raise ShapeMismatchError(f"{label}: layer {layer}'s {suffix} is {list(meta.shape)}, layer 0's is {list(first[suffix])}",
                                         fix="experts need one MLP shape in every layer")
    return first


def _embed_width(m: _Model) -> int:
    emb = [n for n in m.pre if is_embedding(n)]
    if not emb:
        raise ModelError(f"base model {m.ref}: no hidden_size in config.json and no embedding tensor", fix="check the base model")
    return m.metas[emb[0]].shape[-1]


def _out_dtype(cfg: MoEConfig, base: _Model) -> str:
    """The config's dtype, else the base's declared dtype, else its embedding's stored dtype (as mergekit)."""
    name = cfg.dtype or base.config.get("torch_dtype") or base.config.get("dtype")
    if isinstance(name, str) and name in DTYPE_NAMES:
        return DTYPE_NAMES[name]
    emb = [n for n in base.pre if is_embedding(n)]
    code = base.metas[emb[0]].dtype if emb else "F32"
    if code not in ST_TO_NAME:
        raise ConfigError(f"base model {base.ref} stores {code} weights", fix="set 'dtype: bfloat16' (or float16/float32) in the config")
    return code

