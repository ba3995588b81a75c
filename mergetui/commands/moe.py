"""`mergetui moe CONFIG.yml OUT`: assemble a Mixture of Experts from dense models (mergekit-moe configs)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `mergetui moe`."""
    from mergetui.commands.merge import parse_size

    p.add_argument("config", help="mergekit-moe YAML config (base_model, experts, gate_mode, ...)")
    p.add_argument("out_dir", help="output directory (created; must not exist unless --overwrite)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"], help="where gate_mode hidden runs the base model (default cpu)")
    p.add_argument("--events", default=None, help="append JSON-lines progress events to this file")
    p.add_argument("--random-seed", type=int, default=None, help="seed for gate_mode random and experts' noise_scale (default 0)")
    p.add_argument("--shard-size", type=parse_size, default=parse_size("5GB"), help="maximum output shard size (default 5GB)")
    p.add_argument("--workers", type=int, default=None, help="writer threads (default: cores + 1, at most 4)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT_DIR if it exists (only once the MoE is complete)")
    p.add_argument("--quiet", action="store_true", help="no progress output")


def run(args: argparse.Namespace) -> int:
    """Parse, plan and assemble the MoE."""
    from mergetui.commands.watch import watched
    from mergetui.engine.errors import MergeCancelled
    from mergetui.engine.moe.assemble import MoEOptions, run_moe
    from mergetui.engine.moe.config import load_moe_config
    from mergetui.engine.moe.plan import build_moe_plan

    cfg = load_moe_config(args.config)
    plan = build_moe_plan(cfg, shard_size=args.shard_size)

    def say(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr)

    for w in plan.warnings:
        say(f"warning: {w}")
    say(f"{plan.family.name}: {len(cfg.experts)} experts ({cfg.experts_per_token} per token)"
        + (f" + {len(cfg.shared_experts)} shared" if cfg.shared_experts else "")
        + f", {plan.num_layers} layers, {_size(plan.total_bytes)}")
    opts = MoEOptions(device=args.device, random_seed=args.random_seed, overwrite=args.overwrite, workers=args.workers,
                      config_text=Path(args.config).read_text(), log=say)
    try:
        with watched(opts.events, opts.cancel, args.events, args.quiet):
            result = run_moe(plan, args.out_dir, opts)
    except MergeCancelled:
        print("MoE assembly cancelled; nothing was written", file=sys.stderr)
        return 130
    say(f"wrote {result['tensors']} tensors ({_size(result['bytes'])}) into {result['out_dir']} in {result['seconds']:.1f}s")
    return 0


def _size(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"
