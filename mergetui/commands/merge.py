"""`mergetui merge CONFIG.yml OUT_DIR`: run a mergekit YAML merge headlessly."""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any

from mergetui.engine.errors import MergeCancelled

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?)B?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """'5GB', '500M', '2GiB', '1000' -> bytes."""
    m = _SIZE_RE.match(text)
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (e.g. 5GB, 500M, 2GiB)")
    num, unit, binary = float(m[1]), m[2].upper(), bool(m[3])
    base = 1024 if binary else 1000
    return int(num * base ** "_KMGT".index(unit or "_")) if unit else int(num)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `mergetui merge`."""
    p.add_argument("config", help="mergekit YAML config")
    p.add_argument("out_dir", help="output directory (created; must not exist unless --overwrite)")
    p.add_argument("--dry-run", action="store_true", help="print the plan summary, output size and peak memory; write nothing")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"], help="where the math runs (default cpu)")
    p.add_argument("--max-memory", type=parse_size, default=None, help="memory budget for tensors in flight (default: 1.5x the largest tensor's needs, at most half of free RAM)")
    p.add_argument("--shard-size", type=parse_size, default=parse_size("5GB"), help="maximum output shard size (default 5GB)")
    p.add_argument("--events", default=None, help="append JSON-lines progress events to this file")
    p.add_argument("--resume", action="store_true", help="continue a killed merge without recomputing finished tensors")
    p.add_argument("--random-seed", type=int, default=None, help="seed for randomized methods (dare, della)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT_DIR if it exists (only once the merge is complete)")
    p.add_argument("--allow-crimes", action="store_true", help="merge even when the pre-merge check finds errors")
    p.add_argument("--workers", type=int, default=None, help="tensors merged at once (default: one per core, at most 8)")
    p.add_argument("--quiet", action="store_true", help="no progress output")


def run(args: argparse.Namespace) -> int:
    """Plan, check and run the merge."""
    from mergetui.engine.config import load_config
    from mergetui.engine.plan import build_plan

    from mergetui.commands.check import preflight

    cfg = load_config(args.config)
    # the same check as `mergetui check`: stop before planning or downloading on errors
    preflight(cfg, config_path=args.config, out_dir=args.out_dir, device=args.device, allow_crimes=args.allow_crimes)
    plan = build_plan(cfg, shard_size=args.shard_size)
    if args.dry_run:
        _print_dry_run(plan, args)
        return 0

    from mergetui.commands.watch import watched
    from mergetui.engine.executor import MergeOptions, run_plan

    opts = MergeOptions(device=args.device, max_memory=args.max_memory, random_seed=args.random_seed,
                        resume=args.resume, overwrite=args.overwrite, workers=args.workers)
    try:
        with watched(opts.events, opts.cancel, args.events, args.quiet):
            result = run_plan(plan, args.out_dir, opts)
    except MergeCancelled:
        print("merge cancelled; run again with --resume to continue", file=sys.stderr)
        return 130
    if not args.quiet:
        print(f"merged {result['tensors']} tensors ({result['bytes'] / 1e9:.2f} GB) into {result['out_dir']} in {result['seconds']:.1f}s")
    return 0


def _print_dry_run(plan: Any, args: argparse.Namespace) -> None:
    from mergetui.engine.executor import MergeOptions, default_memory_budget

    chunk = MergeOptions.chunk_elements

    s = plan.summary()
    budget = args.max_memory or default_memory_budget(plan, chunk)
    sizes = sorted((plan.tensor_working_bytes(t, chunk) for t in plan.tensors), reverse=True)
    in_flight = 1  # the largest tensors that fit in the budget together, at most one per worker
    while in_flight < min(len(sizes), args.workers or 3) and sum(sizes[: in_flight + 1]) <= budget:
        in_flight += 1
    peak = plan.peak_memory(in_flight, chunk)
    print(f"method:        {s['method']}")
    print(f"models:        {', '.join(s['models'])}")
    print(f"output layers: {s['output_layers']}")
    print(f"tensors:       {s['tensors']}")
    print(f"parameters:    {s['parameters']:,}")
    print(f"output size:   {s['bytes'] / 1e9:.3f} GB in {s['shards']} shard(s)")
    print(f"tied head:     {s['tied_embeddings']}")
    print(f"tokenizer:     from {s['tokenizer_from']}")
    print(f"vocabulary:    {s['vocabulary']}")
    print(f"peak memory:   ~{peak / 1e9:.2f} GB (estimate, {in_flight} tensor(s) in flight)")
