"""Checking Hub models through the real huggingface_hub client against the local Hub server."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from safetensors.torch import load_file

from hub_server import HubServer, write_sparse_safetensors

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "hf_testTokenSecret0123456789abcdef"


def publish(hub: HubServer, path: Path, name: str = "model", **kwargs) -> str:
    """Serve `path` under a fresh repo id (so every test starts cold for it)."""
    repo_id = f"t{uuid.uuid4().hex[:10]}/{name}"
    hub.add_repo(repo_id, path, **kwargs)
    return repo_id


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run `python -m mergetui ...` in a subprocess with this worker's environment."""
    full = dict(os.environ, PYTHONPATH=str(ROOT), **(env or {}))
    return subprocess.run([sys.executable, "-m", "mergetui", *args], env=full, capture_output=True, text=True, timeout=timeout)


def weight_bytes_served(hub: HubServer) -> int:
    """Body bytes the server sent from weight files (headers included)."""
    return sum(n for _, path, _, _, n in hub.counters.requests if path.split("?")[0].endswith((".safetensors", ".bin")))


def weight_requests(hub: HubServer) -> int:
    """Requests the server answered for weight files."""
    return sum(1 for _, path, *_ in hub.counters.requests if path.split("?")[0].endswith((".safetensors", ".bin")))


def strip_volatile(report: dict) -> dict:
    for m in report["models"]:
        m.pop("from_cache")
    return report


def test_two_remote_models_transfer_no_tensor_data_and_work_offline(hub, tiny_model, isolated_caches, monkeypatch) -> None:
    from huggingface_hub import constants

    from mergetui.inspect.check import check_models

    a = publish(hub, tiny_model("llama", layers=4, seed=1))
    b = publish(hub, tiny_model("llama", layers=4, seed=2, extra_tokens=3))
    hub.reset_counters()
    t0 = time.perf_counter()
    cold = check_models([a, b])
    cold_s = time.perf_counter() - t0
    assert hub.counters.tensor_bytes_sent == 0
    assert 0 < weight_bytes_served(hub) < 16 * 1024  # the two headers, nothing else of the weights
    assert not list((isolated_caches / "hf-cache").rglob("*.safetensors"))
    rows = [f for f in cold.findings if f.code == "embedding-rows-differ"]
    assert rows and rows[0].severity == "error" and cold.exit_code == 1
    assert "<extra_0>" in rows[0].fix and "tokenizer_source: union" in rows[0].fix
    assert cold_s < 2.0

    hub.reset_counters()
    t0 = time.perf_counter()
    warm = check_models([a, b])
    warm_s = time.perf_counter() - t0
    assert hub.counters.requests == []  # answered from mergetui's cache
    assert warm_s < 0.3

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    offline = check_models([a, b])
    assert hub.counters.requests == []
    assert strip_volatile(offline.to_dict()) == strip_volatile(cold.to_dict())
    assert warm.to_json() == offline.to_json()


def test_offline_cli_gives_the_same_report(hub, tiny_model, tmp_path) -> None:
    a = publish(hub, tiny_model("llama", layers=4, seed=1))
    b = publish(hub, tiny_model("qwen2", layers=4, seed=1))
    env = {"HF_HOME": str(tmp_path / "hf"), "MERGETUI_CACHE_DIR": str(tmp_path / "mc")}
    online = cli("check", "--json", a, b, env=env)
    assert online.returncode == 1, online.stderr  # architectures and shapes differ
    report = json.loads(online.stdout)
    codes = {f["code"] for f in report["findings"]}
    assert "architecture-differs" in codes
    offline = cli("check", "--json", a, b, env={**env, "HF_HUB_OFFLINE": "1"})
    assert offline.returncode == 1, offline.stderr
    assert strip_volatile(json.loads(offline.stdout)) == strip_volatile(report)
    unknown = cli("check", a, "nobody/never-seen", env={**env, "HF_HUB_OFFLINE": "1"})
    assert unknown.returncode == 2 and "HF_HUB_OFFLINE" in unknown.stderr and "Traceback" not in unknown.stderr


def test_sharded_repo_matches_single_file_repo(hub, tiny_model) -> None:
    from mergetui.inspect.check import check_models

    single = publish(hub, tiny_model("llama", layers=4, seed=5))
    sharded = publish(hub, tiny_model("llama", layers=4, seed=5, max_shard_size="200KB"))
    hub.reset_counters()
    report = check_models([single, sharded])
    assert hub.counters.tensor_bytes_sent == 0
    p1, p2 = report.profiles
    assert len(p2.weight_files) > 1 and len({t.file for t in p2.tensors.values()}) == len(p2.weight_files)
    assert p1.parameters == p2.parameters and p1.nbytes == p2.nbytes
    assert {n: t.shape for n, t in p1.tensors.items()} == {n: t.shape for n, t in p2.tensors.items()}
    assert not report.has_errors, [f.message for f in report.findings]


def test_gated_repo_with_and_without_token(hub, tiny_model, tmp_path) -> None:
    path = tiny_model("llama", layers=2, seed=3)
    gated = publish(hub, path, gated="manual", tokens=[TOKEN])
    env = {"HF_HOME": str(tmp_path / "hf"), "MERGETUI_CACHE_DIR": str(tmp_path / "mc")}
    anon = cli("inspect", gated, env=env)
    assert anon.returncode == 2
    assert "gated" in anon.stderr and "HF_TOKEN" in anon.stderr and "Traceback" not in anon.stderr
    wrong = cli("inspect", gated, env={**env, "HF_TOKEN": "hf_wrongWrongWrong0123456789"})
    assert wrong.returncode == 2 and "not been granted" in wrong.stderr
    assert "hf_wrongWrongWrong0123456789" not in wrong.stderr + wrong.stdout
    ok = cli("inspect", "--json", gated, env={**env, "HF_TOKEN": TOKEN})
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["gated"] == "manual"
    assert TOKEN not in ok.stdout + ok.stderr
    for f in (tmp_path / "mc").rglob("*"):
        if f.is_file():
            assert TOKEN not in f.read_text(errors="replace")


def test_missing_repo_and_revision_are_clear_errors(hub, tiny_model) -> None:
    from mergetui.engine.errors import ModelError
    from mergetui.inspect.check import check_models

    real = publish(hub, tiny_model("llama", layers=2, seed=1))
    with pytest.raises(ModelError, match="no such repo"):
        check_models([real, "nobody/does-not-exist"])
    with pytest.raises(ModelError, match="no revision 'v9'"):
        check_models([f"{real}@v9"])
    r = cli("check", real, "nobody/does-not-exist")
    assert r.returncode == 2 and "nobody/does-not-exist" in r.stderr and "Traceback" not in r.stderr


def test_bin_only_repo_is_a_warning_and_downloads_nothing(hub, tiny_model, tmp_path) -> None:
    import torch

    from mergetui.inspect.check import check_models

    src = tiny_model("llama", layers=2, seed=1)
    binary = tmp_path / "bin-model"
    shutil.copytree(src, binary, ignore=shutil.ignore_patterns("*.safetensors"))
    torch.save(load_file(src / "model.safetensors"), binary / "pytorch_model.bin")
    repo = publish(hub, binary)
    other = publish(hub, src)
    hub.reset_counters()
    report = check_models([repo, other])
    assert hub.counters.tensor_bytes_sent == 0 and weight_bytes_served(hub) < 16 * 1024
    p = report.profiles[0]
    assert p.weight_format == "bin" and not p.tensors and p.hidden_size == 64
    codes = {f.code: f.severity for f in report.findings}
    assert codes.get("bin-weights") == "warning"
    assert not report.has_errors


def test_unreachable_endpoint_fails_clearly_and_quickly(dead_endpoint, tmp_path) -> None:
    env = {"HF_ENDPOINT": dead_endpoint, "HF_HOME": str(tmp_path / "hf"), "MERGETUI_CACHE_DIR": str(tmp_path / "mc")}
    t0 = time.monotonic()
    r = cli("check", "org/one", "org/two", env=env, timeout=60)
    elapsed = time.monotonic() - t0
    assert r.returncode == 2, r.stderr
    assert "cannot reach the Hub" in r.stderr and dead_endpoint in r.stderr
    assert "Traceback" not in r.stderr
    assert elapsed < 30


def _fake_7b(root: Path, extra_tokens: int) -> Path:
    """A Llama-2-7B-shaped repo: real config, tokenizer and headers; tensor data is a sparse hole."""
    from tiny_models import write_tokenizer

    hidden, inter, layers, vocab = 4096, 11008, 32, 32000 + extra_tokens
    cfg = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden, "intermediate_size": inter,
        "num_hidden_layers": layers, "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": vocab,
        "max_position_embeddings": 4096, "rope_theta": 10000.0, "tie_word_embeddings": False, "torch_dtype": "float16",
    }
    root.mkdir(parents=True)
    (root / "config.json").write_text(json.dumps(cfg))
    write_tokenizer(root, vocab=32000, extra_tokens=extra_tokens)
    shards: list[dict[str, tuple[str, tuple[int, ...]]]] = [{}, {}]
    shards[0]["model.embed_tokens.weight"] = ("F16", (vocab, hidden))
    for i in range(layers):
        s = shards[0 if i < layers // 2 else 1]
        p = f"model.layers.{i}."
        for n in ("q_proj", "k_proj", "v_proj", "o_proj"):
            s[p + f"self_attn.{n}.weight"] = ("F16", (hidden, hidden))
        s[p + "mlp.gate_proj.weight"] = ("F16", (inter, hidden))
        s[p + "mlp.up_proj.weight"] = ("F16", (inter, hidden))
        s[p + "mlp.down_proj.weight"] = ("F16", (hidden, inter))
        s[p + "input_layernorm.weight"] = ("F16", (hidden,))
        s[p + "post_attention_layernorm.weight"] = ("F16", (hidden,))
    shards[1]["model.norm.weight"] = ("F16", (hidden,))
    shards[1]["lm_head.weight"] = ("F16", (vocab, hidden))
    weight_map, total = {}, 0
    for k, tensors in enumerate(shards):
        name = f"model-{k + 1:05d}-of-00002.safetensors"
        total += write_sparse_safetensors(root / name, tensors)
        weight_map.update({t: name for t in tensors})
    (root / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
    return root


def test_7b_shaped_model_costs_the_same_as_a_tiny_one(hub, tiny_model, tmp_path) -> None:
    from mergetui.inspect.check import check_models

    a = publish(hub, _fake_7b(tmp_path / "a", extra_tokens=1), "llama-7b-a")
    b = publish(hub, _fake_7b(tmp_path / "b", extra_tokens=3), "llama-7b-b")
    shards = list((tmp_path / "a").glob("*.safetensors"))
    assert sum(f.stat().st_size for f in shards) > 13e9
    if sum(f.stat().st_blocks * 512 for f in shards) > 64 * 1024**2:
        pytest.skip("this filesystem does not keep sparse files sparse")
    hub.reset_counters()
    t0 = time.perf_counter()
    report = check_models([a, b])
    elapsed = time.perf_counter() - t0
    assert hub.counters.tensor_bytes_sent == 0
    assert weight_bytes_served(hub) < 128 * 1024  # four shard headers out of 27 GB
    assert elapsed < 2.0
    p = report.profiles[0]
    assert p.parameters == 6_738_423_808 and p.layers == 32 and p.embed_rows == 32001
    rows = next(f for f in report.findings if f.code == "embedding-rows-differ")
    assert "32001" in rows.message and "32003" in rows.message and "<extra_1>, <extra_2>" in rows.fix
    # a tiny pair with two shards each costs as many weight-file requests as the 7B pair
    t1 = publish(hub, tiny_model("llama", layers=4, seed=1, max_shard_size="400KB"))
    t2 = publish(hub, tiny_model("llama", layers=4, seed=2, max_shard_size="400KB"))
    big = weight_requests(hub)
    hub.reset_counters()
    check_models([t1, t2])
    assert weight_requests(hub) == big == 8  # 2 models x 2 shards x (length + header)


def test_hub_source_downloads_only_the_needed_shard(hub, tiny_model, isolated_caches) -> None:
    from mergetui.engine.sources import open_source

    repo = publish(hub, tiny_model("llama", layers=4, seed=5, max_shard_size="200KB"))
    src = open_source(repo)
    metas = src.tensors()
    first_layer = {m.file for n, m in metas.items() if n.startswith("model.layers.0.")}
    assert len(first_layer) == 1
    before = src.missing_bytes()
    hub.reset_counters()
    root = src.fetch(first_layer)
    assert (root / "config.json").is_file() and (root / "tokenizer.json").is_file()
    downloaded = {Path(p.split("?")[0]).name for m, p, *_ in hub.counters.requests if m == "GET" and p.endswith(".safetensors")}
    assert downloaded == first_layer
    assert src.missing_bytes() == before - sum(src.weight_files()[f] for f in first_layer)
    entries = src.local_entries()
    assert "model.layers.0.mlp.up_proj.weight" in entries and entries["model.layers.0.mlp.up_proj.weight"].start > 0


def test_search_and_cached_repos(hub, tiny_model, monkeypatch, dead_endpoint) -> None:
    from huggingface_hub import constants

    from mergetui.engine.errors import ModelError
    from mergetui.inspect.hub import cached_repos, download, hub_facts, search_models

    tag = uuid.uuid4().hex[:8]
    path = tiny_model("llama", layers=2, seed=1)
    hub.add_repo(f"finder/{tag}-a", path, downloads=1, likes=9)
    hub.add_repo(f"finder/{tag}-b", path, downloads=7, likes=2)
    assert [m.repo_id for m in search_models(tag)] == [f"finder/{tag}-b", f"finder/{tag}-a"]
    assert [m.repo_id for m in search_models(tag, sort="likes", limit=1)] == [f"finder/{tag}-a"]
    assert search_models(tag, author="someone-else") == []
    # parameter counts come with the results (the Hub's safetensors index), for Browse's table
    expected = sum(t.numel() for t in load_file(next(path.glob("*.safetensors"))).values())
    assert {m.parameters for m in search_models(tag)} == {expected}
    facts = hub_facts(f"finder/{tag}-a")
    download(facts.repo_id, facts.commit, "config.json")
    assert f"finder/{tag}-a" in {r.repo_id for r in cached_repos()}
    monkeypatch.setattr(constants, "ENDPOINT", dead_endpoint)
    monkeypatch.setenv("MERGETUI_HUB_TIMEOUT", "1")
    t0 = time.monotonic()
    with pytest.raises(ModelError, match="cannot reach the Hub"):
        search_models(tag)
    assert time.monotonic() - t0 < 10


def test_offline_reads_a_repo_another_tool_downloaded(hub, tiny_model, isolated_caches, monkeypatch) -> None:
    from huggingface_hub import constants, snapshot_download

    from mergetui.inspect.profile import profile_model

    path = tiny_model("llama", layers=2, seed=7, extra_tokens=1)
    repo = publish(hub, path)
    snapshot_download(repo)  # e.g. `hf download`: mergetui has never seen this repo
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    hub.reset_counters()
    p = profile_model(repo)
    assert hub.counters.requests == []
    assert p.kind == "hub" and p.commit and p.embed_rows == 129 and p.tokenizer_length == 129
    assert p.parameters == profile_model(str(path)).parameters


def test_several_unreadable_models_are_reported_together(hub, tiny_model) -> None:
    from mergetui.engine.errors import ModelError
    from mergetui.inspect.check import check_models

    real = publish(hub, tiny_model("llama", layers=2, seed=1))
    gated = publish(hub, tiny_model("llama", layers=2, seed=1), gated="auto", tokens=[TOKEN])
    with pytest.raises(ModelError) as err:
        check_models([real, "nobody/typo", gated])
    assert "nobody/typo" in err.value.message and gated in err.value.message
    assert "HF_TOKEN" in (err.value.fix or "")


def test_merge_of_hub_models_downloads_only_what_the_slices_use(hub, tiny_model, isolated_caches) -> None:
    from safetensors.torch import load_file

    from mergetui.cli import main

    path = tiny_model("llama", layers=4, seed=5, max_shard_size="200KB")
    repo = publish(hub, path)
    cfg = isolated_caches / "frank.yml"
    cfg.write_text(f"merge_method: passthrough\nslices:\n  - sources: [{{model: {repo}, layer_range: [0, 1]}}]\n")
    hub.reset_counters()
    assert main(["merge", str(cfg), str(isolated_caches / "out"), "--quiet"]) == 0
    full_downloads = {Path(p).name for m, p, rng, *_ in hub.counters.requests if m == "GET" and p.endswith(".safetensors") and rng is None}
    index = json.loads((path / "model.safetensors.index.json").read_text())["weight_map"]
    used = {index[n] for n in index if not n.startswith("model.layers.") or n.startswith("model.layers.0.")}
    assert full_downloads == used and len(used) < len(set(index.values()))
    out = {}
    for f in (isolated_caches / "out").glob("*.safetensors"):
        out.update(load_file(f))
    src = {}
    for f in path.glob("*.safetensors"):
        src.update(load_file(f))
    assert out["model.layers.0.mlp.up_proj.weight"].equal(src["model.layers.0.mlp.up_proj.weight"])
    assert "model.layers.1.mlp.up_proj.weight" not in out
