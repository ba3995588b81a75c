"""Resource estimates of a config: output size, downloads, memory, disk."""

from __future__ import annotations

import uuid

from mergetui.engine.config import parse_config
from mergetui.inspect.check import check_config
from mergetui.inspect.estimate import estimate, human_bytes, resource_findings
from mergetui.inspect.profile import profile_model


def test_whole_model_output_equals_the_template(tiny_model, tmp_path) -> None:
    a = tiny_model("llama", layers=4, seed=1)
    b = tiny_model("llama", layers=4, seed=2, base=a)
    cfg = parse_config(f"merge_method: linear\ndtype: bfloat16\nmodels:\n  - model: {a}\n  - model: {b}\n")
    profiles = [profile_model(str(a)), profile_model(str(b))]
    est = estimate(cfg, profiles, out_dir=tmp_path / "out" / "deeper")
    assert est.output.layers == 4 and est.output.parameters == profiles[0].parameters
    assert est.output.dtype == "BF16" and est.output.nbytes == 2 * profiles[0].parameters
    assert est.download_bytes == 0 and est.cached_bytes == sum(sum(p.weight_files.values()) for p in profiles)
    assert est.peak_ram > 0 and est.peak_vram == 0 and est.out_free and est.out_free > 0
    assert resource_findings(est) == []


def test_frankenmerge_counts_stacked_layers(tiny_model) -> None:
    a = tiny_model("llama", layers=4, seed=1)
    b = tiny_model("llama", layers=4, seed=2, base=a)
    cfg = parse_config(
        "merge_method: passthrough\nslices:\n"
        f"  - sources: [{{model: {a}, layer_range: [0, 3]}}]\n"
        f"  - sources: [{{model: {b}, layer_range: [1, 4]}}]\n"
    )
    pa = profile_model(str(a))
    est = estimate(cfg, [pa, profile_model(str(b))])
    per_layer = sum(t.nbytes for n, t in pa.tensors.items() if n.startswith("model.layers.0.")) // 4
    outside = sum(t.nbytes for n, t in pa.tensors.items() if not n.startswith("model.layers.")) // 4
    assert est.output.layers == 6
    assert est.output.parameters == 6 * per_layer + outside


def test_hub_slices_download_only_needed_shards(hub, tiny_model, isolated_caches) -> None:
    repo = f"t{uuid.uuid4().hex[:8]}/sharded"
    path = tiny_model("llama", layers=4, seed=5, max_shard_size="200KB")
    hub.add_repo(repo, path)
    cfg = parse_config(f"merge_method: passthrough\nslices:\n  - sources: [{{model: {repo}, layer_range: [0, 1]}}]\n")
    report = check_config(cfg)
    est = report.estimate
    p = report.profiles[0]
    needed = est.output.needed[repo]
    assert 0 < len(needed) < len(p.weight_files)
    assert est.download_bytes == sum(needed.values()) and est.download_files == len(needed)
    assert est.output.layers == 1


def test_disk_shortage_is_an_error(tiny_model, monkeypatch, tmp_path) -> None:
    import mergetui.inspect.estimate as estimate_mod

    a = tiny_model("llama", layers=2)
    cfg = parse_config(f"merge_method: linear\nmodels:\n  - model: {a}\n  - model: {a}\n")
    monkeypatch.setattr(estimate_mod, "_free", lambda p: 1000)
    monkeypatch.setattr(estimate_mod, "_ram_available", lambda: 1)
    report = check_config(cfg, out_dir=tmp_path)
    got = {f.code: f.severity for f in report.findings}
    assert got["disk-short"] == "error" and got["ram-short"] == "warning" and report.exit_code == 1


def test_cuda_estimate_without_a_gpu_is_na(tiny_model) -> None:
    a = tiny_model("llama", layers=2)
    cfg = parse_config(f"merge_method: linear\nmodels:\n  - model: {a}\n  - model: {a}\n")
    est = estimate(cfg, [profile_model(str(a))], device="cuda")
    assert est.peak_vram > 0
    assert human_bytes(None) == "n/a" and human_bytes(3 * 1024**3) == "3.00 GiB"
