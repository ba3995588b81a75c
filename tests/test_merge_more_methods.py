"""`mergetui merge` end to end with multislerp, karcher, sce, nearswap, arcee_fusion, ram and ramplus_tl.

Each test merges tiny llama models from a YAML config and checks one tensor of the output
against the whole-tensor reference formula of tests/test_methods_more.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_merge_cli import _bad, load_dir, merge, write
from test_methods import close
from test_methods_more import (
    ref_arcee_fusion,
    ref_karcher,
    ref_multislerp,
    ref_nearswap,
    ref_ram,
    ref_sce,
)
from tiny_models import make_model

TENSOR = "model.layers.1.mlp.up_proj.weight"


@pytest.fixture(scope="module")
def trio(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A base model and two fine-tunes of it."""
    d = tmp_path_factory.mktemp("trio")
    base = make_model(d / "base", "llama", layers=2, seed=0)
    a = make_model(d / "a", "llama", layers=2, seed=1, base=base)
    b = make_model(d / "b", "llama", layers=2, seed=2, base=base)
    return base, a, b


def _merged(tmp_path: Path, text: str) -> dict[str, torch.Tensor]:
    out = tmp_path / "out"
    assert merge(write(tmp_path, text), out) == 0
    return load_dir(out)


def _tensor(*models: Path) -> list[torch.Tensor]:
    return [load_dir(m)[TENSOR] for m in models]


def test_multislerp(tmp_path: Path, trio) -> None:
    base, a, b = trio
    out = _merged(tmp_path, f"merge_method: multislerp\nbase_model: {base}\nmodels:\n"
                            f"  - model: {a}\n    parameters: {{weight: 0.4}}\n  - model: {b}\n    parameters: {{weight: 0.6}}\n")
    tb, ta, tbb = _tensor(base, a, b)
    close(out[TENSOR], ref_multislerp([ta, tbb], [0.4, 0.6], tb))


def test_karcher_averages_the_base_model_too(tmp_path: Path, trio) -> None:
    base, a, b = trio
    out = _merged(tmp_path, f"merge_method: karcher\nbase_model: {base}\nmodels: [{{model: {a}}}, {{model: {b}}}]\n"
                            "parameters: {max_iter: 20}\n")
    close(out[TENSOR], ref_karcher(_tensor(a, b, base), max_iter=20))


def test_sce(tmp_path: Path, trio) -> None:
    base, a, b = trio
    out = _merged(tmp_path, f"merge_method: sce\nbase_model: {base}\nmodels: [{{model: {a}}}, {{model: {b}}}]\n"
                            "parameters: {select_topk: 0.5}\n")
    close(out[TENSOR], ref_sce(_tensor(base, a, b), 0.5))


def test_nearswap(tmp_path: Path, trio) -> None:
    base, a, _ = trio
    out = _merged(tmp_path, f"merge_method: nearswap\nbase_model: {base}\nmodels: [{{model: {a}}}]\nparameters: {{t: 0.01}}\n")
    tb, ta = _tensor(base, a)
    close(out[TENSOR], ref_nearswap(tb, ta, 0.01))


def test_arcee_fusion(tmp_path: Path, trio) -> None:
    base, a, _ = trio
    out = _merged(tmp_path, f"merge_method: arcee_fusion\nbase_model: {base}\nmodels: [{{model: {a}}}]\n")
    tb, ta = _tensor(base, a)
    ref = ref_arcee_fusion(tb, ta)
    assert 0 < int((ref != tb.double()).sum()) < tb.numel()
    close(out[TENSOR], ref)


@pytest.mark.parametrize("method", ["ram", "ramplus_tl"])
def test_ram(tmp_path: Path, trio, method: str) -> None:
    base, a, b = trio
    out = _merged(tmp_path, f"merge_method: {method}\nbase_model: {base}\nmodels: [{{model: {a}}}, {{model: {b}}}]\n"
                            "parameters: {epsilon: 0.02, r: 0.5, alpha: 1.0}\n")
    ref = ref_ram(_tensor(base, a, b), 0.02, method == "ramplus_tl", 0.5, 1.0)
    close(out[TENSOR], ref)


def test_bad_model_counts_are_refused_before_merging(tmp_path: Path, trio, capsys) -> None:
    base, a, b = trio
    err = _bad(tmp_path, f"merge_method: nearswap\nbase_model: {base}\nmodels: [{{model: {a}}}, {{model: {b}}}]\n"
                         "parameters: {t: 0.01}\n", capsys)
    assert "nearswap takes 2 models (base included), got 3" in err
    err = _bad(tmp_path, f"merge_method: multislerp\nbase_model: {base}\nmodels:\n  - model: {base}\n"
                         "    parameters: {weight: 1.0}\n", capsys)
    assert "multislerp takes at least 1 model besides the base, got 0" in err
    err = _bad(tmp_path, f"merge_method: arcee_fusion\nmodels: [{{model: {a}}}, {{model: {b}}}]\n", capsys)
    assert "needs a base_model" in err
