"""NearSwap: take the other model's value where it lies near the base's, keep the base's elsewhere."""

from __future__ import annotations

import torch

from mergetui.engine.methods.base import (
    REQUIRED,
    MergeInputs,
    MethodSpec,
    ParamSpec,
    elementwise,
)

_DIFF_FLOOR = 1e-6  # |base - model| is clamped to at least this before dividing


def nearswap_merge(inp: MergeInputs) -> torch.Tensor:
    """w * model + (1 - w) * base per element, w = clamp(t / |base - model|, 0, 1)."""
    if inp.base_index is None or len(inp.others) != 1:
        raise ValueError(f"{inp.name}: nearswap needs exactly two inputs, one of them the base")
    t = float(inp.params["t"])

    def fn(xs: list[torch.Tensor], rows: slice) -> torch.Tensor:
        a, b = xs  # base, model
        w = torch.sub(a, b).abs_().clamp_(min=_DIFF_FLOOR)
        w = torch.div(t, w, out=w).clamp_(0, 1)
        # w * b + (1 - w) * a, in mergekit's order of rounding
        return b.mul_(w).add_(w.neg_().add_(1).mul_(a))

    return elementwise(inp, fn, indices=[inp.base_index, inp.others[0]])


METHODS: tuple[MethodSpec, ...] = (
    MethodSpec(
        name="nearswap",
        description="Swap in the other model's values where they lie within t of the base's.",
        merge=nearswap_merge,
        params=(ParamSpec("t", REQUIRED, help="Distance scale: differences up to t swap fully."),),
        base="required",
        min_models=2,
        max_models=2,
        min_others=1,
        max_others=1,
        reference="https://huggingface.co/alchemonaut/QuartetAnemoi-70B-t0.0001",
    ),
)
