"""Speed and memory of `mergetui merge` on Llama-shaped 1.1B bf16 models built locally.

Builds (once, cached under --dir) a base model and two fine-tunes (base + small noise):
hidden 2048, intermediate 5632, 22 layers, 32 heads, 4 kv heads, vocab 32000. Then times,
with a warm page cache, `mergetui merge` for: linear of two models, ties of two models over
the base (density 0.5), and a passthrough frankenmerge of 32 layers. Reports wall time,
peak RSS of the merge process (and its children) and output GB/s, plus `cp -r` of one model.

    python benchmarks/bench_merge.py [--dir bench-out] [--only linear,ties,passthrough]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

HIDDEN, INTER, LAYERS, HEADS, KV, VOCAB = 2048, 5632, 22, 32, 4, 32000


def model_tensors() -> list[tuple[str, tuple[int, ...]]]:
    """Names and shapes of a Llama 1.1B (TinyLlama-shaped) checkpoint."""
    head_dim = HIDDEN // HEADS
    out = [("model.embed_tokens.weight", (VOCAB, HIDDEN))]
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        out += [
            (p + "self_attn.q_proj.weight", (HIDDEN, HIDDEN)),
            (p + "self_attn.k_proj.weight", (KV * head_dim, HIDDEN)),
            (p + "self_attn.v_proj.weight", (KV * head_dim, HIDDEN)),
            (p + "self_attn.o_proj.weight", (HIDDEN, HIDDEN)),
            (p + "mlp.gate_proj.weight", (INTER, HIDDEN)),
            (p + "mlp.up_proj.weight", (INTER, HIDDEN)),
            (p + "mlp.down_proj.weight", (HIDDEN, INTER)),
            (p + "input_layernorm.weight", (HIDDEN,)),
            (p + "post_attention_layernorm.weight", (HIDDEN,)),
        ]
    out += [("model.norm.weight", (HIDDEN,)), ("lm_head.weight", (VOCAB, HIDDEN))]
    return out


def build_model(path: Path, seed: int, base: Path | None) -> None:
    """Write one model: random bf16 (base) or base + N(0, 1e-3) (fine-tune), 2 GB shards."""
    import torch

    from mergetui.engine.tensor_io import ShardWriter, layout_shard, read_safetensors_header, read_tensor

    if (path / "config.json").exists():
        return
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    g = torch.Generator().manual_seed(seed)
    tensors = model_tensors()
    shards: list[list[tuple[str, tuple[int, ...]]]] = [[]]
    size = 0
    for name, shape in tensors:
        n = 2
        for d in shape:
            n *= d
        if shards[-1] and size + n > 2 * 1000**3:
            shards.append([])
            size = 0
        shards[-1].append((name, shape))
        size += n
    base_entries = {}
    if base is not None:
        for f in base.glob("*.safetensors"):
            base_entries.update(read_safetensors_header(f))
    weight_map = {}
    for i, group in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        writer = ShardWriter(tmp / fname, layout_shard(fname, [(n, "BF16", s) for n, s in group]))
        for name, shape in group:
            if base is None:
                t = torch.randn(shape, generator=g) * (1.0 if name.endswith("norm.weight") else 0.02)
            else:
                t = read_tensor(base_entries[name]).float() + torch.randn(shape, generator=g) * 1e-3
            writer.write(name, t.to(torch.bfloat16))
            weight_map[name] = fname
        writer.close()
    (tmp / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (tmp / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": HIDDEN,
        "intermediate_size": INTER, "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
        "num_key_value_heads": KV, "vocab_size": VOCAB, "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
        "hidden_act": "silu", "bos_token_id": 1, "eos_token_id": 2,
    }))
    tmp.rename(path)


CONFIGS = {
    "linear": """merge_method: linear
models:
  - model: {a}
    parameters: {{weight: 0.5}}
  - model: {b}
    parameters: {{weight: 0.5}}
dtype: bfloat16
""",
    "ties": """merge_method: ties
base_model: {base}
models:
  - model: {a}
    parameters: {{weight: 0.5, density: 0.5}}
  - model: {b}
    parameters: {{weight: 0.5, density: 0.5}}
dtype: bfloat16
""",
    "passthrough": """merge_method: passthrough
slices:
  - sources: [{{model: {a}, layer_range: [0, 16]}}]
  - sources: [{{model: {b}, layer_range: [6, 22]}}]
dtype: bfloat16
""",
}


def warm(paths: list[Path]) -> None:
    """Read the models once so the page cache is warm."""
    for p in paths:
        for f in p.glob("*.safetensors"):
            with open(f, "rb") as fh:
                while fh.read(64 << 20):
                    pass


def run_timed(cmd: list[str]) -> tuple[float, int, int]:
    """Wall seconds, peak RSS (bytes, sampled every 20 ms) and exit code of a command."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd)
    ps = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        try:
            rss = ps.memory_info().rss + sum(c.memory_info().rss for c in ps.children(recursive=True))
            peak = max(peak, rss)
        except psutil.Error:
            pass
        time.sleep(0.02)
    return time.perf_counter() - t0, peak, proc.returncode


def time_command(subcommand: str, config_text: str, out: Path, extra: list[str]) -> dict[str, float] | None:
    """Run `mergetui SUBCOMMAND` on a config into `out` and measure it; the output is removed."""
    shutil.rmtree(out, ignore_errors=True)
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
        f.write(config_text)
    cmd = [sys.executable, "-m", "mergetui", subcommand, f.name, str(out), "--quiet", *extra]
    os.sync()  # earlier outputs' dirty pages would otherwise be written back during this run
    try:
        secs, peak, rc = run_timed(cmd)
        if rc != 0:
            print(f"{subcommand} failed (exit {rc})", file=sys.stderr)
            return None
        out_bytes = sum(p.stat().st_size for p in out.glob("*.safetensors"))
    finally:
        shutil.rmtree(out, ignore_errors=True)
        os.unlink(f.name)
    return {"seconds": round(secs, 2), "peak_rss_gb": round(peak / 1e9, 2), "output_gb": round(out_bytes / 1e9, 2),
            "gb_per_s": round(out_bytes / 1e9 / secs, 2)}


def prepare_models(root: Path) -> tuple[Path, Path, Path]:
    """The base and two fine-tunes under `root` (built once), read once into the page cache."""
    root.mkdir(parents=True, exist_ok=True)
    base, a, b = root / "base", root / "ft1", root / "ft2"
    t = time.perf_counter()
    build_model(base, 0, None)
    build_model(a, 1, base)
    build_model(b, 2, base)
    print(f"models ready in {time.perf_counter() - t:.1f}s", file=sys.stderr)
    warm([base, a, b])
    return base, a, b


def main() -> int:
    """Build the models if needed, run each merge, print a table and JSON."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default="bench-out", help="where models and outputs go (needs ~15 GB)")
    ap.add_argument("--only", default="linear,ties,passthrough")
    ap.add_argument("--extra", default="", help="extra arguments for mergetui merge")
    args = ap.parse_args()
    root = Path(args.dir).resolve()
    base, a, b = prepare_models(root)

    cp_dst = root / "cp-test"
    shutil.rmtree(cp_dst, ignore_errors=True)
    os.sync()
    t = time.perf_counter()
    subprocess.run(["cp", "-r", str(a), str(cp_dst)], check=True)
    cp_s = time.perf_counter() - t
    shutil.rmtree(cp_dst)

    results = {"cp -r one model": {"seconds": round(cp_s, 2)}}
    for name in args.only.split(","):
        measured = time_command("merge", CONFIGS[name].format(base=base, a=a, b=b), root / f"out-{name}", args.extra.split())
        if measured is None:
            return 1
        results[name] = measured
    print(f"{'case':<18}{'seconds':>9}{'peak RSS GB':>13}{'out GB/s':>10}")
    for k, v in results.items():
        print(f"{k:<18}{v['seconds']:>9}{v.get('peak_rss_gb', ''):>13}{v.get('gb_per_s', ''):>10}")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
