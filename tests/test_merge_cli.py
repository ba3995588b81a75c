"""`mergetui merge` end to end on tiny models of several families."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mergetui.cli import main
from tiny_models import FAMILIES, make_model

ROOT = Path(__file__).resolve().parents[1]


def load_dir(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a model directory."""
    sd: dict[str, torch.Tensor] = {}
    for f in sorted(path.glob("*.safetensors")):
        sd.update(load_file(f))
    return sd


def write(tmp: Path, text: str, name: str = "cfg.yml") -> Path:
    p = tmp / name
    p.write_text(text)
    return p


def merge(cfg: Path, out: Path, *extra: str) -> int:
    return main(["merge", str(cfg), str(out), "--quiet", *extra])


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("pair")
    a = make_model(d / "a", "llama", layers=4, seed=1)
    b = make_model(d / "b", "llama", layers=4, seed=2, base=a)
    return a, b


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_linear_merge_every_family_loads_in_transformers(tmp_path: Path, family: str) -> None:
    from transformers import AutoModelForCausalLM

    a = make_model(tmp_path / "a", family, layers=3, seed=1)
    b = make_model(tmp_path / "b", family, layers=3, seed=2, base=a)
    cfg = write(tmp_path, f"merge_method: linear\nmodels:\n  - model: {a}\n    parameters: {{weight: 0.25}}\n"
                          f"  - model: {b}\n    parameters: {{weight: 0.75}}\n")
    out = tmp_path / "out"
    assert merge(cfg, out) == 0
    sa, sb, so = load_dir(a), load_dir(b), load_dir(out)
    assert set(so) == set(sa)  # tied models get no lm_head, untied ones keep theirs
    for k in so:
        assert torch.allclose(so[k], 0.25 * sa[k] + 0.75 * sb[k], atol=1e-6), k
    out_cfg = json.loads((out / "config.json").read_text())
    src_cfg = json.loads((a / "config.json").read_text())
    assert out_cfg["tie_word_embeddings"] == (not any("lm_head" in k or "embed_out" in k for k in sa))
    model = AutoModelForCausalLM.from_pretrained(out)
    ids = torch.tensor([[1, 5, 9, 3]])
    with torch.no_grad():
        assert torch.isfinite(model(ids).logits).all()
    layer_key = "n_layer" if "n_layer" in src_cfg else "num_hidden_layers"
    assert out_cfg[layer_key] == 3
    for f in ("tokenizer.json", "tokenizer_config.json", "README.md", "mergetui_config.yml", "model.safetensors.index.json"):
        assert (out / f).exists(), f
    card = (out / "README.md").read_text()
    assert card.startswith("---\nbase_model:") and "- mergetui" in card and "merge_method: linear" in card


def test_passthrough_reproduces_input_bit_for_bit_and_logits(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    from transformers import AutoModelForCausalLM

    a, _ = pair
    cfg = write(tmp_path, f"merge_method: passthrough\nslices:\n  - sources: [{{model: {a}, layer_range: [0, 4]}}]\n")
    out = tmp_path / "out"
    assert merge(cfg, out) == 0
    sa, so = load_dir(a), load_dir(out)
    assert set(sa) == set(so)
    for k in sa:
        assert torch.equal(sa[k], so[k]), k
    ids = torch.tensor([[1, 7, 42, 3, 99]])
    with torch.no_grad():
        la = AutoModelForCausalLM.from_pretrained(a)(ids).logits
        lo = AutoModelForCausalLM.from_pretrained(out)(ids).logits
    assert torch.equal(la, lo)


@pytest.mark.parametrize("family", ["llama", "gpt2", "gpt_neox"])
def test_frankenmerge_layer_count_and_sources(tmp_path: Path, family: str) -> None:
    a = make_model(tmp_path / "a", family, layers=4, seed=1)
    b = make_model(tmp_path / "b", family, layers=4, seed=2)
    cfg = write(tmp_path, f"merge_method: passthrough\nslices:\n"
                          f"  - sources: [{{model: {a}, layer_range: [0, 3]}}]\n"
                          f"  - sources: [{{model: {b}, layer_range: [1, 4]}}]\n")
    out = tmp_path / "out"
    assert merge(cfg, out) == 0
    out_cfg = json.loads((out / "config.json").read_text())
    assert out_cfg.get("num_hidden_layers", out_cfg.get("n_layer")) == 6
    sa, sb, so = load_dir(a), load_dir(b), load_dir(out)
    prefix = {"llama": "model.layers", "gpt2": "transformer.h", "gpt_neox": "gpt_neox.layers"}[family]
    # output layer 4 is b's layer 2 (second slice starts at b's layer 1)
    for k in [k for k in so if k.startswith(f"{prefix}.4.")]:
        assert torch.equal(so[k], sb[k.replace(f"{prefix}.4.", f"{prefix}.2.")]), k
    for k in [k for k in so if k.startswith(f"{prefix}.1.")]:
        assert torch.equal(so[k], sa[k]), k
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.num_hidden_layers == 6


def test_gradient_weights_follow_layers(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    a, b = pair
    cfg = write(tmp_path, f"merge_method: linear\nmodels:\n  - model: {a}\n    parameters: {{weight: [1.0, 0.0]}}\n"
                          f"  - model: {b}\n    parameters: {{weight: [0.0, 1.0]}}\n")
    out = tmp_path / "out"
    assert merge(cfg, out) == 0
    sa, sb, so = load_dir(a), load_dir(b), load_dir(out)
    k0, k3 = "model.layers.0.mlp.up_proj.weight", "model.layers.3.mlp.up_proj.weight"
    assert torch.allclose(so[k0], sa[k0])  # t = 0: all a
    assert torch.allclose(so[k3], sb[k3])  # t = 1: all b
    k1 = "model.layers.1.mlp.up_proj.weight"  # t = 1/3
    assert torch.allclose(so[k1], (2 / 3) * sa[k1] + (1 / 3) * sb[k1], atol=1e-6)
    # embeddings take v[0]: all a
    assert torch.allclose(so["model.embed_tokens.weight"], sa["model.embed_tokens.weight"])


def test_dry_run_prints_plan_and_writes_nothing(tmp_path: Path, pair: tuple[Path, Path], capsys: pytest.CaptureFixture) -> None:
    a, b = pair
    cfg = write(tmp_path, f"merge_method: linear\nmodels:\n  - model: {a}\n    parameters: {{weight: 1}}\n"
                          f"  - model: {b}\n    parameters: {{weight: 1}}\n")
    out = tmp_path / "out"
    assert merge(cfg, out, "--dry-run") == 0
    text = capsys.readouterr().out
    assert "output layers: 4" in text and "peak memory" in text and "output size" in text
    assert not out.exists()


def test_events_file_and_sharding(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    a, b = pair
    cfg = write(tmp_path, f"merge_method: linear\nmodels:\n  - model: {a}\n    parameters: {{weight: 1}}\n"
                          f"  - model: {b}\n    parameters: {{weight: 1}}\n")
    out, events = tmp_path / "out", tmp_path / "ev.jsonl"
    assert merge(cfg, out, "--events", str(events), "--shard-size", "100KB") == 0
    evs = [json.loads(line) for line in events.read_text().splitlines()]
    kinds = [e["event"] for e in evs]
    assert kinds[0] == "plan" and kinds[-1] == "finished"
    n = evs[0]["tensors"]
    assert kinds.count("tensor_done") == n
    shards = sorted(p.name for p in out.glob("*.safetensors"))
    assert len(shards) == evs[0]["shards"] > 1 and kinds.count("shard_written") == len(shards)
    assert sum(e["bytes"] for e in evs if e["event"] == "tensor_done") == evs[0]["bytes"]
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == set(shards)
    assert all(p.stat().st_size <= 100_000 + 4096 for p in out.glob("*.safetensors"))


# ---- bad input: exit 2, a message naming the thing and the fix, and no output directory ----

def _bad(tmp_path: Path, text: str, capsys: pytest.CaptureFixture) -> str:
    """Both guards refuse: the pre-merge check, then (with --allow-crimes) the engine itself.

    Returns the engine's message; the check's wording is tested with the check.
    """
    cfg = write(tmp_path, text)
    out = tmp_path / "out"
    errs = []
    for extra in ((), ("--allow-crimes",)):
        assert merge(cfg, out, *extra) == 2
        assert not out.exists()
        assert not any(p.name.endswith("mergetui-partial") for p in tmp_path.iterdir())
        err = capsys.readouterr().err
        assert "Traceback" not in err and "error" in err
        errs.append(err)
    return errs[-1]


def test_bad_unknown_method_suggests_closest(tmp_path: Path, pair, capsys) -> None:
    a, b = pair
    err = _bad(tmp_path, f"merge_method: dare-ties\nbase_model: {a}\nmodels: [{{model: {b}}}]\n", capsys)
    assert "unknown merge method 'dare-ties'" in err and "dare_ties" in err


def test_bad_missing_base_model(tmp_path: Path, pair, capsys) -> None:
    a, b = pair
    err = _bad(tmp_path, f"merge_method: ties\nmodels:\n  - model: {a}\n    parameters: {{weight: 1, density: 0.5}}\n", capsys)
    assert "needs a base_model" in err


def test_bad_slerp_needs_two_models(tmp_path: Path, pair, capsys) -> None:
    a, b = pair
    c = make_model(tmp_path / "c", "llama", layers=4, seed=3)
    err = _bad(tmp_path, f"merge_method: slerp\nbase_model: {a}\nparameters: {{t: 0.5}}\n"
                         f"models: [{{model: {a}}}, {{model: {b}}}, {{model: {c}}}]\n", capsys)
    assert "slerp" in err and "2" in err


@pytest.mark.parametrize("rng, words", [("[0, 9]", "outside"), ("[2, 2]", "empty")])
def test_bad_layer_range(tmp_path: Path, pair, capsys, rng: str, words: str) -> None:
    a, _ = pair
    err = _bad(tmp_path, f"merge_method: passthrough\nslices:\n  - sources: [{{model: {a}, layer_range: {rng}}}]\n", capsys)
    assert words in err and str(a) in err


def test_bad_sources_of_different_lengths(tmp_path: Path, pair, capsys) -> None:
    a, b = pair
    err = _bad(tmp_path, f"merge_method: linear\nslices:\n  - sources:\n      - {{model: {a}, layer_range: [0, 2], parameters: {{weight: 1}}}}\n"
                         f"      - {{model: {b}, layer_range: [0, 3], parameters: {{weight: 1}}}}\n", capsys)
    assert "different lengths" in err


def test_bad_missing_model_path_and_repo(tmp_path: Path, capsys) -> None:
    err = _bad(tmp_path, f"merge_method: passthrough\nmodels: [{{model: {tmp_path}/nope}}]\n", capsys)
    assert "nope" in err and "no such directory" in err


def test_bad_directory_without_weights(tmp_path: Path, capsys) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text('{"model_type": "llama", "num_hidden_layers": 2}')
    err = _bad(tmp_path, f"merge_method: passthrough\nmodels: [{{model: {empty}}}]\n", capsys)
    assert "no weights" in err and str(empty) in err


def test_bad_vocabulary_mismatch_names_both_models(tmp_path: Path, pair, capsys) -> None:
    a, _ = pair
    big = make_model(tmp_path / "big", "llama", layers=4, seed=5, extra_tokens=2)
    err = _bad(tmp_path, f"merge_method: linear\nmodels:\n  - model: {a}\n    parameters: {{weight: 1}}\n"
                         f"  - model: {big}\n    parameters: {{weight: 1}}\n", capsys)
    assert "[128, 64]" in err and "[130, 64]" in err and str(big) in err and "tokenizer" in err


def test_bad_malformed_yaml_names_line(tmp_path: Path, capsys) -> None:
    err = _bad(tmp_path, "merge_method: linear\nmodels:\n  - model: a\n   parameters: [\n", capsys)
    assert "cfg.yml:" in err and "malformed YAML" in err


def test_bad_truncated_safetensors(tmp_path: Path, pair, capsys) -> None:
    a, _ = pair
    broken = tmp_path / "broken"
    shutil.copytree(a, broken)
    st = next(broken.glob("*.safetensors"))
    with open(st, "r+b") as f:
        f.truncate(st.stat().st_size // 2)
    err = _bad(tmp_path, f"merge_method: passthrough\nmodels: [{{model: {broken}}}]\n", capsys)
    assert st.name in err and "re-download" in err


def test_bad_not_enough_disk(tmp_path: Path, pair, capsys, monkeypatch) -> None:
    import shutil as sh
    from collections import namedtuple

    a, _ = pair
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(sh, "disk_usage", lambda p: usage(10**9, 10**9 - 1000, 1000))
    err = _bad(tmp_path, f"merge_method: passthrough\nmodels: [{{model: {a}}}]\n", capsys)
    assert "not enough free disk" in err


# ---- crash safety ----

def test_cancel_then_resume_completes_without_recomputing(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    from mergetui.engine.config import load_config
    from mergetui.engine.errors import MergeCancelled
    from mergetui.engine.executor import MergeOptions, partial_dir, run_plan
    from mergetui.engine.plan import build_plan

    a, b = pair
    cfg_path = write(tmp_path, f"merge_method: linear\nmodels:\n  - model: {a}\n    parameters: {{weight: 1}}\n"
                               f"  - model: {b}\n    parameters: {{weight: 2}}\n")
    out = tmp_path / "out"
    opts = MergeOptions(workers=1)
    seen: list[dict] = []

    def stop_after_ten(ev: dict) -> None:
        seen.append(ev)
        if ev["event"] == "tensor_done" and ev["done"] == 10:
            opts.cancel.set()

    opts.events.append(stop_after_ten)
    with pytest.raises(MergeCancelled):
        run_plan(build_plan(load_config(cfg_path)), out, opts)
    assert not out.exists() and partial_dir(out).exists()

    again: list[dict] = []
    run_plan(build_plan(load_config(cfg_path)), out, MergeOptions(resume=True, events=[again.append]))
    plan_ev = again[0]
    assert plan_ev["already_done"] >= 10
    assert sum(e["event"] == "tensor_done" for e in again) == plan_ev["tensors"] - plan_ev["already_done"]
    fresh = tmp_path / "fresh"
    assert merge(cfg_path, fresh) == 0
    so, sf = load_dir(out), load_dir(fresh)
    assert set(so) == set(sf) and all(torch.equal(so[k], sf[k]) for k in so)


def test_killed_process_leaves_no_output_and_resumes(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    """SIGKILL mid-merge: the events pipe is shrunk to one page so the merge blocks part way."""
    import fcntl

    a = make_model(tmp_path / "a", "llama", layers=16, seed=1)  # ~150 tensors: far more events than a pipe page
    b = make_model(tmp_path / "b", "llama", layers=16, seed=2, base=a)
    cfg = write(tmp_path, f"merge_method: linear\nmodels:\n  - model: {a}\n    parameters: {{weight: 1}}\n"
                          f"  - model: {b}\n    parameters: {{weight: 1}}\n")
    out, fifo = tmp_path / "out", tmp_path / "events.fifo"
    os.mkfifo(fifo)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "mergetui", "merge", str(cfg), str(out), "--quiet", "--workers", "1",
                             "--events", str(fifo)], env=env)
    fd = os.open(fifo, os.O_RDONLY)
    try:
        fcntl.fcntl(fd, 1031, 4096)  # F_SETPIPE_SZ: the writer blocks after ~4 KB of events
        seen = b""
        deadline = time.time() + 60
        while b"tensor_done" not in seen and time.time() < deadline:
            seen += os.read(fd, 64)  # small unbuffered reads: leave the rest in the pipe
        assert seen.startswith(b'{"event":"plan"')
        time.sleep(0.5)  # the writer fills the pipe and blocks mid-merge
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        os.close(fd)
    assert not out.exists()
    work = partial_dir_of(out)
    done = (work / "mergetui-done.log").read_text().split()
    total = len(load_dir(a))
    assert 0 < len(done) < total
    assert merge(cfg, out, "--resume") == 0
    fresh = tmp_path / "fresh"
    assert merge(cfg, fresh) == 0
    so, sf = load_dir(out), load_dir(fresh)
    assert set(so) == set(sf) and all(torch.equal(so[k], sf[k]) for k in so)


def partial_dir_of(out: Path) -> Path:
    return out.parent / f".{out.name}.mergetui-partial"


def test_cuda_without_gpu_is_a_clear_error(tmp_path: Path, pair, capsys) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    a, _ = pair
    cfg = write(tmp_path, f"merge_method: passthrough\nmodels: [{{model: {a}}}]\n")
    assert merge(cfg, tmp_path / "out", "--device", "cuda") == 2
    assert "no CUDA device" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_zero_weight_sum_is_a_clear_error_naming_the_tensor(tmp_path: Path, pair, capsys) -> None:
    a, b = pair
    err = _bad(tmp_path, f"merge_method: linear\nmodels:\n  - model: {a}\n    parameters: {{weight: 1}}\n"
                         f"  - model: {b}\n    parameters: {{weight: -1}}\n", capsys)
    assert "linear" in err and "weight" in err and ".weight" in err


@pytest.mark.parametrize("kind", ["sharded", "bin"])
def test_sharded_and_bin_inputs_merge_like_single_file(tmp_path: Path, pair: tuple[Path, Path], kind: str) -> None:
    a, b = pair
    if kind == "sharded":
        other = make_model(tmp_path / "b2", "llama", layers=4, seed=2, base=a, max_shard_size="100KB")
        assert len(list(other.glob("*.safetensors"))) > 1
    else:
        other = make_model(tmp_path / "b2", "llama", layers=4, seed=2, base=a, safe_serialization=False)
        assert not list(other.glob("*.safetensors")) and list(other.glob("*.bin"))
    cfg = write(tmp_path, f"merge_method: linear\nmodels:\n  - model: {a}\n    parameters: {{weight: 1}}\n"
                          f"  - model: {other}\n    parameters: {{weight: 1}}\n")
    ref_cfg = write(tmp_path, f"merge_method: linear\nmodels:\n  - model: {a}\n    parameters: {{weight: 1}}\n"
                              f"  - model: {b}\n    parameters: {{weight: 1}}\n", "ref.yml")
    assert merge(cfg, tmp_path / "out") == 0
    assert merge(ref_cfg, tmp_path / "ref") == 0
    so, sr = load_dir(tmp_path / "out"), load_dir(tmp_path / "ref")
    assert set(so) == set(sr) and all(torch.equal(so[k], sr[k]) for k in so)


def test_bad_model_stock_needs_two_models_besides_base(tmp_path: Path, pair, capsys) -> None:
    a, b = pair
    err = _bad(tmp_path, f"merge_method: model_stock\nbase_model: {a}\nmodels: [{{model: {a}}}, {{model: {b}}}]\n", capsys)
    assert "model_stock takes at least 2 models besides the base, got 1" in err


def test_verbatim_copy_falls_back_without_copy_file_range(tmp_path: Path, pair, monkeypatch) -> None:
    """Filesystems without copy_file_range get the same bytes through pread/pwrite."""
    def refuse(*args: object) -> int:
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(os, "copy_file_range", refuse)
    a, _ = pair
    cfg = write(tmp_path, f"merge_method: passthrough\nslices:\n  - sources: [{{model: {a}, layer_range: [0, 4]}}]\n")
    assert merge(cfg, tmp_path / "out") == 0
    sa, so = load_dir(a), load_dir(tmp_path / "out")
    assert set(sa) == set(so) and all(torch.equal(sa[k], so[k]) for k in sa)


def test_out_dtype_casts_once_and_config_follows(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    a, b = pair
    cfg = write(tmp_path, f"merge_method: linear\nmodels:\n  - model: {a}\n    parameters: {{weight: 1}}\n"
                          f"  - model: {b}\n    parameters: {{weight: 3}}\ndtype: float32\nout_dtype: bfloat16\n")
    out = tmp_path / "out"
    assert merge(cfg, out, "--device", "auto") == 0
    so, sa, sb = load_dir(out), load_dir(a), load_dir(b)
    assert all(t.dtype == torch.bfloat16 for t in so.values())
    k = "model.layers.2.self_attn.o_proj.weight"
    assert torch.equal(so[k], ((sa[k] + 3 * sb[k]) / 4).to(torch.bfloat16))  # fp32 math, one cast
    assert json.loads((out / "config.json").read_text())["torch_dtype"] == "bfloat16"
