"""SCE: Select (high-variance elements), Calculate (per-model weights), Erase (minority signs).

Passes, all in row chunks: when select_topk < 1, a count of the elements whose variance across
the task vectors is nonzero, then an exact top-k threshold on that variance (top_k, no sort);
the mean square of each (selected) task vector; and the merge itself.
"""

from __future__ import annotations

from typing import Callable

import torch

from mergetui.engine.methods.base import (
    MergeInputs,
    MethodSpec,
    ParamSpec,
    chunked_sum,
    elementwise,
    top_k,
)

_WEIGHT_FLOOR = 1e-6  # mean squares summing below this: every model weighs the same
_DIVISOR_FLOOR = 1e-6  # the agreeing weights' sum is clamped to at least this


def _variance(tvs: list[torch.Tensor]) -> torch.Tensor:
    """Per-element population variance across the task vectors, bit for bit torch.var's.

    torch.var (mergekit's) runs Welford's recurrence in float64 on CPU; the same recurrence
    written elementwise gives the same bits about 10x faster than torch.var over dim 0.
    """
    mean = tvs[0].to(torch.float64, copy=True)
    m2: torch.Tensor | None = None
    for j, x in enumerate(tvs[1:], start=2):
        x = x.to(torch.float64, copy=True)
        delta = x - mean
        mean.add_(delta / j)
        step = delta.mul_(x.sub_(mean))
        m2 = step if m2 is None else m2.add_(step)  # 0 + step is step: no zero tensor needed
    if m2 is None:
        return torch.zeros_like(tvs[0])
    return m2.div_(len(tvs)).to(tvs[0].dtype)


def sce_merge(inp: MergeInputs) -> torch.Tensor:
    """base + the weighted mean of the selected task vectors that agree with the elected sign."""
    if inp.base_index is None:
        raise ValueError(f"{inp.name}: sce needs a base model")
    base, others = inp.base_index, inp.others
    indices = [base] + others
    n = len(others)

    def keep_base() -> torch.Tensor:
        return elementwise(inp, lambda xs, rows: xs[0], indices=[base])

    if not others or inp.shape.numel() == 0:
        return keep_base()

    def task_vectors(xs: list[torch.Tensor]) -> list[torch.Tensor]:
        return [x.sub_(xs[0]) for x in xs[1:]]

    density = float(inp.params.get("select_topk", 1.0))
    if density <= 0:
        return keep_base()  # nothing selected: every task vector is zero
    selection: Callable[[], Callable[[torch.Tensor], torch.Tensor]] | None = None
    if density < 1:
        # a bool mask summed as bytes: several times faster than count_nonzero on CPU
        nonzero = int(chunked_sum(
            inp, lambda xs, rows: torch.ne(_variance(task_vectors(xs)), 0).view(torch.uint8).sum(dtype=torch.int64),
            indices=indices,
        ))
        k = int(nonzero * density)
        if k == 0:
            return keep_base()

        def variances(rows: slice) -> list[torch.Tensor]:
            return [_variance(task_vectors([inp.load(i, rows, writable=True) for i in indices]))]

        # the k largest variances, exactly (ties in index order); all are > 0 as k <= nonzero
        selection = top_k(variances, inp.shape, [[k]], inp.chunk_elements)[0][0].selector

    def selector() -> Callable[[list[torch.Tensor]], list[torch.Tensor]]:
        """A fresh pass over the chunks, in order: inputs to their selected task vectors."""
        select = selection() if selection is not None else None

        def apply(xs: list[torch.Tensor]) -> list[torch.Tensor]:
            tvs = task_vectors(xs)
            if select is not None:
                mask = select(_variance(tvs))
                tvs = [t.mul_(mask) for t in tvs]
            return tvs

        return apply

    # Calculate: each model's weight is its task vector's mean square, normalized to sum to 1
    measured = selector()
    squares = chunked_sum(
        inp, lambda xs, rows: torch.stack([t.reshape(-1).dot(t.reshape(-1)) for t in measured(xs)]), indices=indices
    )
    means = squares / inp.shape.numel()
    total = float(means.sum())
    weights = [1.0 / n] * n if abs(total) < _WEIGHT_FLOOR else [float(m) / total for m in means]

    # Erase: per element, only task vectors with the sign of their (unweighted) sum count
    merged = selector()

    def merge_chunk(xs: list[torch.Tensor], rows: slice) -> torch.Tensor:
        b = xs[0]
        tvs = merged(xs)
        majority = tvs[0].clone()
        for t in tvs[1:]:
            majority.add_(t)
        # +1 where the sum is >= 0 (mergekit's election), else -1
        majority = torch.where(majority >= 0, 1.0, -1.0).to(majority.dtype)
        num: torch.Tensor | None = None
        den: torch.Tensor | None = None
        for t, w in zip(tvs, weights):
            # w where sign(t) is the majority's (a zero t agrees with neither), else 0
            share = torch.gt(t * majority, 0).to(t.dtype).mul_(w)
            num = t.mul_(share) if num is None else num.add_(t.mul_(share))
            den = share if den is None else den.add_(share)
        assert num is not None and den is not None
        return num.div_(den.clamp_(min=_DIVISOR_FLOOR)).add_(b)

    return elementwise(inp, merge_chunk, indices=indices)


METHODS: tuple[MethodSpec, ...] = (
    MethodSpec(
        name="sce",
        description="Keep high-variance elements, weight models by task-vector energy, drop minority signs.",
        merge=sce_merge,
        params=(
            ParamSpec("select_topk", 1.0, help="Fraction of elements kept, by variance across models."),
            ParamSpec("int8_mask", False, type=bool, help="mergekit memory option; no effect here."),
        ),
        base="required",
        min_models=1,
        reference="https://arxiv.org/abs/2408.07990",
    ),
)
