"""Passthrough: copy one input tensor, optionally scaled (layer stacking, frankenmerges)."""

from __future__ import annotations

import torch

from mergetui.engine.methods.base import MergeInputs, MethodSpec, ParamSpec, elementwise


def passthrough_merge(inp: MergeInputs) -> torch.Tensor:
    """The single input, times its `scale` when one is given."""
    if len(inp.tensors) != 1:
        raise ValueError(f"{inp.name}: passthrough takes exactly one input, got {len(inp.tensors)}")
    scale = inp.model_params[0].get("scale") if inp.model_params else None
    if scale is None:
        # no arithmetic: a plain cast, which aliases the input when the dtype already matches
        return inp.tensors[0].to(device="cpu", dtype=inp.out_dtype)
    s = float(scale)
    return elementwise(inp, lambda xs, rows: xs[0].mul_(s))


METHODS: tuple[MethodSpec, ...] = (
    MethodSpec(
        name="passthrough",
        description="Copy a tensor from one model unchanged (or scaled); for layer stacking.",
        merge=passthrough_merge,
        params=(ParamSpec("scale", None, per_model=True, help="Multiply the tensor by this factor."),),
        base="ignored",
        min_models=1,
        max_models=1,
        copy_of=lambda params, model_params: 0 if model_params[0].get("scale") is None else None,
    ),
)
