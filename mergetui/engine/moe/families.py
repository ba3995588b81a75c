"""The MoE families mergetui writes: where experts and routers go, and their config.json.

Tensor names follow the checkpoints these families were published with (Mixtral's
`block_sparse_moe.experts.N.w1`, Qwen1.5-MoE's `mlp.experts.N.gate_proj`): every loader
reads them (transformers 4 and 5, vLLM, llama.cpp's converter), and each expert tensor is
then a plain copy of one source tensor, never a stack of them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from mergetui.engine.errors import ConfigError

# The dense MLP of Llama, Mistral and Qwen2: what every expert contributes per layer.
MLP_SUFFIXES = ("mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight")
RESIDUAL_SUFFIX = "mlp.down_proj.weight"  # writes into the residual stream: residual_scale applies here
ATTN_SUFFIXES = (
    "self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight", "self_attn.o_proj.weight",
    "input_layernorm.weight", "post_attention_layernorm.weight",
)
QKV_BIASES = ("self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias")
IGNORED_SUFFIXES = ("self_attn.rotary_emb.inv_freq",)  # buffers some old checkpoints stored

# Defaults of the source families for keys whose default differs in the MoE family: filled in
# when the base's config.json leaves them out, so the MoE keeps the base's behaviour.
_SOURCE_DEFAULTS: dict[str, dict[str, Any]] = {
    "llama": {"rms_norm_eps": 1e-6, "max_position_embeddings": 2048, "hidden_act": "silu", "tie_word_embeddings": False},
    "mistral": {"rms_norm_eps": 1e-6, "max_position_embeddings": 131072, "hidden_act": "silu", "tie_word_embeddings": False,
                "sliding_window": 4096},
    "qwen2": {"rms_norm_eps": 1e-6, "max_position_embeddings": 32768, "hidden_act": "silu", "tie_word_embeddings": False},
}
_DEFAULT_ROPE_THETA = 10000.0  # all three source families; Mixtral's own default is 1e6
_DROP_KEYS = ("architectures", "model_type", "auto_map", "transformers_version", "_name_or_path", "quantization_config",
              "pretraining_tp", "mlp_bias", "attention_bias")


@dataclass(frozen=True)
class MoEFamily:
    """An output MoE architecture."""

    name: str
    model_type: str
    architecture: str
    shared_expert: bool  # has one always-on expert with a sigmoid gate
    qkv_bias: bool  # its attention needs q/k/v biases (zeros when the base has none)
    aliases: tuple[str, ...] = ()  # other names a config's `architecture:` may use (mergekit's)

    def matches(self, architecture: str) -> bool:
        """Whether a config's `architecture:` value picks this family (a prefix, as mergekit)."""
        a = architecture.strip().lower()
        return any(n.startswith(a) for n in (self.name.lower(), self.model_type, *self.aliases))

    def router(self, prefix: str, layer: int) -> str:
        """Name of layer `layer`'s router (gate) weight."""
        mid = "block_sparse_moe" if self.model_type == "mixtral" else "mlp"
        return f"{prefix}.{layer}.{mid}.gate.weight"

    def expert(self, prefix: str, layer: int, index: int, suffix: str) -> str:
        """Name of expert `index`'s copy of the dense MLP tensor `suffix`."""
        proj = suffix.split(".")[1]
        if self.model_type == "mixtral":
            w = {"gate_proj": "w1", "down_proj": "w2", "up_proj": "w3"}[proj]
            return f"{prefix}.{layer}.block_sparse_moe.experts.{index}.{w}.weight"
        return f"{prefix}.{layer}.mlp.experts.{index}.{proj}.weight"

    def shared(self, prefix: str, layer: int, suffix: str) -> str:
        """Name of the shared expert's copy of `suffix`."""
        return f"{prefix}.{layer}.mlp.shared_expert.{suffix.split('.', 1)[1]}"

    def shared_gate(self, prefix: str, layer: int) -> str:
        """Name of the shared expert's (1, hidden) gate."""
        return f"{prefix}.{layer}.mlp.shared_expert_gate.weight"


MIXTRAL = MoEFamily("Mixtral", "mixtral", "MixtralForCausalLM", shared_expert=False, qkv_bias=False)
QWEN2_MOE = MoEFamily("Qwen2-MoE", "qwen2_moe", "Qwen2MoeForCausalLM", shared_expert=True, qkv_bias=True, aliases=("qwen moe",))
FAMILIES = (MIXTRAL, QWEN2_MOE)
SOURCE_TYPES = tuple(_SOURCE_DEFAULTS)


def choose_family(architecture: str | None, n_shared: int, model_types: dict[str, str]) -> MoEFamily:
    """The output family for these models (mergekit's rules: Mixtral unless shared experts ask for Qwen2-MoE)."""
    for ref, mt in model_types.items():
        if mt not in SOURCE_TYPES:
            raise ConfigError(f"model {ref}: model_type {mt!r} cannot be made into experts",
                              fix="mergetui builds MoEs from llama, mistral or qwen2 models")
    base_type = next(iter(model_types.values()))
    if architecture:
        picked = [f for f in FAMILIES if f.matches(architecture)]
        if not picked:
            raise ConfigError(f"architecture {architecture!r}: not an output MoE family mergetui writes",
                              fix="use 'mixtral' or 'qwen' (Qwen2-MoE), or leave it out")
        family = picked[0]
    elif n_shared:
        family = QWEN2_MOE
    elif base_type == "qwen2":
        raise ConfigError("Qwen2 experts make a Qwen2-MoE, which needs exactly one shared expert",
                          fix="add 'shared_experts:' with one expert (source_model and prompts)")
    else:
        family = MIXTRAL
    if family.shared_expert and n_shared != 1:
        raise ConfigError(f"{family.name} needs exactly one shared expert, the config lists {n_shared}",
                          fix="list one model under 'shared_experts:'")
    if not family.shared_expert and n_shared:
        raise ConfigError(f"{family.name} has no shared experts, the config lists {n_shared}",
                          fix="remove 'shared_experts:', or use architecture: qwen")
    if family is MIXTRAL and base_type == "qwen2":
        raise ConfigError("Mixtral cannot hold Qwen2's attention biases", fix="leave 'architecture' out to build a Qwen2-MoE")
    return family


def moe_config(
    family: MoEFamily,
    base: dict[str, Any],
    *,
    num_experts: int,
    experts_per_token: int,
    intermediate_size: int,
    shared_intermediate_size: int | None,
    dtype_name: str,
    num_layers: int,
) -> dict[str, Any]:
    """config.json of the MoE: the base's settings plus the family's expert keys."""
    src_type = base.get("model_type", "llama")
    out: dict[str, Any] = {"architectures": [family.architecture], "model_type": family.model_type}
    body = {k: v for k, v in json.loads(json.dumps(base)).items() if k not in _DROP_KEYS}
    for k, v in _SOURCE_DEFAULTS.get(src_type, {}).items():
        body.setdefault(k, v)
    if "rope_parameters" not in body and "rope_theta" not in body:
        body["rope_theta"] = _DEFAULT_ROPE_THETA
    out.update(body)
    out["intermediate_size"] = intermediate_size
    out["num_experts_per_tok"] = experts_per_token
    out["output_router_logits"] = False
    if family is MIXTRAL:
        out["num_local_experts"] = num_experts
        if src_type == "llama":
            out["sliding_window"] = None
    else:
        out.update(
            num_experts=num_experts,
            moe_intermediate_size=intermediate_size,
            shared_expert_intermediate_size=shared_intermediate_size or intermediate_size,
            decoder_sparse_step=1,
            mlp_only_layers=[],
            norm_topk_prob=True,  # top-k weights sum to 1: identical experts give the dense output
            qkv_bias=True,
        )
        if src_type != "qwen2":
            out.update(use_sliding_window=False, sliding_window=None, max_window_layers=num_layers)
    out["torch_dtype"] = dtype_name
    if "dtype" in out:
        out["dtype"] = dtype_name
    return out
