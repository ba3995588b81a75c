"""mergekit's generalized task arithmetic: task_arithmetic, ties, dare_*, breadcrumbs*, della*.

Each model contributes its delta from the base, optionally sparsified (magnitude top-k, DARE's
random drop, breadcrumbs' outlier cut, DELLA's rank-weighted drop) and L1-rescaled, times its
weight. With a sign consensus (TIES) only the deltas agreeing with the sign of their weighted
sum count, and normalize divides by the weights that counted; without one, normalize divides
by the sum of weights. The sum is scaled by lambda and added to the base.

Passes over the data, all in row chunks: top-k thresholds (magnitude rules), the L1 norms
(rescale), then the merge itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Literal

import torch

from mergetui.engine.methods.base import REQUIRED, MergeInputs, MethodSpec, ParamSpec, elementwise, top_k
from mergetui.engine.methods.sparsify import (
    KeepDella,
    KeepNone,
    KeepRandom,
    KeepRule,
    KeepTop,
    magnitude_ks,
    outlier_ks,
    rescale_factors,
)

Sparsify = Literal["magnitude", "random", "outliers", "della"] | None


@dataclass(frozen=True)
class Variant:
    """One member of the family: its sparsification, consensus and defaults."""

    name: str
    description: str
    sparsify: Sparsify
    consensus: bool
    normalize: bool
    rescale: bool
    reference: str


def _seeds(inp: MergeInputs, n: int) -> list[int]:
    """One seed per model, drawn from the tensor's generator (seed 0 if the caller gave none)."""
    g = inp.generator if inp.generator is not None else torch.Generator(device=inp.device).manual_seed(0)
    return [int(s) for s in torch.randint(0, 2**62, (n,), generator=g, device=g.device).tolist()]


def _rules(variant: Variant, inp: MergeInputs, deltas) -> list[KeepRule]:
    """The keep rule of every non-base model, thresholds found in one pass over all of them."""
    n = len(inp.others)
    numel = inp.shape.numel()
    densities = [float(d) for d in inp.values("density")]
    rules: list[KeepRule | None] = [None] * n
    if variant.sparsify is None:
        return [KeepRule() for _ in range(n)]
    if variant.sparsify in ("random", "della"):
        seeds = _seeds(inp, n)
        eps = [float(e) for e in inp.values("epsilon")] if variant.sparsify == "della" else [0.0] * n
        for i, (d, s, e) in enumerate(zip(densities, seeds, eps)):
            if d >= 1:
                rules[i] = KeepRule()
            elif d <= 0:
                rules[i] = KeepNone()
            elif variant.sparsify == "random":
                rules[i] = KeepRandom(d, s, inp.device)
            else:
                if not (0 < d - e and d + e < 1):
                    raise ValueError(f"{inp.name}: della needs 0 < density - epsilon and density + epsilon < 1")
                rules[i] = KeepDella(d, e, s, inp.device)
        return rules  # type: ignore[return-value]

    if variant.sparsify == "magnitude":
        ks = [magnitude_ks(d, numel) for d in densities]
    else:
        gammas = [float(g) for g in inp.values("gamma")]
        ks = [outlier_ks(d, g, numel) for d, g in zip(densities, gammas)]
    todo = []
    for i, k in enumerate(ks):
        if k is None:
            rules[i] = KeepRule()
        elif k[1] <= 0:
            rules[i] = KeepNone()
        else:
            todo.append(i)
    if todo:
        tops = top_k(lambda rows: [d.abs_() for d in deltas(rows, todo)], inp.shape,
                     [list(ks[i]) for i in todo], inp.chunk_elements)  # type: ignore[arg-type]
        for i, (lower, upper) in zip(todo, tops):
            rules[i] = KeepTop(upper, lower)
    return rules  # type: ignore[return-value]


def gta_merge(variant: Variant, inp: MergeInputs) -> torch.Tensor:
    """Merge one tensor with the given family member (see the module docstring)."""
    if inp.base_index is None:
        raise ValueError(f"{inp.name}: {variant.name} needs a base model")
    base, others = inp.base_index, inp.others
    chunks = inp.vector_chunks() if variant.sparsify == "della" else inp.chunks()
    if not others:
        return elementwise(inp, lambda xs, rows: xs[0], indices=[base], chunks=chunks)

    def deltas(rows: slice, which: list[int]) -> list[torch.Tensor]:
        b = inp.load(base, rows)
        return [inp.load(others[i], rows, writable=True).sub_(b) for i in which]

    rules = _rules(variant, inp, deltas)
    rescale = bool(inp.params.get("rescale", variant.rescale))
    factors = rescale_factors(rules, deltas, chunks) if rescale else [1.0] * len(rules)
    weights = [float(w) for w in inp.values("weight")]
    lam = float(inp.params.get("lambda", 1.0))
    normalize = bool(inp.params.get("normalize", variant.normalize))
    live = [i for i, r in enumerate(rules) if not r.keeps_none]  # a zero delta adds and counts nothing
    coefs = [weights[i] * factors[i] for i in live]
    indices = [base] + [others[i] for i in live]

    if not variant.consensus:
        total = sum(weights)  # every model's weight, pruned to nothing or not, as in mergekit
        scale = lam / total if normalize and abs(total) >= 1e-8 else lam
        coefs = [c * scale for c in coefs]

    def merge_chunk(selectors, xs: list[torch.Tensor], rows: slice) -> torch.Tensor:
        b = xs[0]
        terms = []
        for sel, rule, c, x in zip(selectors, (rules[i] for i in live), coefs, xs[1:]):
            d = x.sub_(b)
            if not rule.keeps_all:
                d.mul_(sel(d))
            terms.append(d.mul_(c))
        if not terms:
            return b
        if not variant.consensus:
            acc = terms[0]
            for t in terms[1:]:
                acc.add_(t)
            return acc.add_(b)
        return _consensus(terms, [weights[i] for i in live], normalize, lam).add_(b)

    selectors = [rules[i].start() for i in live]
    return elementwise(inp, partial(merge_chunk, selectors), indices=indices, chunks=chunks)


def _consensus(terms: list[torch.Tensor], weights: list[float], normalize: bool, lam: float) -> torch.Tensor:
    """TIES sign election on weighted deltas: sum those agreeing with the sign of their total.

    Written with float arithmetic only (no bool masks, whose float paths are slow in torch):
    with m = +-1 the majority sign, relu(m * t) is |t| where t agrees with m and 0 elsewhere,
    zero (pruned) deltas included, so the agreeing sum is m * sum relu(m * t).
    """
    total = terms[0].clone()
    for t in terms[1:]:
        total.add_(t)
    # copysign(1, total): +1 where total >= +0, as mergekit's (sum >= 0) elects; a -0.0 total
    # only arises when every term is +-0, where nothing agrees either way
    majority = torch.copysign(torch.ones((), dtype=total.dtype, device=total.device), total, out=total)
    mixed: torch.Tensor | None = None
    divisor: torch.Tensor | None = None
    for t, w in zip(terms, weights):
        agreeing = t.mul_(majority).clamp_(min=0)
        if normalize:
            share = torch.sign(agreeing).mul_(w)  # w where this model agrees, else 0
            divisor = share if divisor is None else divisor.add_(share)
        mixed = agreeing if mixed is None else mixed.add_(agreeing)
    assert mixed is not None
    mixed.mul_(majority)
    if divisor is not None:
        # where no weight counted, divide by 1 (mergekit's divisor[divisor == 0] = 1); adding
        # exactly 0.0 elsewhere leaves the divisor bit for bit
        mixed.div_(divisor.add_(torch.eq(divisor, 0, out=majority)))
    return mixed.mul_(lam) if lam != 1 else mixed


def _params(v: Variant) -> tuple[ParamSpec, ...]:
    """The parameters of a family member, with mergekit's names and defaults."""

    def model(name: str, default, help: str) -> ParamSpec:
        return ParamSpec(name, default, per_model=True, non_base=True, help=help)

    params = [
        model("weight", REQUIRED, "Scale of this model's task vector."),
        model("density", 1.0, "Fraction of the task vector kept."),
    ]
    if v.sparsify == "outliers":
        params.append(model("gamma", 0.01, "Fraction of the largest deltas cut as outliers."))
    if v.sparsify == "della":
        params.append(model("epsilon", 0.15, "Keep probability spread: density ± epsilon."))
    params += [
        ParamSpec("normalize", v.normalize, type=bool, help="Divide by the sum of (agreeing) weights."),
        ParamSpec("rescale", v.rescale, type=bool, help="Rescale kept deltas to the original L1 norm."),
        ParamSpec("lambda", 1.0, help="Scale of the merged task vector."),
        ParamSpec("int8_mask", False, type=bool, help="mergekit memory option; no effect here."),
    ]
    return tuple(params)


VARIANTS: tuple[Variant, ...] = (
    Variant("task_arithmetic", "Add the weighted task vectors (model - base) to the base.",
            None, False, False, False, "https://arxiv.org/abs/2212.04089"),
    Variant("ties", "Keep each task vector's largest entries, elect signs, average the agreeing ones.",
            "magnitude", True, True, False, "https://arxiv.org/abs/2306.01708"),
    Variant("dare_ties", "Randomly drop task-vector entries, rescale, then TIES sign election.",
            "random", True, False, True, "https://arxiv.org/abs/2311.03099"),
    Variant("dare_linear", "Randomly drop task-vector entries, rescale, and add them up.",
            "random", False, False, True, "https://arxiv.org/abs/2311.03099"),
    Variant("breadcrumbs", "Cut the largest outliers and the smallest entries of each task vector.",
            "outliers", False, False, False, "https://arxiv.org/abs/2312.06795"),
    Variant("breadcrumbs_ties", "Breadcrumbs pruning followed by TIES sign election.",
            "outliers", True, False, False, "https://arxiv.org/abs/2312.06795"),
    Variant("della", "Drop entries with probability by magnitude rank, rescale, TIES sign election.",
            "della", True, True, True, "https://arxiv.org/abs/2406.11617"),
    Variant("della_linear", "Drop entries with probability by magnitude rank, rescale, add them up.",
            "della", False, False, True, "https://arxiv.org/abs/2406.11617"),
)

METHODS: tuple[MethodSpec, ...] = tuple(
    MethodSpec(
        name=v.name,
        description=v.description,
        merge=partial(gta_merge, v),
        params=_params(v),
        base="required",
        min_models=1,
        randomized=v.sparsify in ("random", "della"),
        reference=v.reference,
    )
    for v in VARIANTS
)
