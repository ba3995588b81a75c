"""Arcee Fusion: take the model's value only where its change from the base is an outlier in importance.

Importance of an element is |model - base| times the KL divergence between the softmaxes of
its row (last-dim vector) in the model and in the base. Elements whose importance reaches
median + 1.5 * IQR take the model's value; the rest keep the base's.

Passes: the per-row KL values (one number per row, kept), exact quartiles of the importance
by top-k thresholds (no sort), then the merge. mergekit sorts a random sample of 1M values
for tensors larger than that; these quartiles are exact at every size, hence deterministic.
"""

from __future__ import annotations

import torch

from mergetui.engine.methods.base import MergeInputs, MethodSpec, elementwise, top_k

_KL_EPS = 1e-8  # added to both softmaxes before the log
_IQR_SCALE = 1.5  # threshold = median + 1.5 * (q3 - q1), the usual outlier fence


def _row_kl(x: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """KL(softmax(x) || softmax(b)) of each last-dim vector, keeping that dim (size 1)."""
    p = torch.softmax(x, dim=-1).add_(_KL_EPS)
    q = torch.softmax(b, dim=-1).add_(_KL_EPS)
    return (p * torch.log(p / q)).sum(dim=-1, keepdim=True)


def arcee_fusion_merge(inp: MergeInputs) -> torch.Tensor:
    """base + (model - base) where importance >= median + 1.5 * IQR, else base."""
    if inp.base_index is None or len(inp.others) != 1:
        raise ValueError(f"{inp.name}: arcee_fusion needs exactly two inputs, one of them the base")
    pair = [inp.base_index, inp.others[0]]
    shape, n = inp.shape, inp.shape.numel()
    if n == 0:
        return torch.empty(shape, dtype=inp.out_dtype)
    per_row = len(shape) >= 2  # a 0-d or 1-D tensor is one vector with one KL value
    kl = torch.empty((*shape[:-1], 1) if per_row else (), dtype=inp.compute_dtype, device=inp.device)
    negative = 0  # importances below zero: KL of near-identical rows can round below 0
    for rows in inp.vector_chunks():
        b, x = (inp.load(i, rows, writable=True) for i in pair)
        k = _row_kl(x, b)
        if per_row:
            kl[rows] = k
        else:
            kl.copy_(k.reshape(()))
        if bool((k < 0).any()):
            negative += int(torch.count_nonzero(x.sub_(b).abs_().mul_(k) < 0))
        del b, x, k

    def importance(rows: slice) -> torch.Tensor:
        b, x = (inp.load(i, rows, writable=True) for i in pair)
        return x.sub_(b).abs_().mul_(kl[rows] if per_row else kl)

    # 0-based ascending ranks of the quartiles, mergekit's floor(q * (n - 1))
    ranks = [(n - 1) // 4, (n - 1) // 2, 3 * (n - 1) // 4]
    # rank r among the n - m non-negative values is the (n - r)-th largest of max(v, 0); among
    # the m negative ones (r < m) it is minus the (r + 1)-th largest of max(-v, 0)
    pos = [n - r for r in ranks if r >= negative]
    neg = [r + 1 for r in ranks if r < negative]

    def series(rows: slice) -> list[torch.Tensor]:
        v = importance(rows)
        return [v.clamp(min=0), v.neg_().clamp_(min=0)] if neg else [v.clamp_(min=0)]

    tops = top_k(series, shape, [pos, neg] if neg else [pos], inp.chunk_elements)
    value = {("+", t.k): t.threshold for t in tops[0]}
    if neg:
        value.update({("-", t.k): -t.threshold for t in tops[1]})
    q1, q2, q3 = (value[("+", n - r)] if r >= negative else value[("-", r + 1)] for r in ranks)
    # the fence in the compute dtype, in mergekit's order of rounding
    q = torch.tensor([q1, q2, q3], dtype=inp.compute_dtype)
    threshold = float(q[1] + _IQR_SCALE * (q[2] - q[0]))

    def fn(xs: list[torch.Tensor], rows: slice) -> torch.Tensor:
        b, x = xs
        d = x.sub_(b)
        keep = torch.ge(d.abs().mul_(kl[rows] if per_row else kl), threshold).to(d.dtype)
        return d.mul_(keep).add_(b)

    return elementwise(inp, fn, indices=pair)


METHODS: tuple[MethodSpec, ...] = (
    MethodSpec(
        name="arcee_fusion",
        description="Take the model's values only where its change is an outlier in KL-weighted importance.",
        merge=arcee_fusion_merge,
        params=(),
        base="required",
        min_models=2,
        max_models=2,
        min_others=1,
        max_others=1,
        reference="https://arcee.ai",
    ),
)
