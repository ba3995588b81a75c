"""Karcher mean: the Riemannian (geodesic) mean of the models' directions, at their mean norm.

mergekit iterates over whole flattened tensors, but every iterate is a unit-norm linear
combination of the inputs, and each step only needs dot products between such combinations.
So one pass collects the inputs' Gram matrix in float64, the fixed-point iteration runs on
n x n numbers, and one pass writes out = sum_i k_i * x_i.
"""

from __future__ import annotations

import math

import torch

from mergetui.engine.methods.base import MergeInputs, MethodSpec, ParamSpec
from mergetui.engine.methods.multislerp import combine, gram


def karcher_coefficients(g: torch.Tensor, max_iter: int, tol: float) -> torch.Tensor:
    """k with karcher(x) = sum_i k_i x_i, equal weights, from the Gram matrix g (float64)."""
    n = g.shape[0]
    alphas = torch.full((n,), 1.0 / n, dtype=torch.float64)
    norms = g.diagonal().clamp(min=0).sqrt()
    valid = [i for i in range(n) if float(norms[i]) > tol]
    if not valid:
        return torch.zeros(n, dtype=torch.float64)  # every input (near) zero: a zero tensor
    share = alphas[valid] / alphas[valid].sum()
    units = torch.zeros(n, n, dtype=torch.float64)  # row i: unit_i = x_i / |x_i| as coefficients
    for i in valid:
        units[i, i] = 1.0 / float(norms[i])

    def norm(c: torch.Tensor) -> float:
        return math.sqrt(max(float(c @ g @ c), 0.0))

    mean = sum(s * units[i] for s, i in zip(share, valid))
    mean_norm = norm(mean)
    # a vanishing Euclidean mean (antipodal inputs): start from the first direction instead
    mean = units[valid[0]].clone() if mean_norm < tol else mean / mean_norm
    for _ in range(max_iter):
        tangent = torch.zeros(n, dtype=torch.float64)
        gm = g @ mean
        for s, i in zip(share, valid):
            dot = min(1.0, max(-1.0, float(units[i] @ gm)))
            theta = math.acos(dot)
            if theta < tol:  # this direction is already at the mean
                continue
            # log map: the direction toward unit_i, scaled by its geodesic distance
            tangent += float(s) * (theta / math.sin(theta)) * (units[i] - dot * mean)
        tn = norm(tangent)
        if tn < tol:
            break
        mean = math.cos(tn) * mean + math.sin(tn) * (tangent / tn)  # exp map
        mn = norm(mean)
        if mn > tol:
            mean = mean / mn
    scale = float(alphas @ norms)  # every input's norm counts, the (near) zero ones too
    return scale * mean


def karcher_merge(inp: MergeInputs) -> torch.Tensor:
    """Karcher mean of every input, the base_model included (as in mergekit)."""
    idx = list(range(len(inp.tensors)))
    if len(idx) == 1:
        return inp.tensors[0].to(device="cpu", dtype=inp.out_dtype)
    if inp.shape.numel() == 0:
        return torch.empty(inp.shape, dtype=inp.out_dtype)
    max_iter = int(inp.params.get("max_iter", 10))
    tol = float(inp.params.get("tol", 1e-5))
    k = karcher_coefficients(gram(inp, idx), max_iter, tol)
    return combine(inp, idx, [float(c) for c in k])


METHODS: tuple[MethodSpec, ...] = (
    MethodSpec(
        name="karcher",
        description="Geodesic (Karcher) mean of all models' directions at their average norm.",
        merge=karcher_merge,
        params=(
            ParamSpec("max_iter", 10, type=int, help="Most fixed-point iterations."),
            ParamSpec("tol", 1e-5, help="Stop when the update is smaller than this."),
        ),
        # mergekit lists a base_model among the inputs whatever the method, and karcher averages
        # every input: "optional" makes the plan add an unlisted base the same way
        base="optional",
        min_models=1,
        reference="https://arxiv.org/abs/2603.04972",
    ),
)
