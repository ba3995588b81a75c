"""Merge methods against small whole-tensor reference formulas written independently here.

References work in float64 on whole tensors with plain sorts for top-k; the methods under test
work chunk by chunk with thresholds. Continuous random inputs keep top-k choices unambiguous;
ties get their own tests.
"""

from __future__ import annotations

import math

import pytest
import torch

from mergetui.engine.methods import base as mbase
from mergetui.engine.methods.base import MergeInputs, kth_largest, row_chunks, top_k
from mergetui.engine.methods.registry import get_method, method_names

F32, F64, BF16 = torch.float32, torch.float64, torch.bfloat16


# ---------------------------------------------------------------- helpers


def run(
    method: str,
    tensors: list[torch.Tensor],
    base_index: int | None,
    per_model: list[dict] | None = None,
    shared: dict | None = None,
    chunk: int = 1 << 22,
    out_dtype: torch.dtype = F32,
    seed: int | None = None,
) -> torch.Tensor:
    """Call a registered method the way the engine does: every declared parameter filled."""
    spec = get_method(method)
    assert spec is not None
    per_model = per_model or [{} for _ in tensors]
    model_params = []
    for d in per_model:
        full = {p.name: p.default for p in spec.params if p.per_model and not p.required}
        full.update(d)
        model_params.append(full)
    params = {p.name: p.default for p in spec.params if not p.per_model and not p.required}
    params.update(shared or {})
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    inp = MergeInputs(
        name="t", tensors=tensors, base_index=base_index, model_params=model_params, params=params,
        out_dtype=out_dtype, chunk_elements=chunk, generator=gen,
    )
    out = spec.merge(inp)
    assert out.dtype == out_dtype and out.shape == tensors[0].shape and out.device.type == "cpu"
    return out


def finetunes(shape, n: int, seed: int = 0, scale: float = 0.1) -> list[torch.Tensor]:
    """A base (index 0) and n models = base + independent continuous deltas, float32."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(shape, generator=g)
    return [base] + [base + scale * torch.randn(shape, generator=g) for _ in range(n)]


def close(a: torch.Tensor, b: torch.Tensor, tol: float = 2e-5) -> None:
    torch.testing.assert_close(a.double(), b.double(), rtol=tol, atol=tol)


def ref_topk_mask(v: torch.Tensor, k: int) -> torch.Tensor:
    """1 for the k largest of v (ties: lower flat index first), by a full stable sort."""
    flat = v.reshape(-1)
    order = torch.sort(flat, descending=True, stable=True).indices
    mask = torch.zeros_like(flat)
    mask[order[:k]] = 1
    return mask.reshape(v.shape)


def ref_gta(
    tensors, weights, densities, *, sparsify=None, consensus=False, normalize=False, rescale=False,
    lam=1.0, gammas=None,
) -> torch.Tensor:
    """Generalized task arithmetic, whole tensors in float64 (base is tensors[0])."""
    base = tensors[0].double()
    n = base.numel()
    weighted, ws = [], []
    for i, x in enumerate(tensors[1:]):
        delta = x.double() - base
        d = densities[i]
        mask = torch.ones_like(delta)
        if sparsify == "magnitude" and d < 1:
            mask = ref_topk_mask(delta.abs(), max(1, int(d * n)) if d > 0 else 0)
        elif sparsify == "outliers" and d < 1:
            # ascending sort, keep positions [bottom, bottom + keep), no outliers if gamma*N < 1
            keep, top = int(d * n), int(gammas[i] * n)
            bottom = max(0, n - keep - top)
            order = torch.sort(delta.abs().reshape(-1)).indices
            mask = torch.zeros(n, dtype=F64)
            mask[order[bottom:bottom + keep]] = 1
            mask = mask.reshape(delta.shape)
        masked = delta * mask
        if rescale and d < 1:
            before, after = delta.abs().sum(), masked.abs().sum()
            if before >= 1e-7 and after >= 1e-7:
                masked = masked * before / after
        weighted.append(masked * weights[i])
        ws.append(torch.full_like(base, weights[i]))
    D, W = torch.stack(weighted), torch.stack(ws)
    if consensus:
        majority = torch.where(D.sum(0) >= 0, 1.0, -1.0).to(F64)
        agree = (D.sign() == majority).to(F64)
        mixed = (D * agree).sum(0)
        div = (W * agree).sum(0)
        div[div == 0] = 1
    else:
        mixed = D.sum(0)
        div = torch.tensor(sum(weights), dtype=F64)
        if div.abs() < 1e-8:
            div = torch.tensor(1.0, dtype=F64)
    if normalize:
        mixed = mixed / div
    return base + lam * mixed


def ref_slerp(t: float, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Slerp over whole tensors; lerp where |cos| > 0.9995."""
    a64, b64 = a.double(), b.double()
    cos = float(((a64 / a64.norm()) * (b64 / b64.norm())).sum().clamp(-1, 1))
    if abs(cos) > 0.9995:
        return (1 - t) * a64 + t * b64
    th = math.acos(cos)
    return (math.sin((1 - t) * th) * a64 + math.sin(t * th) * b64) / math.sin(th)


def ref_nuslerp_rows(t: float, v0: torch.Tensor, v1: torch.Tensor) -> torch.Tensor:
    """nuslerp of each row (last-dim vector) of 2-D tensors, by an explicit loop."""
    out = []
    for a, b in zip(v0.double(), v1.double()):
        na, nb = a.norm().clamp(min=1e-7), b.norm().clamp(min=1e-7)
        cos = float(((a / na) * (b / nb)).sum().clamp(-1, 1))
        if 1 - cos * cos <= 1e-16:
            out.append((1 - t) * a + t * b)
        else:
            th = math.acos(cos)
            out.append((math.sin((1 - t) * th) * a + math.sin(t * th) * b) / math.sin(th))
    return torch.stack(out)


def ref_model_stock(tensors, filter_wise: bool) -> torch.Tensor:
    """Model Stock on float64 2-D tensors: per row if filter_wise, else over the whole tensor."""
    w0 = tensors[0].double()
    ws = [x.double() for x in tensors[1:]]
    n = len(ws)
    if not filter_wise:
        w0, ws = w0.reshape(1, -1), [w.reshape(1, -1) for w in ws]
    offs = [w - w0 for w in ws]
    cos = []
    for i in range(n):
        for j in range(i + 1, n):
            num = (offs[i] * offs[j]).sum(-1)
            den = (offs[i].norm(dim=-1) * offs[j].norm(dim=-1)).clamp(min=1e-6)
            cos.append((num / den).clamp(-1, 1))
    c = torch.stack(cos).mean(0).unsqueeze(-1)
    t = n * c / (1 + (n - 1) * c)
    out = t * sum(ws) / n + (1 - t) * w0
    return out.reshape(tensors[0].shape)


# ---------------------------------------------------------------- registry


def test_registry_lists_every_method_with_help():
    expected = {
        "linear", "slerp", "nuslerp", "task_arithmetic", "ties", "dare_ties", "dare_linear", "breadcrumbs",
        "breadcrumbs_ties", "della", "della_linear", "model_stock", "passthrough",
    }
    assert expected <= set(method_names())
    for name in expected:
        spec = get_method(name)
        assert spec.description and all(p.help for p in spec.params), name
    assert get_method("dare_ties").randomized and not get_method("ties").randomized
    assert get_method("ties").param("normalize").default is True
    assert get_method("della").param("epsilon").per_model


# ---------------------------------------------------------------- top-k thresholds


@pytest.mark.parametrize("kind", ["continuous", "tied", "mostly_zero"])
@pytest.mark.parametrize("chunk", [200, 997, 1 << 20])
def test_top_k_is_exact_and_selects_exactly_k(kind, chunk):
    g = torch.Generator().manual_seed(1)
    shape = (300, 41)
    v = torch.randn(shape, generator=g).abs()
    if kind == "tied":
        v = (v * 8).round() / 8  # a handful of distinct values
    elif kind == "mostly_zero":
        v = torch.where(torch.rand(shape, generator=g) < 0.8, 0.0, v)
    n = v.numel()
    ks = [1, 7, n // 10, n // 2, n - 5, n]
    res = top_k(lambda rows: [v[rows].clone()], shape, [ks], chunk)[0]
    for k, r in zip(ks, res):
        assert r.threshold == float(torch.kthvalue(v.reshape(-1), n - k + 1).values)
        assert r.above == int((v > r.threshold).sum()) and r.equal == int((v == r.threshold).sum())
        select = r.selector()
        mask = torch.cat([select(v[rows]).reshape(-1) for rows in row_chunks(shape, chunk)])
        torch.testing.assert_close(mask, ref_topk_mask(v, k).reshape(-1))  # exactly k, ties by index


def test_top_k_falls_back_to_radix_when_the_sample_misleads(monkeypatch):
    # a sample of a dozen values brackets nothing: every threshold goes through the radix select
    monkeypatch.setattr(mbase, "_SAMPLE", 12)
    monkeypatch.setattr(mbase, "_BAND_SLACK", 0)
    g = torch.Generator().manual_seed(2)
    v = torch.randn(5000, generator=g).abs()
    for k in (1, 100, 2500, 4999):
        got = kth_largest(lambda rows: v[rows], v.shape, k, chunk_elements=64)
        assert got == float(torch.kthvalue(v, 5000 - k + 1).values)


@pytest.mark.parametrize("kind", ["continuous", "tied"])
def test_top_k_sample_brackets_the_threshold_without_the_radix_fallback(kind, monkeypatch):
    def no_radix(*args, **kwargs):
        raise AssertionError("radix fallback used")

    monkeypatch.setattr(mbase, "_radix_top_k", no_radix)
    monkeypatch.setattr(mbase, "_SAMPLE", 8192)  # a real sample: 1/32 of the values
    g = torch.Generator().manual_seed(3)
    shape = (4000, 64)
    v = torch.randn(shape, generator=g).abs()
    if kind == "tied":
        v = (v * 64).round() / 64
    n = v.numel()
    ks = [n // 100, n // 3, n // 2, n - n // 50]
    res = top_k(lambda rows: [v[rows].clone()], shape, [ks], 1 << 14)[0]
    for k, r in zip(ks, res):
        assert r.threshold == float(torch.kthvalue(v.reshape(-1), n - k + 1).values)


def test_kth_largest_edges():
    v = torch.tensor([3.0, 1.0, 2.0])
    assert kth_largest(lambda rows: v[rows], v.shape, 0) == math.inf
    assert kth_largest(lambda rows: v[rows], v.shape, 1) == 3.0
    assert kth_largest(lambda rows: v[rows], v.shape, 3) == 1.0


# ---------------------------------------------------------------- linear, passthrough


def test_linear_matches_weighted_average():
    xs = finetunes((20, 30), 2, seed=3, scale=1.0)
    w = [0.5, 0.3, -0.2]
    out = run("linear", xs, None, [{"weight": v} for v in w])
    close(out, sum(wi * x.double() for wi, x in zip(w, xs)) / sum(w))
    out = run("linear", xs, None, [{"weight": v} for v in w], {"normalize": False}, chunk=37)
    close(out, sum(wi * x.double() for wi, x in zip(w, xs)))


def test_linear_zero_weight_sum_with_normalize_is_an_error():
    xs = finetunes((4, 4), 1)
    with pytest.raises(ValueError, match="sum to 0"):
        run("linear", xs, None, [{"weight": 1.0}, {"weight": -1.0}])


def test_passthrough_copies_or_scales():
    x = torch.randn(6, 5).to(BF16)
    assert torch.equal(run("passthrough", [x], None, [{"scale": None}], out_dtype=BF16), x)
    close(run("passthrough", [x], None, [{"scale": 0.5}]), x.double() * 0.5)
    with pytest.raises(ValueError):
        run("passthrough", [x, x], None)


# ---------------------------------------------------------------- slerp, nuslerp


@pytest.mark.parametrize("t", [0.0, 0.25, 0.8, 1.0])
def test_slerp_matches_reference(t):
    g = torch.Generator().manual_seed(4)
    a, b = torch.randn(40, 25, generator=g), torch.randn(40, 25, generator=g)
    for chunk in (1 << 20, 30):
        close(run("slerp", [a, b], 0, shared={"t": t}, chunk=chunk), ref_slerp(t, a, b))
    # the base may come second: t still runs from the base to the other model
    close(run("slerp", [b, a], 1, shared={"t": t}), ref_slerp(t, a, b))


def test_slerp_falls_back_to_lerp_for_nearly_parallel_tensors():
    g = torch.Generator().manual_seed(5)
    a = torch.randn(100, generator=g)
    b = 2.0 * a + 1e-3 * torch.randn(100, generator=g)  # |cos| > 0.9995 but not exactly parallel
    out = run("slerp", [a, b], 0, shared={"t": 0.3})
    close(out, 0.7 * a.double() + 0.3 * b.double())
    # antiparallel also lerps
    close(run("slerp", [a, -a], 0, shared={"t": 0.5}), torch.zeros(100, dtype=F64))
    # a zero tensor is at right angles to everything (its norm counts as 1, as in mergekit)
    close(run("slerp", [torch.zeros(100), a], 0, shared={"t": 0.25}), math.sin(0.25 * math.pi / 2) * a.double())


@pytest.mark.parametrize("cos,lerps", [(0.9996, True), (0.9994, False)])
def test_slerp_lerp_threshold_is_0_9995(cos, lerps):
    a = torch.zeros(64)
    b = torch.zeros(64)
    a[0] = 1.0
    b[0], b[1] = cos, math.sqrt(1 - cos * cos)
    out = run("slerp", [a, b], 0, shared={"t": 0.5}).double()
    lerp = 0.5 * a.double() + 0.5 * b.double()
    gap = float((out - lerp).abs().max())
    assert (gap < 1e-7) if lerps else (gap > 1e-5)
    close(out, ref_slerp(0.5, a, b), tol=1e-6)


def test_slerp_rejects_wrong_inputs():
    a = torch.randn(4)
    with pytest.raises(ValueError):
        run("slerp", [a, a], None, shared={"t": 0.5})


@pytest.mark.parametrize("with_base", [False, True])
def test_nuslerp_modes_match_reference(with_base):
    g = torch.Generator().manual_seed(6)
    shape = (12, 18)
    base = torch.randn(shape, generator=g)
    x0, x1 = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    tensors = [base, x0, x1] if with_base else [x0, x1]
    bi = 0 if with_base else None
    pm = ([{}] if with_base else []) + [{"weight": 1.0}, {"weight": 3.0}]
    t = 0.75
    v0, v1 = (x0 - base, x1 - base) if with_base else (x0, x1)
    off = base.double() if with_base else 0.0
    expected = {
        "flat": ref_nuslerp_rows(t, v0.reshape(1, -1), v1.reshape(1, -1)).reshape(shape) + off,
        "rows": ref_nuslerp_rows(t, v0, v1) + off,
        "cols": ref_nuslerp_rows(t, v0.T, v1.T).T + off,
    }
    modes = {
        "flat": {},
        "rows": {"nuslerp_flatten": False},
        "cols": {"nuslerp_flatten": False, "nuslerp_row_wise": True},
    }
    for mode, shared in modes.items():
        for chunk in (1 << 20, 40):
            close(run("nuslerp", tensors, bi, pm, shared, chunk=chunk), expected[mode])


def test_nuslerp_equal_weights_zero_sum_and_colinear():
    g = torch.Generator().manual_seed(7)
    a = torch.randn(30, generator=g)
    b = torch.randn(30, generator=g)
    # weights summing to ~0 give t = 0.5
    close(run("nuslerp", [a, b], None, [{"weight": 1.0}, {"weight": -1.0}]), ref_nuslerp_rows(0.5, a[None], b[None])[0])
    # exactly parallel vectors take the lerp branch
    close(run("nuslerp", [a, 3 * a], None, [{"weight": 1.0}, {"weight": 1.0}]), 2.0 * a.double())


# ---------------------------------------------------------------- task arithmetic family


def test_task_arithmetic_matches_reference():
    xs = finetunes((30, 20), 3, seed=8)
    w = [0.7, 0.5, -0.2]
    pm = [{}] + [{"weight": v} for v in w]
    close(run("task_arithmetic", xs, 0, pm), ref_gta(xs, w, [1, 1, 1]))
    close(run("task_arithmetic", xs, 0, pm, {"normalize": True, "lambda": 0.6}, chunk=33),
          ref_gta(xs, w, [1, 1, 1], normalize=True, lam=0.6))


@pytest.mark.parametrize("shared", [{}, {"normalize": False, "rescale": True, "lambda": 1.3}])
def test_ties_matches_reference(shared):
    xs = finetunes((40, 25), 3, seed=9)
    w, dens = [1.0, 0.6, -0.4], [0.3, 0.7, 0.5]
    pm = [{}] + [{"weight": a, "density": d} for a, d in zip(w, dens)]
    ref = ref_gta(xs, w, dens, sparsify="magnitude", consensus=True, normalize=shared.get("normalize", True),
                  rescale=shared.get("rescale", False), lam=shared.get("lambda", 1.0))
    for chunk in (1 << 20, 64):
        close(run("ties", xs, 0, pm, shared, chunk=chunk), ref)


@pytest.mark.parametrize("density,gamma", [(0.8, 0.01), (0.5, 0.1), (0.95, 0.1)])
def test_breadcrumbs_matches_reference(density, gamma):
    xs = finetunes((50, 20), 2, seed=10)
    w = [0.6, 0.5]
    pm = [{}] + [{"weight": v, "density": density, "gamma": gamma} for v in w]
    ref = ref_gta(xs, w, [density] * 2, sparsify="outliers", gammas=[gamma] * 2)
    close(run("breadcrumbs", xs, 0, pm, chunk=70), ref)
    ref = ref_gta(xs, w, [density] * 2, sparsify="outliers", gammas=[gamma] * 2, consensus=True, normalize=True)
    close(run("breadcrumbs_ties", xs, 0, pm, {"normalize": True}), ref)


def test_breadcrumbs_with_gamma_times_n_below_one_keeps_the_top():
    # gamma * N = 0.5: no outlier is cut and the top `density` fraction survives, where the
    # old mergekit slice [n:-0] zeroed the whole task vector
    xs = finetunes((10, 10), 1, seed=11)
    out = run("breadcrumbs", xs, 0, [{}, {"weight": 1.0, "density": 0.3, "gamma": 0.005}])
    delta = (xs[1] - xs[0]).double()
    close(out, xs[0].double() + delta * ref_topk_mask(delta.abs(), 30))
    assert int(torch.count_nonzero(out.double() - xs[0].double())) == 30


def test_ties_keeps_exactly_k_among_ties_whatever_the_chunking():
    base = torch.zeros(64, 64)
    model = torch.sign(torch.randn(64, 64, generator=torch.Generator().manual_seed(12)))  # |delta| all 1
    pm = [{}, {"weight": 1.0, "density": 0.25}]
    outs = [run("ties", [base, model], 0, pm, chunk=c) for c in (1 << 20, 100, 7)]
    for out in outs:
        assert int(torch.count_nonzero(out)) == 1024
        assert torch.equal(out, outs[0])
    # index order decides among equals: the first 1024 elements in flat order
    assert torch.equal(outs[0].reshape(-1)[:1024], model.reshape(-1)[:1024])


def test_ties_edge_cases():
    xs = finetunes((16, 16), 2, seed=13)
    base = xs[0]
    pm = [{}, {"weight": 1.0, "density": 0.5}, {"weight": 1.0, "density": 0.5}]
    # zero deltas: the base comes back unchanged
    assert torch.equal(run("ties", [base, base.clone(), base.clone()], 0, pm), base)
    # density 1 keeps everything: pure sign election
    pm1 = [{}, {"weight": 0.5, "density": 1.0}, {"weight": 0.5, "density": 1.0}]
    close(run("ties", xs, 0, pm1), ref_gta(xs, [0.5, 0.5], [1, 1], consensus=True, normalize=True))
    # density 0 drops everything
    pm0 = [{}, {"weight": 1.0, "density": 0.0}, {"weight": 1.0, "density": 0.0}]
    assert torch.equal(run("ties", xs, 0, pm0), base)
    # only a base: the base
    assert torch.equal(run("ties", [base], 0, [{}]), base)
    # opposite weights that agree in sign sum to a zero divisor: divide by 1, as mergekit does
    b0 = torch.zeros(4)
    m1, m2 = torch.full((4,), 1.0), torch.full((4,), -1.0)
    pm_opp = [{}, {"weight": 1.0}, {"weight": -1.0}]
    close(run("ties", [b0, m1, m2], 0, pm_opp), torch.full((4,), 2.0, dtype=F64))


def test_task_arithmetic_on_bf16_inputs_rounds_once():
    xs = [x.to(BF16) for x in finetunes((64, 48), 2, seed=14)]
    pm = [{}, {"weight": 0.5, "density": 0.4}, {"weight": 0.5, "density": 0.6}]
    ref = ref_gta([x.float() for x in xs], [0.5, 0.5], [0.4, 0.6], sparsify="magnitude", consensus=True,
                  normalize=True)
    out = run("ties", xs, 0, pm, chunk=500, out_dtype=BF16)
    # exact top-k on the fp32 deltas, fp32 arithmetic, one rounding: within one bf16 step
    diff = (out.double() - ref).abs()
    assert float((diff / ref.abs().clamp(min=1e-3)).max()) <= 2**-8


def test_ties_in_float64_compute():
    xs = finetunes((30, 20), 2, seed=20)
    spec = get_method("ties")
    mp = [{}] + [{"weight": 0.5, "density": 0.4, "gamma": 0.01}] * 2
    params = {p.name: p.default for p in spec.params if not p.per_model}
    inp = MergeInputs("t", xs, 0, mp, params, out_dtype=F64, compute_dtype=F64, chunk_elements=50)
    ref = ref_gta(xs, [0.5, 0.5], [0.4, 0.4], sparsify="magnitude", consensus=True, normalize=True)
    torch.testing.assert_close(spec.merge(inp), ref, rtol=1e-12, atol=1e-12)


def test_scalar_and_empty_tensors():
    s = [torch.tensor(1.0), torch.tensor(3.0), torch.tensor(2.0)]
    close(run("ties", s, 0, [{}, {"weight": 1.0, "density": 0.5}, {"weight": 1.0, "density": 0.5}]),
          torch.tensor(2.5, dtype=F64))
    close(run("linear", s, None, [{"weight": 1.0}] * 3), torch.tensor(2.0, dtype=F64))
    e = [torch.zeros(0, 4)] * 3
    assert run("ties", e, 0, [{}, {"weight": 1.0, "density": 0.5}, {"weight": 1.0, "density": 0.5}]).shape == (0, 4)


# ---------------------------------------------------------------- dare, della (randomized)


def test_dare_is_deterministic_per_seed_and_keeps_density():
    xs = finetunes((200, 500), 1, seed=15)
    pm = [{}, {"weight": 1.0, "density": 0.3}]
    a = run("dare_linear", xs, 0, pm, {"rescale": False}, chunk=4096, seed=1)
    b = run("dare_linear", xs, 0, pm, {"rescale": False}, chunk=4096, seed=1)
    c = run("dare_linear", xs, 0, pm, {"rescale": False}, chunk=4096, seed=2)
    assert torch.equal(a, b) and not torch.equal(a, c)
    kept = (a != xs[0])
    rate = float(kept.double().mean())
    assert abs(rate - 0.3) < 0.005  # 100k draws: sigma ~ 0.0015
    # kept entries are the model's own values, dropped ones the base's
    close(a[kept], xs[1][kept])


def test_dare_rescale_restores_the_l1_norm_and_ties_elects_signs():
    xs = finetunes((100, 300), 2, seed=16)
    delta = (xs[1] - xs[0]).double()
    out = run("dare_linear", xs[:2], 0, [{}, {"weight": 1.0, "density": 0.2}], seed=3)
    close((out.double() - xs[0].double()).abs().sum(), delta.abs().sum(), tol=1e-4)
    # dare_ties with density 1 is TIES without pruning (normalize off by default)
    pm = [{}, {"weight": 0.5, "density": 1.0}, {"weight": 0.5, "density": 1.0}]
    close(run("dare_ties", xs, 0, pm, seed=3), ref_gta(xs, [0.5, 0.5], [1, 1], consensus=True))


def test_della_prefers_large_magnitudes_and_is_deterministic():
    xs = finetunes((40, 2000), 1, seed=17)
    pm = [{}, {"weight": 1.0, "density": 0.5, "epsilon": 0.3}]
    a = run("della_linear", xs, 0, pm, {"rescale": False}, seed=4, chunk=8000)
    assert torch.equal(a, run("della_linear", xs, 0, pm, {"rescale": False}, seed=4, chunk=8000))
    kept = (a != xs[0]).double()
    mag = (xs[1] - xs[0]).abs()
    ranks = mag.argsort(dim=1).argsort(dim=1).double() / 1999  # rank in its row, 0..1
    top, bottom = kept[ranks > 0.9].mean(), kept[ranks < 0.1].mean()
    # keep probability runs from 0.2 (smallest) to 0.8 (largest): deciles average 0.77 and 0.23
    assert abs(float(top) - 0.77) < 0.03 and abs(float(bottom) - 0.23) < 0.03
    assert abs(float(kept.mean()) - 0.5) < 0.01
    with pytest.raises(ValueError, match="epsilon"):
        run("della", xs, 0, [{}, {"weight": 1.0, "density": 0.9, "epsilon": 0.2}], seed=4)


# ---------------------------------------------------------------- model stock


@pytest.mark.parametrize("filter_wise", [False, True])
def test_model_stock_matches_reference(filter_wise):
    xs = finetunes((24, 30), 3, seed=18)
    xs[2] = xs[1] + 0.05 * (xs[2] - xs[1])  # correlated deltas make t non-trivial
    ref = ref_model_stock(xs, filter_wise)
    for chunk in (1 << 20, 50):
        close(run("model_stock", xs, 0, shared={"filter_wise": filter_wise}, chunk=chunk), ref)


def test_model_stock_keeps_the_base_where_singular():
    base = torch.full((2, 3), 0.5)
    # opposite deltas (cos = -1, so 1 + (N-1) cos = 0) of different sizes: any t != 0 moves off the base
    out = run("model_stock", [base, base + 1, base - 3], 0)
    assert torch.equal(out, base)


# ---------------------------------------------------------------- chunking invariance


@pytest.mark.parametrize("method,pm,shared", [
    ("linear", [{"weight": 0.2}, {"weight": 0.5}, {"weight": 0.3}], {}),
    ("slerp", None, {"t": 0.4}),
    ("nuslerp", [{}, {"weight": 0.3}, {"weight": 0.7}], {"nuslerp_flatten": False}),
    ("task_arithmetic", [{}, {"weight": 0.5}, {"weight": 0.5}], {}),
    ("ties", [{}, {"weight": 0.5, "density": 0.3}, {"weight": 0.5, "density": 0.6}], {"rescale": True}),
    ("breadcrumbs_ties", [{}, {"weight": 0.5, "density": 0.5, "gamma": 0.05}, {"weight": 0.5, "density": 0.5}], {}),
    ("model_stock", None, {"filter_wise": True}),
])
@pytest.mark.parametrize("shape", [(33, 7, 5), (301,)])
def test_chunked_equals_unchunked(method, pm, shared, shape):
    xs = finetunes(shape, 1 if method == "slerp" else 2, seed=19)
    whole = run(method, xs, 0, pm, shared, chunk=1 << 20)
    for chunk in (1, 17, 100):
        close(run(method, xs, 0, pm, shared, chunk=chunk), whole, tol=1e-6)
