"""Compare mergetui's merge methods with mergekit 0.1.5's on the same random bf16 tensors.

A dev tool: mergekit is never a dependency of mergetui. Run it in a throwaway venv:

    python3 -m venv /tmp/mkvenv
    /tmp/mkvenv/bin/pip install torch==2.13.0      # first: the local CPU wheel, not GBs of CUDA
    /tmp/mkvenv/bin/pip install mergekit==0.1.5
    /tmp/mkvenv/bin/python benchmarks/compare_mergekit_methods.py > benchmarks/compare_mergekit_methods.txt

Every deterministic method is run with a few parameter settings, mergetui with small chunks so
its chunked paths run. mergekit runs twice: with dtype=float32 (its tensors cast to fp32 before
the method: the same compute dtype as mergetui, the like-for-like check) and with its default
for bf16 inputs (no dtype, or `dtype: bfloat16` in a mergekit YAML), where its methods keep bf16
intermediates (deltas, sums, norms). Those show as a few ulps, and in TIES-style sign elections
as flipped signs where weighted deltas nearly cancel: large differences on a small fraction of
the elements.

Differences are given in bf16 ulps of the operands (the spacing of bf16 at the largest of the
output and input magnitudes at that element, so a result that cancels to nearly zero is not
judged by its own tiny spacing). Magnitude top-k methods (ties, breadcrumbs) may also differ
where |delta| ties at the k-th value: both tools keep exactly k values, but mergekit picks
among equal ones by an unstable sort and mergetui in index order; those elements are counted
apart (`tie`, `tie-diff`) and left out of the ulp columns. sce's select_topk ranks the variance
across the task vectors, which ties the same way on bf16 inputs.

Large bf16-mode gaps of the later methods have the same cause, bf16 intermediates in mergekit:
karcher rounds its unit vectors, iterates and dot products to bf16 (a dot product near 1 in
bf16 is 1 or 1 - 2^-8, so the angles it steps by are coarse); arcee_fusion computes softmaxes,
KL and importance quartiles in bf16, so its mask differs; ram / ramplus_tl decide
|delta| > epsilon on bf16-rounded deltas, so deltas near epsilon flip between unique, shared
and dropped; sce elects signs and variances on bf16 sums. In fp32 mode all agree within 1 ulp.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mergekit.merge_methods.api import merge_tensors  # noqa: E402

from mergetui.engine.methods.base import MergeInputs  # noqa: E402
from mergetui.engine.methods.registry import get_method  # noqa: E402

BF16 = torch.bfloat16


def bf16_ulp(x: torch.Tensor) -> torch.Tensor:
    """Spacing of bf16 numbers at |x| (the smallest normal spacing for tiny values)."""
    a = x.float().abs().clamp(min=torch.finfo(BF16).tiny)
    return torch.exp2(torch.floor(torch.log2(a)) - 7)


def make_inputs(kind: str, shape: tuple[int, ...], n: int, seed: int) -> list[torch.Tensor]:
    """n bf16 tensors: 'finetune' = a base plus small deltas (index 0 is the base), 'independent' = unrelated,
    'sparse' = a base plus small deltas on a random 30% of the elements of each model."""
    g = torch.Generator().manual_seed(seed)
    if kind == "independent":
        return [(torch.randn(shape, generator=g) * 0.02).to(BF16) for _ in range(n)]
    base = torch.randn(shape, generator=g) * 0.02
    out = [base.to(BF16)]
    for _ in range(n - 1):
        delta = torch.randn(shape, generator=g) * 0.002
        if kind == "sparse":
            delta *= torch.rand(shape, generator=g) < 0.3
        out.append((base + delta).to(BF16))
    return out


def ours(method: str, tensors, base_index, per_model: list[dict], shared: dict) -> torch.Tensor:
    """mergetui's result, with small chunks so the chunked paths run."""
    spec = get_method(method)
    assert spec is not None, method
    model_params = []
    for i in range(len(tensors)):
        d = {p.name: p.default for p in spec.params if p.per_model and not p.required}
        d.update(per_model[i])
        model_params.append(d)
    params = {p.name: p.default for p in spec.params if not p.per_model and not p.required}
    params.update(shared)
    inp = MergeInputs(
        name="w", tensors=tensors, base_index=base_index, model_params=model_params, params=params,
        out_dtype=BF16, chunk_elements=1 << 14,
    )
    return spec.merge(inp)


def theirs(method: str, tensors, base_index, per_model: list[dict], shared: dict, scope: str,
           dtype: torch.dtype | None) -> torch.Tensor:
    """mergekit's result; per-model values are given as lists over the inputs or the non-base inputs."""
    params: dict[str, Any] = dict(shared)
    keys = {k for d in per_model for k in d}
    idx = [i for i in range(len(tensors)) if scope == "input" or i != base_index]
    for k in keys:
        params[k] = [per_model[i][k] for i in idx]
    return merge_tensors(list(tensors), method, parameters=params, base_index=base_index, dtype=dtype, out_dtype=BF16)


def tie_positions(tensors, base_index, per_model, method: str, shared: dict) -> torch.Tensor:
    """Elements whose |delta| equals one of a model's top-k cut values shared by several elements.

    There a top-k choice is ambiguous: both tools keep exactly k values, but mergekit picks among
    equal ones by an unstable sort and mergetui in index order, so those elements may differ.
    For sce the ranked value is the variance across the task vectors.
    """
    mask = torch.zeros(tensors[0].shape, dtype=torch.bool)
    if method == "sce" and 0 < shared.get("select_topk", 1.0) < 1:
        base = tensors[base_index].float()
        tvs = torch.stack([t.float() - base for i, t in enumerate(tensors) if i != base_index])
        var = torch.var(tvs, dim=0, unbiased=False)
        k = int(int(torch.count_nonzero(var)) * shared["select_topk"])
        if k > 0:
            eq = var == torch.kthvalue(var.reshape(-1), var.numel() - k + 1).values
            if int(eq.sum()) > 1:
                mask |= eq
        return mask
    if method not in ("ties", "breadcrumbs", "breadcrumbs_ties"):
        return mask
    base = tensors[base_index].float()
    for i, t in enumerate(tensors):
        d = per_model[i].get("density", 1.0)
        if i == base_index or d >= 1:
            continue
        a = (t.float() - base).abs()
        n = a.numel()
        if method == "ties":
            ks = [max(1, int(d * n))]
        else:
            keep, top = int(d * n), int(per_model[i].get("gamma", 0.01) * n)
            drop = n - max(0, n - keep - top) - keep
            ks = [k for k in (drop, drop + keep) if 0 < k <= n]
        for k in ks:
            eq = a == torch.kthvalue(a.reshape(-1), n - k + 1).values
            if int(eq.sum()) > 1:
                mask |= eq
    return mask


def compare(a: torch.Tensor, b: torch.Tensor, tensors, skip: torch.Tensor) -> tuple[float, float, float]:
    """(max difference in bf16 ulps of the operands, fraction differing, fraction > 1 ulp), outside `skip`.

    The ulp is taken at the largest of |ours|, |mergekit's| and the inputs' magnitudes at that
    element, so a result that cancels to nearly zero is not judged by its own tiny spacing.
    """
    diff = (a.float() - b.float()).abs()
    scale = torch.maximum(a.float().abs(), b.float().abs())
    for t in tensors:
        scale = torch.maximum(scale, t.float().abs())
    ulps = (diff / bf16_ulp(scale))[~skip]
    if not ulps.numel():
        return 0.0, 0.0, 0.0
    return float(ulps.max()), float((ulps > 0).float().mean()), float((ulps > 1).float().mean())


Case = tuple[str, str, tuple[int, ...], int, bool, list[dict], dict, str]


def cases() -> list[Case]:
    """(method, input kind, shape, number of inputs, has base, per-model params, shared params, scope)."""
    m2 = (256, 384)
    out: list[Case] = []

    def add(method, kind, shape, n, has_base, per_model, shared=None, scope="non_base"):
        out.append((method, kind, shape, n, has_base, per_model, shared or {}, scope))

    # linear: every input weighted (mergekit ignores a base for linear)
    add("linear", "finetune", m2, 3, False, [{"weight": 0.5}, {"weight": 0.3}, {"weight": 0.2}], {}, "input")
    add("linear", "independent", m2, 3, False, [{"weight": 1.0}, {"weight": 2.0}, {"weight": -0.5}],
        {"normalize": False}, "input")
    add("linear", "independent", (1000,), 2, False, [{"weight": 0.3}, {"weight": 0.9}], {}, "input")
    # slerp: independent tensors take the spherical branch, fine-tunes the lerp fallback
    for t in (0.0, 0.3, 0.75):
        add("slerp", "independent", m2, 2, True, [{}, {}], {"t": t})
    add("slerp", "finetune", m2, 2, True, [{}, {}], {"t": 0.4})
    add("slerp", "independent", (1000,), 2, True, [{}, {}], {"t": 0.6})
    # nuslerp: with and without base, flattened, row vectors, column vectors
    for has_base, kind in ((True, "finetune"), (False, "independent")):
        n = 3 if has_base else 2
        for shared in ({}, {"nuslerp_flatten": False}, {"nuslerp_flatten": False, "nuslerp_row_wise": True}):
            w = [{"weight": 0.4}, {"weight": 0.6}] if not has_base else [{}, {"weight": 0.4}, {"weight": 0.6}]
            add("nuslerp", kind, m2, n, has_base, w, shared)
    add("nuslerp", "independent", (1000,), 2, False, [{"weight": 1.0}, {"weight": 3.0}], {"nuslerp_flatten": False})
    # generalized task arithmetic, deterministic members
    w2 = [{}, {"weight": 0.7}, {"weight": 0.5}]
    add("task_arithmetic", "finetune", m2, 3, True, w2)
    add("task_arithmetic", "finetune", m2, 3, True, w2, {"normalize": True, "lambda": 0.8})
    add("ties", "finetune", m2, 3, True, [{}, {"weight": 1.0, "density": 0.5}, {"weight": 1.0, "density": 0.5}])
    add("ties", "finetune", m2, 4, True,
        [{}, {"weight": 0.6, "density": 0.2}, {"weight": 0.4, "density": 0.7}, {"weight": -0.3, "density": 0.4}])
    add("ties", "finetune", m2, 3, True, [{}, {"weight": 0.6, "density": 0.3}, {"weight": 0.4, "density": 0.6}],
        {"normalize": False, "rescale": True, "lambda": 1.5})
    add("ties", "finetune", m2, 3, True, [{}, {"weight": 0.5, "density": 1.0}, {"weight": 0.5, "density": 1.0}])
    add("ties", "finetune", (1000,), 3, True, [{}, {"weight": 0.5, "density": 0.3}, {"weight": 0.5, "density": 0.3}])
    add("breadcrumbs", "finetune", m2, 3, True,
        [{}, {"weight": 0.5, "density": 0.8, "gamma": 0.01}, {"weight": 0.5, "density": 0.8, "gamma": 0.01}])
    add("breadcrumbs", "finetune", m2, 3, True,
        [{}, {"weight": 1.0, "density": 0.5, "gamma": 0.1}, {"weight": 0.7, "density": 0.3, "gamma": 0.05}],
        {"rescale": True})
    add("breadcrumbs", "finetune", m2, 3, True,  # gamma * N < 1: no outliers cut
        [{}, {"weight": 0.5, "density": 0.5, "gamma": 1e-6}, {"weight": 0.5, "density": 0.5, "gamma": 1e-6}])
    add("breadcrumbs", "finetune", m2, 3, True,  # density + gamma > 1: the outlier cut shrinks
        [{}, {"weight": 0.5, "density": 0.95, "gamma": 0.1}, {"weight": 0.5, "density": 0.95, "gamma": 0.1}])
    add("breadcrumbs_ties", "finetune", m2, 3, True,
        [{}, {"weight": 0.6, "density": 0.7, "gamma": 0.05}, {"weight": 0.4, "density": 0.7, "gamma": 0.05}])
    add("breadcrumbs_ties", "finetune", m2, 3, True,
        [{}, {"weight": 0.6, "density": 0.7, "gamma": 0.05}, {"weight": 0.4, "density": 0.7, "gamma": 0.05}],
        {"normalize": True})
    # model stock
    add("model_stock", "finetune", m2, 3, True, [{}, {}, {}])
    add("model_stock", "finetune", m2, 4, True, [{}, {}, {}, {}], {"filter_wise": True})
    add("model_stock", "finetune", (1000,), 3, True, [{}, {}, {}], {"filter_wise": True})
    # passthrough
    add("passthrough", "independent", m2, 1, False, [{"scale": None}], {}, "input")
    add("passthrough", "independent", m2, 1, False, [{"scale": 0.37}], {}, "input")
    # multislerp: deltas around a base, or whole tensors without one
    add("multislerp", "finetune", m2, 3, True, [{}, {"weight": 0.4}, {"weight": 0.6}])
    add("multislerp", "finetune", m2, 4, True, [{}, {"weight": 0.5}, {"weight": 0.3}, {"weight": 0.2}])
    add("multislerp", "independent", m2, 3, False, [{"weight": 1.0}, {"weight": 2.0}, {"weight": 1.0}])
    add("multislerp", "independent", m2, 2, False, [{"weight": 0.3}, {"weight": 0.5}], {"normalize_weights": False})
    add("multislerp", "finetune", (1000,), 3, True, [{}, {"weight": 1.0}, {"weight": 3.0}])
    add("multislerp", "finetune", m2, 2, True, [{}, {"weight": 1.0}])  # one model: itself
    # karcher: every input counts (the finetune base included, as a plain model)
    add("karcher", "independent", m2, 3, False, [{}, {}, {}])
    add("karcher", "finetune", m2, 3, False, [{}, {}, {}])
    add("karcher", "independent", m2, 4, False, [{}, {}, {}, {}], {"max_iter": 3, "tol": 1e-3})
    add("karcher", "independent", (1000,), 2, False, [{}, {}])
    # sce: select_topk picks elements by variance across the task vectors
    add("sce", "finetune", m2, 3, True, [{}, {}, {}])
    add("sce", "finetune", m2, 4, True, [{}, {}, {}, {}], {"select_topk": 0.5})
    add("sce", "finetune", m2, 3, True, [{}, {}, {}], {"select_topk": 0.1})
    add("sce", "sparse", m2, 4, True, [{}, {}, {}, {}], {"select_topk": 0.3})
    add("sce", "finetune", (1000,), 3, True, [{}, {}, {}], {"select_topk": 0.7})
    # nearswap: t around the size of the deltas
    for t in (0.0005, 0.002, 0.01):
        add("nearswap", "finetune", m2, 2, True, [{}, {}], {"t": t})
    add("nearswap", "independent", m2, 2, True, [{}, {}], {"t": 0.01})
    # arcee_fusion: exact quartiles (mergekit samples only above 1M elements)
    add("arcee_fusion", "finetune", m2, 2, True, [{}, {}])
    add("arcee_fusion", "independent", m2, 2, True, [{}, {}])
    add("arcee_fusion", "finetune", (1000,), 2, True, [{}, {}])
    # ram: deltas on a random 30% of each model's elements overlap on some elements only
    add("ram", "sparse", m2, 3, True, [{}, {}, {}])
    add("ram", "sparse", m2, 4, True, [{}, {}, {}, {}])
    add("ram", "finetune", m2, 3, True, [{}, {}, {}], {"epsilon": 0.002})
    add("ramplus_tl", "sparse", m2, 3, True, [{}, {}, {}])
    add("ramplus_tl", "sparse", m2, 4, True, [{}, {}, {}, {}], {"r": 0.5, "alpha": 1.0})
    add("ramplus_tl", "finetune", m2, 3, True, [{}, {}, {}], {"epsilon": 0.002, "r": 1.0, "alpha": 0.5})
    return out


def main() -> None:
    torch.set_num_threads(1)
    print(f"mergetui vs mergekit 0.1.5, torch {torch.__version__}; inputs bf16, output bf16")
    print("ulp: max |mergetui - mergekit| in bf16 ulps of the operands; diff: fraction of elements differing;")
    print(">1ulp: fraction differing by more than 1 ulp")
    print("fp32: mergekit with dtype=float32 (same compute dtype as mergetui); bf16: mergekit's default for bf16")
    print("     inputs (dtype unset or bfloat16), where its methods keep bf16 intermediates")
    print("tie: elements where a top-k cut is ambiguous (|delta| equal to the cut value), excluded from ulp;")
    print("     tie-diff: how many of those differ")
    print()
    header = (f"{'method':16} {'inputs':12} {'shape':8} {'params':62} {'fp32 ulp':>8} {'diff':>6} "
              f"{'tie':>5} {'tie-diff':>8} | {'bf16 ulp':>8} {'>1ulp':>6}")
    print(header)
    print("-" * len(header))
    worst: dict[str, tuple[float, float]] = {}
    for seed, (method, kind, shape, n, has_base, per_model, shared, scope) in enumerate(cases()):
        tensors = make_inputs(kind, shape, n, seed)
        base_index = 0 if has_base else None
        mine = ours(method, tensors, base_index, per_model, shared)
        ref32 = theirs(method, tensors, base_index, per_model, shared, scope, torch.float32)
        ref16 = theirs(method, tensors, base_index, per_model, shared, scope, None)
        ties = tie_positions(tensors, base_index, per_model, method, shared)
        u32, f32, _ = compare(mine, ref32, tensors, ties)
        u16, _, g16 = compare(mine, ref16, tensors, ties)
        tie_diff = int(((mine.float() != ref32.float()) & ties).sum())
        label = ", ".join(f"{k}={v}" for k, v in shared.items())
        pm = [d for i, d in enumerate(per_model) if i != base_index or scope == "input"]
        vals = {k: [d[k] for d in pm] for k in (pm[0] if pm else {})}
        label = "; ".join(x for x in (label, ", ".join(f"{k}={v}" for k, v in vals.items())) if x)
        label = label.replace("nuslerp_", "")
        shape_s = "x".join(map(str, shape))
        inputs = f"{n - int(has_base)}{'+base' if has_base else ''} {kind[:5]}"
        print(f"{method:16} {inputs:12} {shape_s:8} {label[:62]:62} {u32:8.2f} {f32:6.4f} "
              f"{int(ties.sum()):5d} {tie_diff:8d} | {u16:8.2f} {g16:6.4f}")
        w32, w16 = worst.get(method, (0.0, 0.0))
        worst[method] = (max(w32, u32), max(w16, u16))
    print()
    print("worst max ulp per method (fp32 | bf16 mode):")
    for m, (u32, u16) in worst.items():
        print(f"  {m:16} {u32:6.2f} | {u16:6.2f}")


if __name__ == "__main__":
    main()
