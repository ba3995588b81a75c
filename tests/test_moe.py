"""`mergetui moe`: Mixtral and Qwen2-MoE assembled from tiny dense models, routers, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mergetui.cli import main
from tiny_models import make_model

IDS = torch.tensor([[1, 5, 9, 3, 7, 11]])


def load_dir(path: Path) -> dict[str, torch.Tensor]:
    sd: dict[str, torch.Tensor] = {}
    for f in sorted(path.glob("*.safetensors")):
        sd.update(load_file(f))
    return sd


def moe(tmp: Path, text: str, out: str = "out", *extra: str) -> tuple[int, Path]:
    cfg = tmp / f"{out}.yml"
    cfg.write_text(text)
    return main(["moe", str(cfg), str(tmp / out), "--quiet", *extra]), tmp / out


def experts_yaml(refs: list[Path], prompts: list[list[str]] | None = None, key: str = "experts", **extra: object) -> str:
    lines = [f"{key}:"]
    for i, r in enumerate(refs):
        lines.append(f"  - source_model: {r}")
        if prompts is not None:
            lines.append(f"    positive_prompts: {json.dumps(prompts[i])}")
        for k, v in extra.items():
            lines.append(f"    {k}: {v}")
    return "\n".join(lines) + "\n"


def load(path: Path):  # noqa: ANN201
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging

    logging.set_verbosity_error()
    return AutoModelForCausalLM.from_pretrained(path).eval()


def logits(path: Path) -> torch.Tensor:
    with torch.no_grad():
        return load(path)(IDS).logits


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    d = tmp_path_factory.mktemp("llama")
    base = make_model(d / "base", "llama", layers=2, seed=0)
    return [base] + [make_model(d / f"ft{i}", "llama", layers=2, seed=i, base=base) for i in (1, 2, 3)]


@pytest.fixture(scope="module")
def qwen(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    d = tmp_path_factory.mktemp("qwen")
    base = make_model(d / "base", "qwen2", layers=2, seed=0)
    return [base] + [make_model(d / f"ft{i}", "qwen2", layers=2, seed=i, base=base) for i in (1, 2)]


PROMPTS = [["w1 w2 w3", "w4 w5"], ["w10 w11 w12"], ["w20 w21"], ["w30"]]


def test_mixtral_from_llama_experts_loads_and_generates(tmp_path: Path, llama: list[Path]) -> None:
    base, *fts = llama
    rc, out = moe(tmp_path, f"base_model: {base}\ngate_mode: hidden\nexperts_per_token: 2\n" + experts_yaml([base, *fts], PROMPTS))
    assert rc == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architectures"] == ["MixtralForCausalLM"] and cfg["model_type"] == "mixtral"
    assert cfg["num_local_experts"] == 4 and cfg["num_experts_per_tok"] == 2 and cfg["intermediate_size"] == 128
    sd = load_dir(out)
    # the published Mixtral checkpoint layout: w1 = gate_proj, w2 = down_proj, w3 = up_proj of each expert
    src = load_dir(fts[1])
    assert torch.equal(sd["model.layers.1.block_sparse_moe.experts.2.w1.weight"], src["model.layers.1.mlp.gate_proj.weight"])
    assert torch.equal(sd["model.layers.1.block_sparse_moe.experts.2.w2.weight"], src["model.layers.1.mlp.down_proj.weight"])
    assert torch.equal(sd["model.layers.1.block_sparse_moe.experts.2.w3.weight"], src["model.layers.1.mlp.up_proj.weight"])
    assert torch.equal(sd["model.layers.0.self_attn.q_proj.weight"], load_dir(base)["model.layers.0.self_attn.q_proj.weight"])
    assert sd["model.layers.0.block_sparse_moe.gate.weight"].shape == (4, 64)
    assert not any(".mlp." in k for k in sd)
    for f in ("tokenizer.json", "README.md", "mergetui_moe_config.yml", "model.safetensors.index.json", "generation_config.json"):
        assert (out / f).exists(), f
    model = load(out)
    gen = model.generate(IDS, max_new_tokens=4, do_sample=False)
    assert gen.shape == (1, IDS.shape[1] + 4)


def test_mixtral_from_mistral_experts_loads_and_generates(tmp_path: Path) -> None:
    base = make_model(tmp_path / "base", "mistral", layers=2, seed=0)
    ft = make_model(tmp_path / "ft", "mistral", layers=2, seed=1, base=base)
    rc, out = moe(tmp_path, f"base_model: {base}\ngate_mode: random\nexperts_per_token: 1\ndtype: bfloat16\n" + experts_yaml([base, ft]))
    assert rc == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == "mixtral" and cfg["num_local_experts"] == 2 and cfg["num_experts_per_tok"] == 1
    assert cfg["sliding_window"] == 4096  # the base's own attention window is kept
    assert all(t.dtype == torch.bfloat16 for t in load_dir(out).values())
    model = load(out)
    assert model.generate(IDS, max_new_tokens=3, do_sample=False).shape == (1, IDS.shape[1] + 3)


def test_qwen2_moe_with_shared_expert_loads_and_generates(tmp_path: Path, qwen: list[Path]) -> None:
    base, ft1, ft2 = qwen
    text = f"base_model: {base}\ngate_mode: random\n" + experts_yaml([ft1, ft2]) + experts_yaml([base], key="shared_experts")
    rc, out = moe(tmp_path, text)
    assert rc == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architectures"] == ["Qwen2MoeForCausalLM"] and cfg["num_experts"] == 2
    assert cfg["moe_intermediate_size"] == cfg["shared_expert_intermediate_size"] == 128 and cfg["norm_topk_prob"] is True
    sd = load_dir(out)
    assert torch.equal(sd["model.layers.0.mlp.experts.1.up_proj.weight"], load_dir(ft2)["model.layers.0.mlp.up_proj.weight"])
    assert torch.equal(sd["model.layers.1.mlp.shared_expert.down_proj.weight"], load_dir(base)["model.layers.1.mlp.down_proj.weight"])
    assert sd["model.layers.0.mlp.shared_expert_gate.weight"].shape == (1, 64)
    assert torch.equal(sd["model.layers.0.self_attn.q_proj.bias"], load_dir(base)["model.layers.0.self_attn.q_proj.bias"])
    model = load(out)
    assert model.generate(IDS, max_new_tokens=3, do_sample=False).shape == (1, IDS.shape[1] + 3)


@pytest.mark.parametrize("mode", ["hidden", "cheap_embed", "random"])
def test_experts_all_one_model_give_that_models_logits(tmp_path: Path, llama: list[Path], mode: str) -> None:
    base = llama[0]
    prompts = None if mode == "random" else PROMPTS[:3]
    rc, out = moe(tmp_path, f"base_model: {base}\ngate_mode: {mode}\n" + experts_yaml([base] * 3, prompts))
    assert rc == 0
    assert torch.allclose(logits(out), logits(base), atol=1e-5)


def test_qwen2_moe_of_one_model_with_silenced_shared_expert_gives_its_logits(tmp_path: Path, qwen: list[Path]) -> None:
    base = qwen[0]
    # the shared expert always adds sigmoid(gate) * its output: residual_scale 0 silences it
    text = (f"base_model: {base}\ngate_mode: random\n" + experts_yaml([base, base])
            + experts_yaml([base], key="shared_experts", residual_scale=0.0))
    rc, out = moe(tmp_path, text)
    assert rc == 0
    assert torch.allclose(logits(out), logits(base), atol=1e-5)


def test_hidden_gate_rows_are_normalised_per_expert_hidden_states(tmp_path: Path, llama: list[Path]) -> None:
    from transformers import AutoModel

    base, ft1, ft2, _ = llama
    rc, out = moe(tmp_path, f"base_model: {base}\ngate_mode: hidden\n" + experts_yaml([ft1, ft2], [["w1 w2 w3"], ["w50 w51"]]))
    assert rc == 0
    sd = load_dir(out)
    body = AutoModel.from_pretrained(base).eval()
    for layer in range(2):
        rows = sd[f"model.layers.{layer}.block_sparse_moe.gate.weight"]
        assert torch.allclose(rows.norm(dim=-1), torch.ones(2), atol=1e-5)
        assert not torch.allclose(rows[0], rows[1], atol=1e-3)
        # a one-prompt expert's row is the state entering this layer at the last token, BOS first
        with torch.no_grad():
            hs = body(torch.tensor([[1, 4, 5, 6]]), output_hidden_states=True).hidden_states[layer][0, -1]
        assert torch.allclose(rows[0], hs / hs.norm(), atol=1e-5)


def test_cheap_embed_rows_and_seeded_random(tmp_path: Path, llama: list[Path]) -> None:
    base, ft1, ft2, _ = llama
    rc, out = moe(tmp_path, f"base_model: {base}\ngate_mode: cheap_embed\n" + experts_yaml([ft1, ft2], [["w1 w2"], ["w7"]]))
    assert rc == 0
    rows = load_dir(out)["model.layers.1.block_sparse_moe.gate.weight"]
    emb = load_dir(base)["model.embed_tokens.weight"]
    want = emb[[1, 4, 5]].sum(0)
    assert torch.allclose(rows[0], want / want.norm(), atol=1e-6)
    assert torch.equal(rows, load_dir(out)["model.layers.0.block_sparse_moe.gate.weight"])  # the same row in every layer

    text = f"base_model: {base}\ngate_mode: random\n" + experts_yaml([ft1, ft2])
    gates = []
    for name, seed in (("a", "3"), ("b", "3"), ("c", "4")):
        rc, o = moe(tmp_path, text, name, "--random-seed", seed)
        assert rc == 0
        gates.append(load_dir(o)["model.layers.0.block_sparse_moe.gate.weight"])
    assert torch.equal(gates[0], gates[1]) and not torch.equal(gates[0], gates[2])


def test_noise_and_residual_scale(tmp_path: Path, llama: list[Path]) -> None:
    base, ft1, _, _ = llama
    rc, out = moe(tmp_path, f"base_model: {base}\ngate_mode: random\nexperts:\n  - source_model: {ft1}\n    residual_scale: 0.5\n"
                            f"  - source_model: {ft1}\n    noise_scale: 0.01\n")
    assert rc == 0
    sd, src = load_dir(out), load_dir(ft1)
    pre = "model.layers.0.block_sparse_moe.experts"
    assert torch.allclose(sd[f"{pre}.0.w2.weight"], 0.5 * src["model.layers.0.mlp.down_proj.weight"])
    assert torch.equal(sd[f"{pre}.0.w1.weight"], src["model.layers.0.mlp.gate_proj.weight"])  # scaling is for down_proj only
    diff = sd[f"{pre}.1.w1.weight"] - src["model.layers.0.mlp.gate_proj.weight"]
    assert 0.005 < diff.std().item() < 0.02


def test_events_file_and_existing_output(tmp_path: Path, llama: list[Path]) -> None:
    from mergetui.engine.events import read_events

    base, ft1, ft2, _ = llama
    text = f"base_model: {base}\ngate_mode: random\n" + experts_yaml([ft1, ft2])
    rc, out = moe(tmp_path, text, "out", "--events", str(tmp_path / "ev.jsonl"))
    assert rc == 0
    kinds = [e["event"] for e in read_events(tmp_path / "ev.jsonl")]
    assert kinds[0] == "plan" and kinds[-1] == "finished" and "tensor_done" in kinds and "shard_written" in kinds
    assert moe(tmp_path, text, "out")[0] == 2  # exists: refused without --overwrite
    assert moe(tmp_path, text, "out", "--overwrite")[0] == 0


def _assert_failed(tmp_path: Path, rc: int, out: Path, capsys: pytest.CaptureFixture[str], *needles: str) -> str:
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err
    for n in needles:
        assert n in err, err
    assert not out.exists() and not list(tmp_path.glob(".*mergetui-partial"))
    return err


def test_identical_prompts_for_every_expert_is_an_error(tmp_path: Path, llama: list[Path], capsys: pytest.CaptureFixture[str]) -> None:
    base, ft1, ft2, _ = llama
    rc, out = moe(tmp_path, f"base_model: {base}\ngate_mode: hidden\n" + experts_yaml([ft1, ft2], [["w1 w2"], ["w1 w2"]]))
    _assert_failed(tmp_path, rc, out, capsys, "same prompts", f"experts[0] ({ft1})", f"experts[1] ({ft2})", "out.yml:")


@pytest.mark.parametrize("mode", ["hidden", "cheap_embed"])
def test_missing_prompts_is_an_error(tmp_path: Path, llama: list[Path], capsys: pytest.CaptureFixture[str], mode: str) -> None:
    base, ft1, ft2, _ = llama
    text = f"base_model: {base}\ngate_mode: {mode}\nexperts:\n  - source_model: {ft1}\n    positive_prompts: [w1]\n  - source_model: {ft2}\n"
    rc, out = moe(tmp_path, text)
    err = _assert_failed(tmp_path, rc, out, capsys, f"experts[1] ({ft2}) has no positive_prompts", mode, "out.yml:6")
    assert "gate_mode: random" in err  # the fix


def test_experts_of_different_shapes_are_an_error(tmp_path: Path, llama: list[Path], capsys: pytest.CaptureFixture[str]) -> None:
    base, ft1, _, _ = llama
    wide = make_model(tmp_path / "wide", "llama", layers=2, seed=5, intermediate_size=96)
    deep = make_model(tmp_path / "deep", "llama", layers=3, seed=6)
    rc, out = moe(tmp_path, f"base_model: {base}\ngate_mode: random\n" + experts_yaml([ft1, wide]))
    _assert_failed(tmp_path, rc, out, capsys, f"experts[1] ({wide})", "[96, 64]", f"experts[0] ({ft1}) has [128, 64]")
    rc, out = moe(tmp_path, f"base_model: {base}\ngate_mode: random\n" + experts_yaml([ft1, deep]))
    _assert_failed(tmp_path, rc, out, capsys, f"experts[1] ({deep}) has 3 layers", "has 2")


def test_config_mistakes_are_clear(tmp_path: Path, llama: list[Path], qwen: list[Path], capsys: pytest.CaptureFixture[str]) -> None:
    base, ft1, ft2, _ = llama
    rc, out = moe(tmp_path, f"base_model: {base}\ngate_mode: random\nexpert_per_token: 1\n" + experts_yaml([ft1, ft2]))
    _assert_failed(tmp_path, rc, out, capsys, "out.yml:3", "unknown key 'expert_per_token'")
    rc, out = moe(tmp_path, f"base_model: {base}\ngate_mode: random\nexperts_per_token: 3\n" + experts_yaml([ft1, ft2]))
    _assert_failed(tmp_path, rc, out, capsys, "out.yml:3", "only 2 expert(s)")
    rc, out = moe(tmp_path, f"base_model: {base}\ngate_mode: hiden\n" + experts_yaml([ft1, ft2]))
    _assert_failed(tmp_path, rc, out, capsys, "out.yml:2", "hidden, cheap_embed or random")
    rc, out = moe(tmp_path, f"base_model: {qwen[0]}\ngate_mode: random\n" + experts_yaml(qwen[1:]))
    _assert_failed(tmp_path, rc, out, capsys, "exactly one shared expert")


def test_experts_and_base_from_the_hub(tmp_path: Path, llama: list[Path], hub) -> None:  # noqa: ANN001
    base, ft1, _, _ = llama
    hub.add_repo("moe-test/base", base)
    hub.add_repo("moe-test/ft1", ft1)
    rc, out = moe(tmp_path, "base_model: moe-test/base\ngate_mode: hidden\n"
                            + experts_yaml(["moe-test/base", "moe-test/ft1"], [["w1"], ["w2"]]))  # type: ignore[list-item]
    assert rc == 0
    assert torch.equal(load_dir(out)["model.layers.1.block_sparse_moe.experts.1.w3.weight"], load_dir(ft1)["model.layers.1.mlp.up_proj.weight"])
    assert "- moe-test/base" in (out / "README.md").read_text()


def test_llama_experts_into_qwen2_moe_get_zero_biases_and_shards(tmp_path: Path, llama: list[Path]) -> None:
    base, ft1, _, _ = llama
    text = (f"base_model: {base}\narchitecture: Qwen MoE\ngate_mode: random\n" + experts_yaml([base, base])
            + experts_yaml([ft1], key="shared_experts", residual_scale=0.0))
    rc, out = moe(tmp_path, text, "out", "--shard-size", "100KB")
    assert rc == 0
    assert len(list(out.glob("*.safetensors"))) > 1
    weight_map = json.loads((out / "model.safetensors.index.json").read_text())["weight_map"]
    assert set(weight_map) == set(load_dir(out))
    sd = load_dir(out)
    assert sd["model.layers.0.self_attn.k_proj.bias"].shape == (32,) and not sd["model.layers.0.self_attn.k_proj.bias"].any()
    assert json.loads((out / "config.json").read_text())["model_type"] == "qwen2_moe"
    assert torch.allclose(logits(out), logits(base), atol=1e-5)


def test_qwen2_moe_shared_expert_gate_from_prompts(tmp_path: Path, llama: list[Path]) -> None:
    base, ft1, ft2, _ = llama
    text = (f"base_model: {base}\narchitecture: qwen\ngate_mode: hidden\n" + experts_yaml([ft1, ft2], PROMPTS[:2])
            + experts_yaml([base], [["w60 w61"]], key="shared_experts"))
    rc, out = moe(tmp_path, text)
    assert rc == 0
    sd = load_dir(out)
    gate, shared = sd["model.layers.1.mlp.gate.weight"], sd["model.layers.1.mlp.shared_expert_gate.weight"]
    assert torch.allclose(torch.cat([gate, shared]).norm(dim=-1), torch.ones(3), atol=1e-5)
    assert not torch.allclose(shared[0], gate[0], atol=1e-3)
    assert load(out).generate(IDS, max_new_tokens=2, do_sample=False).shape == (1, IDS.shape[1] + 2)


def test_prompt_without_tokens_is_an_error(tmp_path: Path, llama: list[Path], capsys: pytest.CaptureFixture[str]) -> None:
    base, ft1, ft2, _ = llama
    rc, out = moe(tmp_path, f"base_model: {base}\ngate_mode: cheap_embed\n" + experts_yaml([ft1, ft2], [["w1"], ["  "]]))
    _assert_failed(tmp_path, rc, out, capsys, f"experts[1] ({ft2}): prompt '  ' gives no tokens")
