"""Multi-SLERP: barycentric interpolation of any number of models on a hypersphere.

Every vector the method forms (unit vectors, their weighted mean, tangents, the result) is a
linear combination of the inputs (or of their deltas from the base). So one pass collects the
Gram matrix of the inputs in float64, the spherical math runs on the n x n matrix, and a
second pass writes out = base + sum_i k_i * x_i. Nothing bigger than a chunk is held.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from mergetui.engine.methods.base import (
    REQUIRED,
    MergeInputs,
    MethodSpec,
    ParamSpec,
    chunked_sum,
    elementwise,
)


def gram(inp: MergeInputs, indices: Sequence[int], base: int | None = None) -> torch.Tensor:
    """Float64 Gram matrix (pairwise dot products) of the inputs at `indices`, minus `base` if given."""
    order = list(indices) + ([base] if base is not None else [])
    n = len(indices)

    def fn(xs: list[torch.Tensor], rows: slice) -> torch.Tensor:
        vs = torch.stack([x.reshape(-1) for x in xs[:n]])
        if base is not None:
            vs.sub_(xs[n].reshape(1, -1))
        return vs @ vs.T

    return chunked_sum(inp, fn, indices=order).cpu()  # the n x n math that follows runs on the CPU


def combine(inp: MergeInputs, indices: Sequence[int], coefs: Sequence[float], base: int | None = None) -> torch.Tensor:
    """out = sum_i coefs_i * x_i, or base + sum_i coefs_i * (x_i - base) with a base."""
    order = list(indices) + ([base] if base is not None else [])
    n = len(indices)

    def fn(xs: list[torch.Tensor], rows: slice) -> torch.Tensor:
        b = xs[n] if base is not None else None
        acc: torch.Tensor | None = None
        for x, c in zip(xs[:n], coefs):
            d = x.sub_(b) if b is not None else x
            acc = d.mul_(c) if acc is None else acc.add_(d, alpha=c)
        assert acc is not None
        return acc.add_(b) if b is not None else acc

    return elementwise(inp, fn, indices=order)


def multislerp_coefficients(g: torch.Tensor, weights: torch.Tensor, eps: float) -> torch.Tensor | None:
    """k with multislerp(x) = sum_i k_i x_i, from the Gram matrix g and the weights (float64).

    None when the weighted mean of the unit vectors vanishes (antipodal inputs, or all zero).
    """
    norms = g.diagonal().clamp(min=0).sqrt()
    u = weights / (norms + eps)  # mean = sum_i u_i x_i: the weighted mean of the unit vectors
    mean_norm = math.sqrt(max(float(u @ g @ u), 0.0))
    if mean_norm < eps:
        return None
    c = u / mean_norm  # the unit mean, sum_i c_i x_i
    dots = (g @ c) / (norms + eps)  # each unit vector . unit mean
    # weighted sum of the tangents (unit_i - dot_i * mean): zero in exact arithmetic, kept so the
    # exponential map below is the same formula as mergekit's
    t = u - float(weights @ dots) * c
    tn = math.sqrt(max(float(t @ g @ t), 0.0)) + eps
    avg_norm = float(weights @ norms)
    return avg_norm * (math.cos(tn) * c + (math.sin(tn) / tn) * t)


def multislerp_merge(inp: MergeInputs) -> torch.Tensor:
    """Weighted spherical mean of the models (of their deltas if a base is given), at their weighted norm."""
    others = inp.others
    if not others:
        raise ValueError(f"{inp.name}: multislerp needs at least one model besides the base")
    if len(others) == 1:  # nothing to interpolate: the model itself, as mergekit
        return inp.tensors[others[0]].to(device="cpu", dtype=inp.out_dtype)
    weights = torch.tensor([float(w) for w in inp.values("weight")], dtype=torch.float64)
    if bool(inp.params.get("normalize_weights", True)):
        total = float(weights.sum())
        if total == 0:
            # mergekit divides by zero and writes NaN; an error names the real problem
            raise ValueError(f"{inp.name}: multislerp weights sum to 0 with normalize_weights: true")
        weights = weights / total
    if inp.shape.numel() == 0:
        return torch.empty(inp.shape, dtype=inp.out_dtype)
    eps = float(inp.params.get("eps", 1e-8))
    base = inp.base_index
    k = multislerp_coefficients(gram(inp, others, base), weights, eps)
    if k is None:
        # mergekit lerps here for two models and raises for more; the weighted sum is the same
        # answer for two and a usable one for more (all-zero deltas give the base back)
        k = weights
    return combine(inp, others, [float(c) for c in k], base)


METHODS: tuple[MethodSpec, ...] = (
    MethodSpec(
        name="multislerp",
        description="Spherical weighted mean of any number of models (of their deltas if a base is given).",
        merge=multislerp_merge,
        params=(
            ParamSpec("weight", REQUIRED, per_model=True, non_base=True, help="Relative weight of this model."),
            ParamSpec("normalize_weights", True, type=bool, help="Divide the weights by their sum."),
            ParamSpec("eps", 1e-8, help="Small constant added to norms for stability."),
        ),
        base="optional",
        min_models=1,
        min_others=1,
        reference="https://goddard.blog/posts/multislerp-wow-what-a-cool-idea",
    ),
)
