"""Whole merges, mergetui vs mergekit-yaml, on tiny local models: same YAML, same tensors?

A dev tool, not a test: mergekit is never a dependency of mergetui. Make a throwaway venv
(torch first, so pip takes the local CPU wheel):

    python3 -m venv /tmp/mkvenv && /tmp/mkvenv/bin/pip install torch==2.13.0 && \
        /tmp/mkvenv/bin/pip install mergekit==0.1.5
    .venv/bin/python benchmarks/compare_mergekit_e2e.py --mergekit /tmp/mkvenv/bin/mergekit-yaml

For each config it runs both tools and prints, per config, the largest difference of any
element in units of bf16 resolution at the magnitude of the values involved (the largest of
either output, the first input model and the base at that element): mergekit computes in bf16 when the
config says so, mergetui in float32, so <= 1-2 units means "within bf16 rounding". The last
column is the fraction of elements more than 2 units apart.

Configs whose outcome is a selection (ties, breadcrumbs, sce's select_topk, arcee_fusion's
importance fence, ram's |delta| > epsilon) differ by whole deltas (~256 units) on a few
elements: ties and sce rank bf16-quantized values with many equal ones at the cut, where
mergekit's sort picks arbitrarily and mergetui in index order; with `dtype: bfloat16` mergekit
also rounds the ranked values themselves (importance, deltas near epsilon) to bf16. The
`_fp32` variants (`dtype: float32`, `out_dtype: bfloat16`) compare like for like: there only
the ties at the cut remain.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from tiny_models import make_model  # noqa: E402

CONFIGS = {
    "linear": "merge_method: linear\nmodels:\n  - model: {a}\n    parameters: {{weight: 0.3}}\n  - model: {b}\n    parameters: {{weight: 0.7}}\ndtype: bfloat16\n",
    "linear_gradient_filter": (
        "merge_method: linear\nmodels:\n  - model: {a}\n    parameters:\n      weight:\n        - {{filter: mlp, value: [0.1, 0.9]}}\n        - {{value: 0.5}}\n"
        "  - model: {b}\n    parameters: {{weight: [1, 0.2, 0.6]}}\nparameters: {{normalize: true}}\ndtype: bfloat16\n"
    ),
    "slerp": "merge_method: slerp\nbase_model: {a}\nmodels: [{{model: {a}}}, {{model: {b}}}]\nparameters:\n  t:\n    - {{filter: self_attn, value: [0, 0.5, 0.3, 0.7, 1]}}\n    - {{value: 0.5}}\ndtype: bfloat16\n",
    "task_arithmetic": "merge_method: task_arithmetic\nbase_model: {base}\nmodels:\n  - model: {a}\n    parameters: {{weight: 0.6}}\n  - model: {b}\n    parameters: {{weight: 0.4}}\ndtype: bfloat16\n",
    "ties": "merge_method: ties\nbase_model: {base}\nmodels:\n  - model: {a}\n    parameters: {{weight: 0.5, density: 0.5}}\n  - model: {b}\n    parameters: {{weight: 0.5, density: 0.7}}\nparameters: {{normalize: true}}\ndtype: bfloat16\n",
    "breadcrumbs_ties": "merge_method: breadcrumbs_ties\nbase_model: {base}\nmodels:\n  - model: {a}\n    parameters: {{weight: 0.5, density: 0.8, gamma: 0.05}}\n  - model: {b}\n    parameters: {{weight: 0.5, density: 0.8, gamma: 0.05}}\ndtype: bfloat16\n",
    "model_stock": "merge_method: model_stock\nbase_model: {base}\nmodels: [{{model: {a}}}, {{model: {b}}}]\ndtype: bfloat16\n",
    "nuslerp": "merge_method: nuslerp\nmodels:\n  - model: {a}\n    parameters: {{weight: 0.4}}\n  - model: {b}\n    parameters: {{weight: 0.6}}\ndtype: bfloat16\n",
    "passthrough_slices": "merge_method: passthrough\nslices:\n  - sources: [{{model: {a}, layer_range: [0, 3]}}]\n  - sources: [{{model: {b}, layer_range: [1, 4]}}]\ndtype: bfloat16\n",
    "multislerp": "merge_method: multislerp\nbase_model: {base}\nmodels:\n  - model: {a}\n    parameters: {{weight: 0.4}}\n  - model: {b}\n    parameters: {{weight: 0.6}}\ndtype: bfloat16\n",
    "multislerp_fp32": "merge_method: multislerp\nbase_model: {base}\nmodels:\n  - model: {a}\n    parameters: {{weight: 0.4}}\n  - model: {b}\n    parameters: {{weight: 0.6}}\ndtype: float32\nout_dtype: bfloat16\n",
    "multislerp_no_base": "merge_method: multislerp\nmodels:\n  - model: {a}\n    parameters: {{weight: [0.2, 0.8]}}\n  - model: {b}\n    parameters: {{weight: 0.5}}\n  - model: {base}\n    parameters: {{weight: 0.3}}\ndtype: bfloat16\n",
    # the base_model is not listed: both tools average it in as a third model
    "karcher": "merge_method: karcher\nbase_model: {base}\nmodels: [{{model: {a}}}, {{model: {b}}}]\ndtype: bfloat16\n",
    "karcher_fp32": "merge_method: karcher\nmodels: [{{model: {a}}}, {{model: {b}}}, {{model: {base}}}]\nparameters: {{max_iter: 5}}\ndtype: float32\nout_dtype: bfloat16\n",
    "sce": "merge_method: sce\nbase_model: {base}\nmodels: [{{model: {a}}}, {{model: {b}}}]\nparameters: {{select_topk: 0.5}}\ndtype: bfloat16\n",
    "sce_fp32": "merge_method: sce\nbase_model: {base}\nmodels: [{{model: {a}}}, {{model: {b}}}]\nparameters: {{select_topk: 0.5}}\ndtype: float32\nout_dtype: bfloat16\n",
    "nearswap": "merge_method: nearswap\nbase_model: {base}\nmodels: [{{model: {a}}}]\nparameters: {{t: [0.005, 0.02]}}\ndtype: bfloat16\n",
    "arcee_fusion": "merge_method: arcee_fusion\nbase_model: {base}\nmodels: [{{model: {a}}}]\ndtype: bfloat16\n",
    "arcee_fusion_fp32": "merge_method: arcee_fusion\nbase_model: {base}\nmodels: [{{model: {a}}}]\ndtype: float32\nout_dtype: bfloat16\n",
    "ram": "merge_method: ram\nbase_model: {base}\nmodels: [{{model: {a}}}, {{model: {b}}}]\nparameters: {{epsilon: 0.01}}\ndtype: bfloat16\n",
    "ram_fp32": "merge_method: ram\nbase_model: {base}\nmodels: [{{model: {a}}}, {{model: {b}}}]\nparameters: {{epsilon: 0.01}}\ndtype: float32\nout_dtype: bfloat16\n",
    "ramplus_tl": "merge_method: ramplus_tl\nbase_model: {base}\nmodels: [{{model: {a}}}, {{model: {b}}}]\nparameters: {{epsilon: 0.01, r: 0.5, alpha: 1.0}}\ndtype: bfloat16\n",
    "ramplus_tl_fp32": "merge_method: ramplus_tl\nbase_model: {base}\nmodels: [{{model: {a}}}, {{model: {b}}}]\nparameters: {{epsilon: 0.01, r: 0.5, alpha: 1.0}}\ndtype: float32\nout_dtype: bfloat16\n",
}


def load_dir(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a model directory."""
    sd: dict[str, torch.Tensor] = {}
    for f in sorted(path.glob("*.safetensors")):
        sd.update(load_file(f))
    return sd


def main() -> int:
    """Run every config through both tools and print the differences."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mergekit", default="/tmp/mkvenv/bin/mergekit-yaml")
    ap.add_argument("--keep", action="store_true", help="keep the models and outputs, and print where they are")
    ap.add_argument("only", nargs="*", help="run only these configs (default: all)")
    args = ap.parse_args()
    d = Path(tempfile.mkdtemp())
    base = make_model(d / "base", "llama", layers=4, seed=0, dtype=torch.bfloat16)
    a = make_model(d / "a", "llama", layers=4, seed=1, base=base, dtype=torch.bfloat16)
    b = make_model(d / "b", "llama", layers=4, seed=2, base=base, dtype=torch.bfloat16)
    print(f"{'config':<24}{'tensors':>8}{'max diff (bf16 ulps)':>22}{'elements > 2 ulps':>19}")
    worst = 0.0
    for name, text in CONFIGS.items():
        if args.only and name not in args.only:
            continue
        cfg = d / f"{name}.yml"
        cfg.write_text(text.format(a=a, b=b, base=base))
        mk, mt = d / f"mk-{name}", d / f"mt-{name}"
        r1 = subprocess.run([args.mergekit, str(cfg), str(mk), "--allow-crimes"], capture_output=True, text=True)
        r2 = subprocess.run([sys.executable, "-m", "mergetui", "merge", str(cfg), str(mt), "--quiet"], capture_output=True, text=True)
        if r1.returncode or r2.returncode:
            print(f"{name:<24} failed: mergekit={r1.returncode} mergetui={r2.returncode}\n{r1.stderr[-800:]}\n{r2.stderr[-800:]}")
            continue
        smk, smt, sin, sbase = load_dir(mk), load_dir(mt), load_dir(a), load_dir(base)
        if set(smk) != set(smt):
            print(f"{name:<24} tensor names differ: only mergekit {sorted(set(smk) - set(smt))[:3]}, only mergetui {sorted(set(smt) - set(smk))[:3]}")
        diff, over, total = 0.0, 0, 0
        for k in set(smk) & set(smt):
            x, y = smk[k].float(), smt[k].float()
            scale = torch.maximum(x.abs(), y.abs())
            for src in (sin, sbase):  # frankenmerge outputs have layer names the inputs lack
                if k in src and src[k].shape == x.shape:
                    scale = torch.maximum(scale, src[k].float().abs())
            ulp = scale.clamp_min(1e-30) * 2.0**-7  # bf16 keeps 8 significant bits
            ulps = (x - y).abs() / ulp
            diff = max(diff, float(ulps.max()))
            over += int((ulps > 2).sum())
            total += ulps.numel()
        worst = max(worst, diff)
        print(f"{name:<24}{len(smt):>8}{diff:>22.3f}{over / max(total, 1):>19.5f}")
        if not args.keep:
            shutil.rmtree(mk)
            shutil.rmtree(mt)
    print(f"worst: {worst:.3f} bf16 ulps")
    if args.keep:
        print(f"models and outputs kept in {d}")
    else:
        shutil.rmtree(d, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
