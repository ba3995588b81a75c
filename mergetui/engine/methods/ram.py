"""RAM (Reinforced Agent Merging): keep deltas only one model makes, average the shared ones.

Per element, the task vectors larger than epsilon in magnitude count as contributions; an
element one model alone changes takes that model's delta, one several change takes the mean
of their deltas. ramplus_tl also scales each model's unique deltas up by how much of its
change the others share (rho = shared / unique, measured over the whole tensor).
"""

from __future__ import annotations

from functools import partial

import torch

from mergetui.engine.methods.base import (
    MergeInputs,
    MethodSpec,
    ParamSpec,
    chunked_sum,
    elementwise,
)


def _contributions(xs: list[torch.Tensor], eps: float) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Task vectors zeroed where |delta| <= eps, and per element how many models contribute."""
    b = xs[0]
    tvs, count = [], None
    for x in xs[1:]:
        d = x.sub_(b)
        nz = torch.gt(d.abs(), eps).to(d.dtype)
        tvs.append(d.mul_(nz))
        count = nz if count is None else count.add_(nz)
    assert count is not None
    return tvs, count


def ram_merge(plus: bool, inp: MergeInputs) -> torch.Tensor:
    """base + unique deltas (times lambda_i for ramplus_tl) + the mean of overlapping deltas."""
    if inp.base_index is None:
        raise ValueError(f"{inp.name}: ram needs a base model")
    indices = [inp.base_index] + inp.others
    n = len(inp.others)
    if n == 0:
        return elementwise(inp, lambda xs, rows: xs[0], indices=indices)
    eps = float(inp.params.get("epsilon", 1e-5))
    lambdas = [1.0] * n
    if plus:
        r, alpha = float(inp.params.get("r", 0.1)), float(inp.params.get("alpha", 0.2))

        def counts(xs: list[torch.Tensor], rows: slice) -> torch.Tensor:
            tvs, count = _contributions(xs, eps)
            shared = torch.gt(count, 1).to(count.dtype)
            unique = torch.eq(count, 1).to(count.dtype)
            nz = [torch.ne(t, 0).to(t.dtype) for t in tvs]
            f64 = torch.float64  # counts past 2^24 stay exact
            return torch.stack([torch.stack([(m * shared).sum(dtype=f64), (m * unique).sum(dtype=f64)]) for m in nz])

        c = chunked_sum(inp, counts, indices=indices)
        # rho = shared / unique (unique floored at epsilon), clamped to [0, alpha]
        lambdas = [1.0 + r * min(max(float(s) / max(float(u), eps), 0.0), alpha) for s, u in c.tolist()]

    def fn(xs: list[torch.Tensor], rows: slice) -> torch.Tensor:
        tvs, count = _contributions(xs, eps)
        unique = torch.eq(count, 1)
        div = count.clamp_(min=1)
        acc: torch.Tensor | None = None
        for t, lam in zip(tvs, lambdas):
            # a unique delta times lambda_i; an overlapping one divided by the count of contributors
            term = torch.where(unique, t * lam, t / div) if lam != 1.0 else t.div_(div)
            acc = term if acc is None else acc.add_(term)
        assert acc is not None
        return acc.add_(xs[0])

    return elementwise(inp, fn, indices=indices)


_EPSILON = ParamSpec("epsilon", 1e-5, help="Deltas at most this large count as unchanged.")

METHODS: tuple[MethodSpec, ...] = (
    MethodSpec(
        name="ram",
        description="Keep deltas only one model makes; average the deltas several models share.",
        merge=partial(ram_merge, False),
        params=(_EPSILON,),
        base="required",
        min_models=1,
        reference="https://arxiv.org/abs/2601.13572",
    ),
    MethodSpec(
        name="ramplus_tl",
        description="RAM, with each model's unique deltas boosted by how much of its change is shared.",
        merge=partial(ram_merge, True),
        params=(
            ParamSpec("r", 0.1, help="Boost of unique deltas per unit of rho."),
            ParamSpec("alpha", 0.2, help="Cap on rho = shared / unique contributions."),
            _EPSILON,
        ),
        base="required",
        min_models=1,
        reference="https://arxiv.org/abs/2601.13572",
    ),
)
