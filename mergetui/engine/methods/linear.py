"""Linear: a weighted average of the inputs (model soups)."""

from __future__ import annotations

import torch

from mergetui.engine.methods.base import MergeInputs, MethodSpec, ParamSpec, REQUIRED, elementwise


def linear_merge(inp: MergeInputs) -> torch.Tensor:
    """Sum of weight_i * x_i over every input, divided by the sum of weights when normalize is on."""
    # mergekit ignores the base for linear: a base in the inputs is just one more model
    idx = list(range(len(inp.tensors)))
    weights = [float(w) for w in inp.values("weight", idx)]
    normalize = bool(inp.params.get("normalize", True))
    total = sum(weights)
    if normalize and total == 0:
        # mergekit divides by zero here and writes NaN/inf; an error names the real problem
        raise ValueError(f"{inp.name}: linear weights sum to 0 with normalize: true")

    def fn(xs: list[torch.Tensor], rows: slice) -> torch.Tensor:
        # accumulate then divide, the same order of rounding as mergekit
        acc = xs[0].mul_(weights[0])
        for x, w in zip(xs[1:], weights[1:]):
            acc.add_(x, alpha=w)
        return acc.div_(total) if normalize else acc

    return elementwise(inp, fn)


METHODS: tuple[MethodSpec, ...] = (
    MethodSpec(
        name="linear",
        description="Weighted average of all models (model soup).",
        merge=linear_merge,
        params=(
            ParamSpec("weight", REQUIRED, per_model=True, help="Relative weight of this model."),
            ParamSpec("normalize", True, type=bool, help="Divide by the sum of weights."),
        ),
        base="ignored",
        min_models=1,
        reference="https://arxiv.org/abs/2203.05482",
    ),
)
