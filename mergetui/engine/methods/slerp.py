"""Spherical interpolation: slerp (base and one model) and nuslerp (two models, optional base).

Both reduce to out = ca * v0 + cb * v1 with coefficients from the angle between v0 and v1, so
each is a statistics pass (norms and a dot product, accumulated in float64) and then an
elementwise pass; nothing bigger than a chunk of float32 scratch per input is held.
"""

from __future__ import annotations

import math

import torch

from mergetui.engine.methods.base import MergeInputs, MethodSpec, ParamSpec, REQUIRED, chunked_sum, elementwise

SLERP_DOT_THRESHOLD = 0.9995  # above this |cos| slerp falls back to a plain lerp
_SLERP_EPS = 1e-8  # norms at or below this count as 1 (a zero tensor)
_NUSLERP_NORM_EPS = 1e-7  # nuslerp clamps norms to at least this
_NUSLERP_COLINEAR = 1e-16  # nuslerp lerps when 1 - cos^2 is at most this


def _flat_dots(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[a.a, b.b, a.b] of two chunks, as one tensor."""
    a, b = a.reshape(-1), b.reshape(-1)
    return torch.stack([torch.dot(a, a), torch.dot(b, b), torch.dot(a, b)])


def slerp_coefficients(t: float, aa: float, bb: float, ab: float) -> tuple[float, float]:
    """(ca, cb) with slerp(t, a, b) = ca * a + cb * b, from a.a, b.b and a.b."""
    na = math.sqrt(aa)
    nb = math.sqrt(bb)
    na = na if na > _SLERP_EPS else 1.0
    nb = nb if nb > _SLERP_EPS else 1.0
    cos = min(1.0, max(-1.0, ab / (na * nb)))
    if abs(cos) > SLERP_DOT_THRESHOLD:  # nearly (anti)parallel: the angle is ill-conditioned
        return 1.0 - t, t
    theta = math.acos(cos)
    s = math.sin(theta)
    return math.sin((1.0 - t) * theta) / s, math.sin(t * theta) / s


def slerp_merge(inp: MergeInputs) -> torch.Tensor:
    """Slerp from the base (t=0) to the other model (t=1), the whole tensor as one vector."""
    if inp.base_index is None or len(inp.tensors) != 2:
        raise ValueError(f"{inp.name}: slerp needs exactly two inputs, one of them the base")
    t = float(inp.params["t"])
    pair = [inp.base_index, 1 - inp.base_index]
    if inp.shape.numel() == 0:
        return torch.empty(inp.shape, dtype=inp.out_dtype)
    aa, bb, ab = chunked_sum(inp, lambda xs, rows: _flat_dots(xs[0], xs[1]), indices=pair).tolist()
    ca, cb = slerp_coefficients(t, aa, bb, ab)
    return elementwise(inp, lambda xs, rows: xs[0].mul_(ca).add_(xs[1], alpha=cb), indices=pair)


def nuslerp_coefficients(
    t: float, aa: torch.Tensor, bb: torch.Tensor, ab: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(ca, cb) per vector with nuslerp(t, a, b) = ca * a + cb * b, from a.a, b.b and a.b (float64)."""
    na = aa.sqrt().clamp(min=_NUSLERP_NORM_EPS)
    nb = bb.sqrt().clamp(min=_NUSLERP_NORM_EPS)
    cos = (ab / (na * nb)).clamp(-1, 1)
    colinear = (1 - cos * cos) <= _NUSLERP_COLINEAR
    theta = torch.acos(torch.where(colinear, 0.0, cos))
    s = torch.where(colinear, 1.0, torch.sin(theta))  # no 0/0 on the branch where() drops
    ca = torch.where(colinear, 1.0 - t, torch.sin((1.0 - t) * theta) / s)
    cb = torch.where(colinear, t, torch.sin(t * theta) / s)
    return ca, cb


def nuslerp_merge(inp: MergeInputs) -> torch.Tensor:
    """Slerp between two models (or their deltas from the base), t = weight_2 / (weight_1 + weight_2)."""
    others = inp.others
    if len(others) != 2:
        raise ValueError(f"{inp.name}: nuslerp needs exactly two models besides the base, got {len(others)}")
    w0, w1 = (float(w) for w in inp.values("weight"))
    total = w0 + w1
    t = 0.5 if abs(total) < 1e-6 else w1 / total
    has_base = inp.base_index is not None
    indices = others + ([inp.base_index] if has_base else [])

    def vectors(xs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        if has_base:
            return xs[0].sub_(xs[2]), xs[1].sub_(xs[2])
        return xs[0], xs[1]

    def combine(xs: list[torch.Tensor], ca: torch.Tensor | float, cb: torch.Tensor | float) -> torch.Tensor:
        v0, v1 = vectors(xs)
        out = v0.mul_(ca).addcmul_(v1, cb) if isinstance(cb, torch.Tensor) else v0.mul_(ca).add_(v1, alpha=cb)
        return out.add_(xs[2]) if has_base else out

    ndim = len(inp.shape)
    if inp.shape.numel() == 0:
        return torch.empty(inp.shape, dtype=inp.out_dtype)
    if bool(inp.params.get("nuslerp_flatten", True)) or ndim == 0:
        # the whole tensor is one vector
        stats = chunked_sum(inp, lambda xs, rows: _flat_dots(*vectors(xs)), indices=indices)
        ca, cb = (float(c) for c in nuslerp_coefficients(t, stats[0], stats[1], stats[2]))
        return elementwise(inp, lambda xs, rows: combine(xs, ca, cb), indices=indices)

    if bool(inp.params.get("nuslerp_row_wise", False)):
        # vectors run along dim 0 (one per column): statistics accumulate over all row chunks
        def col_stats(xs: list[torch.Tensor], rows: slice) -> torch.Tensor:
            v0, v1 = vectors(xs)
            return torch.stack([(v0 * v0).sum(0), (v1 * v1).sum(0), (v0 * v1).sum(0)])

        stats = chunked_sum(inp, col_stats, indices=indices)
        cat, cbt = (c.to(device=inp.device, dtype=inp.compute_dtype) for c in nuslerp_coefficients(t, *stats))
        return elementwise(inp, lambda xs, rows: combine(xs, cat, cbt), indices=indices)

    # vectors run along the last dim (one per row): each chunk holds its own vectors whole
    def per_row(xs: list[torch.Tensor], rows: slice) -> torch.Tensor:
        v0, v1 = vectors(xs)
        stats = [
            (p * q).sum(-1, keepdim=True).to(torch.float64) for p, q in ((v0, v0), (v1, v1), (v0, v1))
        ]
        ca, cb = (c.to(inp.compute_dtype) for c in nuslerp_coefficients(t, *stats))
        out = v0.mul_(ca).addcmul_(v1, cb)
        return out.add_(xs[2]) if has_base else out

    return elementwise(inp, per_row, indices=indices, chunks=inp.vector_chunks())


METHODS: tuple[MethodSpec, ...] = (
    MethodSpec(
        name="slerp",
        description="Spherical interpolation from the base (t=0) to one other model (t=1).",
        merge=slerp_merge,
        params=(ParamSpec("t", REQUIRED, help="Interpolation factor: 0 is the base, 1 the other model."),),
        base="required",
        min_models=2,
        max_models=2,
        reference="https://en.wikipedia.org/wiki/Slerp",
    ),
    MethodSpec(
        name="nuslerp",
        description="Spherical interpolation of two models by weight, around the base if given.",
        merge=nuslerp_merge,
        params=(
            ParamSpec("weight", REQUIRED, per_model=True, non_base=True, help="Relative weight; t = w2 / (w1 + w2)."),
            ParamSpec("nuslerp_flatten", True, type=bool, help="Treat the whole tensor as one vector."),
            ParamSpec(
                "nuslerp_row_wise", False, type=bool, help="Without flatten: slerp columns (dim 0), not rows."
            ),
        ),
        base="optional",
        min_models=2,
        max_models=3,
        min_others=2,
        max_others=2,
    ),
)
