"""Model Stock: interpolate between the base and the models' average by the angle between their deltas."""

from __future__ import annotations

import torch

from mergetui.engine.methods.base import MergeInputs, MethodSpec, ParamSpec, chunked_sum, elementwise

_NORM_FLOOR = 1e-6  # the product of two delta norms is clamped to at least this
_SINGULAR = 1e-6  # |1 + (N-1) cos| below this: no finite estimate, keep the base


def _pair_dots(deltas: list[torch.Tensor], dim: int | None) -> list[torch.Tensor]:
    """Squared norms of each delta, then the dot of every pair i < j (whole-tensor or along `dim`)."""
    def dot(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        if dim is None:
            return torch.dot(p.reshape(-1), q.reshape(-1))
        return (p * q).sum(dim).to(torch.float64)

    n = len(deltas)
    return [dot(d, d) for d in deltas] + [dot(deltas[i], deltas[j]) for i in range(n) for j in range(i + 1, n)]


def stock_ratio(stats: list[torch.Tensor], n: int) -> torch.Tensor:
    """t = N cos / (1 + (N-1) cos), cos the mean pairwise cosine of the deltas (0 where singular)."""
    norms = [s.sqrt() for s in stats[:n]]
    dots = iter(stats[n:])
    cosines = []
    for i in range(n):
        for j in range(i + 1, n):
            cosines.append((next(dots) / (norms[i] * norms[j]).clamp(min=_NORM_FLOOR)).clamp(-1, 1))
    cos = torch.stack(cosines).mean(0)
    den = 1 + (n - 1) * cos
    singular = den.abs() < _SINGULAR
    return torch.where(singular, 0.0, n * cos / torch.where(singular, 1.0, den))


def model_stock_merge(inp: MergeInputs) -> torch.Tensor:
    """t * mean(models) + (1 - t) * base, t from the mean cosine between the models' deltas."""
    if inp.base_index is None or len(inp.others) < 2:
        raise ValueError(f"{inp.name}: model_stock needs a base and at least two other models")
    others, n = inp.others, len(inp.others)
    indices = others + [inp.base_index]

    def combine(xs: list[torch.Tensor], t: torch.Tensor | float) -> torch.Tensor:
        acc = xs[0]
        for x in xs[1:n]:
            acc.add_(x)
        # t/N * sum(models) + (1 - t) * base
        if isinstance(t, torch.Tensor):
            return acc.mul_(t / n).addcmul_(xs[n], 1 - t)
        return acc.mul_(t / n).add_(xs[n], alpha=1 - t)

    if not bool(inp.params.get("filter_wise", False)) or len(inp.shape) == 0:
        def flat_stats(xs: list[torch.Tensor], rows: slice) -> torch.Tensor:
            deltas = [x.sub(xs[n]) for x in xs[:n]]
            return torch.stack(_pair_dots(deltas, None))

        stats = chunked_sum(inp, flat_stats, indices=indices)
        t = float(stock_ratio(list(stats), n))
        return elementwise(inp, lambda xs, rows: combine(xs, t), indices=indices)

    # filter-wise: one ratio per last-dim vector (row), computed inside the chunk that holds it
    def per_row(xs: list[torch.Tensor], rows: slice) -> torch.Tensor:
        deltas = [x.sub(xs[n]) for x in xs[:n]]
        stats = [s.unsqueeze(-1) for s in _pair_dots(deltas, -1)]
        del deltas
        return combine(xs, stock_ratio(stats, n).to(inp.compute_dtype))

    return elementwise(inp, per_row, indices=indices, chunks=inp.vector_chunks())


METHODS: tuple[MethodSpec, ...] = (
    MethodSpec(
        name="model_stock",
        description="Average of the models pulled toward the base by how much their deltas agree.",
        merge=model_stock_merge,
        params=(ParamSpec("filter_wise", False, type=bool, help="One ratio per row instead of per tensor."),),
        base="required",
        min_others=2,
        reference="https://arxiv.org/abs/2403.19522",
    ),
)
