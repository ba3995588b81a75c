"""multislerp, karcher, sce, nearswap, arcee_fusion, ram and ramplus_tl against whole-tensor references.

References are written here from the methods' definitions, in float64 on whole flattened
tensors (sorts and torch.quantile where the methods use top-k thresholds); the methods under
test work chunk by chunk from Gram matrices, counts and thresholds.
"""

from __future__ import annotations

import math

import pytest
import torch
from test_methods import BF16, F64, close, finetunes, ref_topk_mask, run

from mergetui.engine.methods import arcee_fusion as fusion_mod
from mergetui.engine.methods.registry import get_method, method_names


def sparse_finetunes(shape, n: int, seed: int = 0, keep: float = 0.4) -> list[torch.Tensor]:
    """A base (index 0) and n models that change a random `keep` fraction of its elements."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(shape, generator=g)
    out = [base]
    for _ in range(n):
        mask = (torch.rand(shape, generator=g) < keep).float()
        out.append(base + 0.1 * torch.randn(shape, generator=g) * mask)
    return out


# ---------------------------------------------------------------- references


def ref_multislerp(models, weights, base=None, normalize=True, eps=1e-8) -> torch.Tensor:
    """Project to the unit sphere, average in the tangent space at the mean, map back, rescale."""
    shape = models[0].shape
    b = base.double().reshape(-1) if base is not None else 0.0
    vs = [m.double().reshape(-1) - b for m in models]
    w = torch.tensor(weights, dtype=F64)
    if normalize:
        w = w / w.sum()
    norms = torch.stack([v.norm() for v in vs])
    units = [v / (nv + eps) for v, nv in zip(vs, norms)]
    mean = sum(wi * u for wi, u in zip(w, units))
    if mean.norm() < eps:
        out = sum(wi * v for wi, v in zip(w, vs))
    else:
        mean = mean / mean.norm()
        tangent = sum(wi * (u - (u @ mean) * mean) for wi, u in zip(w, units))
        tn = tangent.norm() + eps
        out = (mean * torch.cos(tn) + tangent * torch.sin(tn) / tn) * (norms @ w)
    return (out + b).reshape(shape)


def ref_karcher(tensors, max_iter=10, tol=1e-5) -> torch.Tensor:
    """Riemannian mean on the sphere by fixed-point iteration, equal weights, times the mean norm."""
    vs = [t.double().reshape(-1) for t in tensors]
    norms = [float(v.norm()) for v in vs]
    live = [i for i, nv in enumerate(norms) if nv > tol]
    if not live:
        return torch.zeros(tensors[0].shape, dtype=F64)
    units = [vs[i] / norms[i] for i in live]
    a = 1.0 / len(units)
    mean = sum(a * u for u in units)
    mean = units[0].clone() if mean.norm() < tol else mean / mean.norm()
    for _ in range(max_iter):
        tangent = torch.zeros_like(mean)
        for u in units:
            cos = float((mean @ u).clamp(-1, 1))
            theta = math.acos(cos)
            if theta >= tol:
                tangent += a * theta / math.sin(theta) * (u - cos * mean)
        tn = float(tangent.norm())
        if tn < tol:
            break
        mean = math.cos(tn) * mean + math.sin(tn) * tangent / tn
        mean = mean / mean.norm() if mean.norm() > tol else mean
    return (sum(norms) / len(vs) * mean).reshape(tensors[0].shape)


def ref_sce(tensors, topk=1.0) -> torch.Tensor:
    """Select by variance, weight by mean square, erase minority signs (base is tensors[0])."""
    base = tensors[0].double()
    tv = torch.stack([t.double() - base for t in tensors[1:]])
    if topk < 1:
        var = tv.var(0, unbiased=False)
        k = int(int((var != 0).sum()) * topk)
        tv = tv * ref_topk_mask(var, k)
    ms = (tv ** 2).reshape(len(tv), -1).mean(1)
    w = ms / ms.sum() if ms.sum() >= 1e-6 else torch.full_like(ms, 1 / len(ms))
    sign = torch.where(tv.sum(0) >= 0, 1.0, -1.0).to(F64)
    agree = (torch.sign(tv) == sign).to(F64) * w.reshape(-1, *[1] * (tv.ndim - 1))
    return base + (tv * agree).sum(0) / agree.sum(0).clamp(min=1e-6)


def ref_nearswap(base, model, t) -> torch.Tensor:
    a, b = base.double(), model.double()
    w = (t / (a - b).abs().clamp(min=1e-6)).clamp(0, 1)
    return w * b + (1 - w) * a


def ref_importance(base, model) -> torch.Tensor:
    """|model - base| times the KL divergence of the rows' softmaxes (float32, as the method computes)."""
    p = torch.softmax(model.float(), -1) + 1e-8
    q = torch.softmax(base.float(), -1) + 1e-8
    return (model.float() - base.float()).abs() * (p * (p / q).log()).sum(-1, keepdim=True)


def ref_arcee_fusion(base, model, importance=None) -> torch.Tensor:
    imp = ref_importance(base, model) if importance is None else importance
    q1, q2, q3 = torch.quantile(imp.reshape(-1).double(), torch.tensor([0.25, 0.5, 0.75], dtype=F64),
                                interpolation="lower").float()
    keep = (imp >= q2 + 1.5 * (q3 - q1)).double()
    return base.double() + (model.double() - base.double()) * keep


def ref_ram(tensors, eps=1e-5, plus=False, r=0.1, alpha=0.2) -> torch.Tensor:
    """Unique deltas (times lambda_i with plus) plus the mean of overlapping ones (base is tensors[0])."""
    base = tensors[0].double()
    tv = torch.stack([t.double() - base for t in tensors[1:]])
    on = tv.abs() > eps
    count = on.sum(0)
    lam = torch.ones(len(tv), dtype=F64)
    if plus:
        for i in range(len(tv)):
            shared, unique = int((on[i] & (count > 1)).sum()), int((on[i] & (count == 1)).sum())
            lam[i] = 1 + r * min(max(shared / max(unique, eps), 0.0), alpha)
    out = base.clone()
    for i in range(len(tv)):
        out += torch.where(count == 1, tv[i] * on[i] * lam[i], torch.where(count > 1, tv[i] * on[i] / count, 0.0))
    return out


# ---------------------------------------------------------------- registry


NEW = {
    "multislerp": {"weight": None, "normalize_weights": True, "eps": 1e-8},
    "karcher": {"max_iter": 10, "tol": 1e-5},
    "sce": {"select_topk": 1.0, "int8_mask": False},
    "nearswap": {"t": None},
    "arcee_fusion": {},
    "ram": {"epsilon": 1e-5},
    "ramplus_tl": {"r": 0.1, "alpha": 0.2, "epsilon": 1e-5},
}


def test_new_methods_have_mergekits_names_params_and_defaults():
    assert set(NEW) <= set(method_names())
    for name, params in NEW.items():
        spec = get_method(name)
        assert spec.description and all(p.help for p in spec.params), name
        assert {p.name: (None if p.required else p.default) for p in spec.params} == params, name
        assert not spec.randomized
    assert get_method("multislerp").param("weight").per_model and get_method("multislerp").param("weight").non_base
    assert get_method("karcher").param("max_iter").type is int
    for name in ("nearswap", "arcee_fusion"):
        spec = get_method(name)
        assert (spec.base, spec.min_models, spec.max_models, spec.min_others, spec.max_others) == ("required", 2, 2, 1, 1)
    assert get_method("multislerp").min_others == 1 and get_method("multislerp").base == "optional"


# ---------------------------------------------------------------- multislerp


@pytest.mark.parametrize("with_base", [False, True])
def test_multislerp_matches_reference(with_base):
    xs = finetunes((30, 20), 3, seed=30, scale=0.5)
    w = [0.5, 0.3, 0.2]
    models = xs[1:]
    tensors = xs if with_base else models
    pm = ([{}] if with_base else []) + [{"weight": v} for v in w]
    ref = ref_multislerp(models, w, xs[0] if with_base else None)
    for chunk in (1 << 20, 64):
        close(run("multislerp", tensors, 0 if with_base else None, pm, chunk=chunk), ref)
    ref = ref_multislerp(models, [2.0, 1.0, 1.0], None, normalize=False)
    close(run("multislerp", models, None, [{"weight": v} for v in (2.0, 1.0, 1.0)], {"normalize_weights": False}), ref)


def test_multislerp_edges():
    xs = finetunes((8, 8), 3, seed=31)
    base = xs[0]
    # one model besides the base: that model, as it is
    assert torch.equal(run("multislerp", xs[:2], 0, [{}, {"weight": 1.0}]), xs[1])
    # antipodal deltas with equal weights: the unit mean vanishes, so the weighted sum (here 0)
    d = xs[1] - base
    close(run("multislerp", [base, base + d, base - d], 0, [{}, {"weight": 1.0}, {"weight": 1.0}]), base.double())
    # every delta zero, three models (mergekit raises here): the base
    same = [base, base.clone(), base.clone(), base.clone()]
    assert torch.equal(run("multislerp", same, 0, [{}] + [{"weight": 1.0}] * 3), base)
    with pytest.raises(ValueError, match="sum to 0"):
        run("multislerp", xs[1:3], None, [{"weight": 1.0}, {"weight": -1.0}])


# ---------------------------------------------------------------- karcher


@pytest.mark.parametrize("kind", ["independent", "finetune"])
def test_karcher_matches_reference(kind):
    xs = finetunes((24, 16), 3, seed=32, scale=0.3)
    if kind == "independent":
        g = torch.Generator().manual_seed(33)
        xs = [torch.randn(24, 16, generator=g) * s for s in (1.0, 2.0, 0.5, 1.5)]
    for shared in ({}, {"max_iter": 2, "tol": 1e-3}, {"max_iter": 0}):
        ref = ref_karcher(xs, shared.get("max_iter", 10), shared.get("tol", 1e-5))
        for chunk in (1 << 20, 50):
            close(run("karcher", xs, None, shared=shared, chunk=chunk), ref)
    # a base among the inputs is averaged like any other model
    close(run("karcher", xs, 0), ref_karcher(xs))


def test_karcher_edges():
    x = torch.randn(5, 7, generator=torch.Generator().manual_seed(34))
    assert torch.equal(run("karcher", [x], None), x)
    z = torch.zeros(5, 7)
    assert torch.equal(run("karcher", [z, z.clone()], None), z)
    # a zero input adds no direction but still counts in the mean norm
    close(run("karcher", [x, z], None), x.double() / 2)
    # antipodal inputs: the Euclidean mean vanishes, the iteration starts from the first
    close(run("karcher", [x, -x], None), ref_karcher([x, -x]))


# ---------------------------------------------------------------- sce


@pytest.mark.parametrize("topk", [1.0, 0.5, 0.1])
def test_sce_matches_reference(topk):
    xs = finetunes((40, 25), 3, seed=35, scale=0.05)
    ref = ref_sce(xs, topk)
    for chunk in (1 << 20, 64):
        close(run("sce", xs, 0, shared={"select_topk": topk}, chunk=chunk), ref)


def test_sce_edges():
    xs = finetunes((16, 16), 2, seed=36)
    base = xs[0]
    # nothing selected, or only one model (no variance): the base
    assert torch.equal(run("sce", xs, 0, shared={"select_topk": 0.0}), base)
    assert torch.equal(run("sce", xs[:2], 0, shared={"select_topk": 0.5}), base)
    assert torch.equal(run("sce", [base], 0), base)
    # one model, no selection: its delta is the only one, whatever its sign
    close(run("sce", xs[:2], 0), xs[1].double())
    # tiny task vectors (mean squares below 1e-6 in all): equal weights
    tiny = finetunes((16, 16), 2, seed=37, scale=1e-4)
    close(run("sce", tiny, 0), ref_sce(tiny))
    # tied variances: exactly k kept whatever the chunking (index order decides)
    b0 = torch.zeros(32, 32)
    m1 = torch.sign(torch.randn(32, 32, generator=torch.Generator().manual_seed(38)))
    outs = [run("sce", [b0, m1, -m1], 0, shared={"select_topk": 0.25}, chunk=c) for c in (1 << 20, 100, 7)]
    assert all(torch.equal(o, outs[0]) for o in outs)


# ---------------------------------------------------------------- nearswap


@pytest.mark.parametrize("t", [0.0, 0.02, 0.1, 10.0])
def test_nearswap_matches_reference(t):
    xs = finetunes((30, 20), 1, seed=39)
    for chunk in (1 << 20, 33):
        close(run("nearswap", xs, 0, shared={"t": t}, chunk=chunk), ref_nearswap(xs[0], xs[1], t))
    # the base may come second
    close(run("nearswap", [xs[1], xs[0]], 1, shared={"t": t}), ref_nearswap(xs[0], xs[1], t))
    with pytest.raises(ValueError):
        run("nearswap", xs + [xs[1]], 0, shared={"t": t})


# ---------------------------------------------------------------- arcee_fusion


@pytest.mark.parametrize("shape", [(40, 30), (6, 10, 12), (500,)])
def test_arcee_fusion_matches_reference(shape):
    xs = finetunes(shape, 1, seed=40, scale=0.3)
    ref = ref_arcee_fusion(xs[0], xs[1])
    assert 0 < int((ref != xs[0].double()).sum()) < xs[0].numel()  # some, not all, taken
    for chunk in (1 << 20, 60):
        close(run("arcee_fusion", xs, 0, chunk=chunk), ref)


def test_arcee_fusion_with_negative_importances(monkeypatch):
    """KL that rounds below zero makes importances negative: quartiles may fall among them."""
    xs = finetunes((40, 30), 1, seed=41, scale=0.3)
    real = fusion_mod._row_kl

    def skewed(x, b):  # rows whose first element grew get a negative KL: about half of them
        return torch.where(x[..., :1] > b[..., :1], -real(x, b), real(x, b))

    monkeypatch.setattr(fusion_mod, "_row_kl", skewed)
    imp = ref_importance(xs[0], xs[1])
    imp = torch.where(xs[1][:, :1] > xs[0][:, :1], -imp, imp)
    assert float((imp < 0).double().mean()) > 0.3  # q1 lies among the negative values
    for chunk in (1 << 20, 60):
        close(run("arcee_fusion", xs, 0, chunk=chunk), ref_arcee_fusion(xs[0], xs[1], imp))


def test_arcee_fusion_identical_models_give_the_model():
    x = torch.randn(8, 8, generator=torch.Generator().manual_seed(42))
    assert torch.equal(run("arcee_fusion", [x, x.clone()], 0), x)


# ---------------------------------------------------------------- ram, ramplus_tl


@pytest.mark.parametrize("n", [1, 2, 4])
def test_ram_matches_reference(n):
    xs = sparse_finetunes((40, 25), n, seed=43)
    for chunk in (1 << 20, 64):
        close(run("ram", xs, 0, chunk=chunk), ref_ram(xs))
        close(run("ram", xs, 0, shared={"epsilon": 0.05}, chunk=chunk), ref_ram(xs, eps=0.05))
        close(run("ramplus_tl", xs, 0, chunk=chunk), ref_ram(xs, plus=True))
        shared = {"r": 0.7, "alpha": 2.0, "epsilon": 0.02}
        close(run("ramplus_tl", xs, 0, shared=shared, chunk=chunk), ref_ram(xs, 0.02, True, 0.7, 2.0))


def test_ram_edges():
    xs = sparse_finetunes((10, 10), 2, seed=44)
    assert torch.equal(run("ram", xs[:1], 0), xs[0])
    # identical models: every element overlaps, so the shared delta comes back (mean of equals)
    close(run("ram", [xs[0], xs[1], xs[1].clone()], 0), xs[1].double())
    # a model with no unique change: rho = shared / epsilon, clamped to alpha
    out = run("ramplus_tl", [xs[0], xs[1], xs[1].clone()], 0, shared={"r": 1.0, "alpha": 0.5})
    close(out, xs[1].double())  # overlapping deltas are averaged, not boosted
    close(run("ramplus_tl", xs, 0), ref_ram(xs, plus=True))


# ---------------------------------------------------------------- shared: bf16, chunking, tiny shapes


CASES = [
    ("multislerp", [{}, {"weight": 0.3}, {"weight": 0.7}], {}),
    ("karcher", None, {}),
    ("sce", None, {"select_topk": 0.4}),
    ("nearswap", [{}, {}], {"t": 0.05}),
    ("arcee_fusion", [{}, {}], {}),
    ("ram", None, {"epsilon": 0.05}),
    ("ramplus_tl", None, {"epsilon": 0.05}),
]


def _inputs(method: str, shape, seed: int) -> list[torch.Tensor]:
    n = 1 if method in ("nearswap", "arcee_fusion") else 2
    return sparse_finetunes(shape, n, seed) if method.startswith("ram") else finetunes(shape, n, seed, scale=0.2)


@pytest.mark.parametrize("method,pm,shared", CASES)
@pytest.mark.parametrize("shape", [(33, 7, 5), (301,)])
def test_chunked_equals_unchunked(method, pm, shared, shape):
    xs = _inputs(method, shape, seed=45)
    whole = run(method, xs, 0, pm, shared, chunk=1 << 20)
    for chunk in (1, 17, 100):
        close(run(method, xs, 0, pm, shared, chunk=chunk), whole, tol=1e-6)


REFS = {
    "multislerp": lambda xs: ref_multislerp(xs[1:], [0.3, 0.7], xs[0]),
    "karcher": lambda xs: ref_karcher(xs),
    "sce": lambda xs: ref_sce(xs, 0.4),
    "nearswap": lambda xs: ref_nearswap(xs[0], xs[1], 0.05),
    "arcee_fusion": lambda xs: ref_arcee_fusion(xs[0], xs[1]),
    "ram": lambda xs: ref_ram(xs, 0.05),
    "ramplus_tl": lambda xs: ref_ram(xs, 0.05, plus=True),
}


@pytest.mark.parametrize("method,pm,shared", CASES)
def test_bf16_inputs_round_once(method, pm, shared):
    xs = [x.to(BF16) for x in _inputs(method, (48, 40), seed=46)]
    ref = REFS[method]([x.float() for x in xs])
    out = run(method, xs, 0, pm, shared, chunk=300, out_dtype=BF16)
    # fp32 arithmetic on the bf16 values and one rounding: within half a bf16 step of the
    # reference, measured at the larger of the result and the inputs
    scale = torch.stack([ref.abs()] + [x.double().abs() for x in xs]).amax(0)
    assert float(((out.double() - ref).abs() / scale).max()) <= 2**-8


@pytest.mark.parametrize("method,pm,shared", CASES)
def test_scalar_and_empty_tensors(method, pm, shared):
    s = [torch.tensor(1.0), torch.tensor(1.5), torch.tensor(0.5)][:len(pm) if pm else 3]
    out = run(method, s, 0, pm, shared)
    assert out.shape == () and torch.isfinite(out)
    e = [torch.zeros(0, 4)] * len(s)
    assert run(method, e, 0, pm, shared).shape == (0, 4)


def test_torch_free_catalog_lists_exactly_the_registered_methods() -> None:
    from mergetui.engine.methods.catalog import METHOD_NAMES
    from mergetui.engine.methods.registry import method_names

    assert sorted(METHOD_NAMES) == method_names() and len(set(METHOD_NAMES)) == len(METHOD_NAMES)
