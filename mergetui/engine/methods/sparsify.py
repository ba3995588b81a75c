"""Sparsification of task vectors (deltas from the base) for the task-arithmetic family.

A KeepRule decides which elements of one model's delta survive. Rules are applied chunk by
chunk, in the same chunk order on every pass, so a pass that measures (the rescale norms) and
the pass that merges see identical masks without storing them: magnitude rules hold exact
top-k thresholds, random rules re-seed their own generator at the start of each pass.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from mergetui.engine.methods.base import TopK

Selector = Callable[[torch.Tensor], torch.Tensor]  # delta chunk -> keep mask, 1.0 / 0.0 in its dtype


class KeepRule:
    """Keep every element (no sparsification, or density >= 1)."""

    keeps_all = True
    keeps_none = False

    def start(self) -> Selector:
        """A fresh selector for one pass over the chunks, in order."""
        return torch.ones_like


class KeepNone(KeepRule):
    """Keep nothing (density <= 0): the model contributes a zero delta."""

    keeps_all = False
    keeps_none = True

    def start(self) -> Selector:
        """A fresh selector for one pass over the chunks, in order."""
        return torch.zeros_like


class KeepTop(KeepRule):
    """Keep the `upper.k` largest magnitudes except the `lower.k` largest (magnitude, breadcrumbs)."""

    keeps_all = False

    def __init__(self, upper: TopK, lower: TopK | None = None):
        self.upper = upper
        self.lower = lower if lower is not None and lower.k > 0 else None

    def start(self) -> Selector:
        """A fresh selector for one pass over the chunks, in order."""
        up = self.upper.selector()
        if self.lower is None:
            return lambda d: up(d.abs())
        low = self.lower.selector()

        def select(d: torch.Tensor) -> torch.Tensor:
            a = d.abs()
            return up(a).sub_(low(a))  # the lower set lies inside the upper one

        return select


class KeepRandom(KeepRule):
    """Keep each element independently with probability `density` (DARE)."""

    keeps_all = False

    def __init__(self, density: float, seed: int, device: torch.device):
        self.density, self.seed, self.device = density, seed, device

    def _generator(self) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed(self.seed)

    def start(self) -> Selector:
        """A fresh selector for one pass over the chunks, in order."""
        g = self._generator()

        def select(d: torch.Tensor) -> torch.Tensor:
            u = torch.rand(d.shape, generator=g, device=d.device, dtype=torch.float32)
            return torch.lt(u, self.density, out=u).to(d.dtype)

        return select


class KeepDella(KeepRandom):
    """Keep with a probability rising linearly with magnitude rank along dim 1 (DELLA's MagPrune).

    Ranks run along dim 1 (a 1-D tensor is one row), so chunks must hold whole dim-1 extents:
    row chunks along dim 0 of a tensor with >= 2 dims, or the whole of a 1-D tensor.
    """

    def __init__(self, density: float, epsilon: float, seed: int, device: torch.device):
        super().__init__(density, seed, device)
        self.epsilon = epsilon

    def start(self) -> Selector:
        """A fresh selector for one pass over the chunks, in order."""
        g = self._generator()

        def select(d: torch.Tensor) -> torch.Tensor:
            a = d.abs().unsqueeze(0) if d.ndim == 1 else d.abs()
            n = a.shape[1]
            # ties rank in index order; the bits of non-negative floats sort like the floats, and
            # an int32 sort is markedly faster than a float one
            keys = a.view(torch.int32) if a.dtype == torch.float32 else a
            order = torch.argsort(keys, dim=1, stable=True)
            shape = [1] * a.ndim
            shape[1] = n
            ranks = torch.empty_like(order).scatter_(
                1, order, torch.arange(n, device=a.device).reshape(shape).expand_as(order)
            )
            del order
            # ranks are 0..n-1 in every row, so mergekit's (r - min) / (max - min) is r / (n - 1);
            # a one-element row (0/0 there) gets the middle probability, density
            rank_norm = ranks.to(torch.float32).div_(n - 1) if n > 1 else torch.full(a.shape, 0.5, device=a.device)
            del ranks
            probs = rank_norm.mul_(2 * self.epsilon).add_(self.density - self.epsilon)
            u = torch.rand(a.shape, generator=g, device=a.device, dtype=torch.float32)
            return torch.lt(u, probs, out=u).reshape(d.shape).to(d.dtype)

        return select


def magnitude_ks(density: float, numel: int) -> tuple[int, int] | None:
    """(lower, upper) top-k counts for TIES magnitude pruning; None when nothing is pruned."""
    if density >= 1:
        return None
    if density <= 0 or numel == 0:
        return 0, 0
    # mergekit keeps at least one element for any positive density
    return 0, max(1, int(density * numel))


def outlier_ks(density: float, gamma: float, numel: int) -> tuple[int, int] | None:
    """(lower, upper) top-k counts for breadcrumbs: drop the `lower` largest, keep up to `upper`."""
    if density >= 1:
        return None
    keep = max(0, int(density * numel))
    top = max(0, int(gamma * numel))
    # gamma*N < 1 drops no outliers and keeps the top `keep` (mergekit <= 0.1.4 sliced [n:-0] and zeroed the delta)
    bottom = max(0, numel - keep - top)  # the outlier cut shrinks when density + gamma > 1
    drop = numel - bottom - keep
    return drop, drop + keep


def rescale_factors(
    rules: Sequence[KeepRule],
    deltas: Callable[[slice, list[int]], list[torch.Tensor]],
    chunks: Sequence[slice],
    eps: float = 1e-7,
) -> list[float]:
    """Per rule, sum|delta| / sum|kept delta| (mergekit's L1 rescale); 1 where either is below eps.

    `deltas(rows, indices)` gives fresh delta chunks of the rules at `indices`.
    """
    active = [i for i, r in enumerate(rules) if not (r.keeps_all or r.keeps_none)]
    factors = [1.0] * len(rules)
    if not active:
        return factors
    selectors = {i: rules[i].start() for i in active}
    sums = torch.zeros(len(active), 2, dtype=torch.float64)
    for rows in chunks:
        ds = deltas(rows, active)
        for j, i in enumerate(active):
            a = ds[j].abs_()  # the sign is irrelevant to every rule's mask and to the norms
            keep = selectors[i](a)
            sums[j, 0] += float(a.sum())
            sums[j, 1] += float(a.mul_(keep).sum())
        del ds
    for j, i in enumerate(active):
        before, after = float(sums[j, 0]), float(sums[j, 1])
        if before >= eps and after >= eps:
            factors[i] = before / after
    return factors
