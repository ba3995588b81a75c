"""`mergetui inspect MODEL`: one model's profile, from headers and small files only (no torch)."""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the inspect command's arguments."""
    parser.add_argument("model", help="a model directory or a Hub repo org/name[@revision]")
    parser.add_argument("--json", action="store_true", help="print the profile as JSON")
    parser.add_argument("--tensors", action="store_true", help="include every tensor's file, dtype and shape (with --json: in the JSON)")
    parser.add_argument("--refresh", action="store_true", help="re-read the model from the Hub instead of mergetui's cache")


def run(args: argparse.Namespace) -> int:
    """Print the profile."""
    from mergetui.inspect.profile import profile_model

    profile = profile_model(args.model, refresh=args.refresh)
    if args.json:
        print(json.dumps(profile.to_dict(tensors=args.tensors), indent=2, default=str))
        return 0
    from rich.console import Console
    from rich.table import Table

    from mergetui.inspect.report import render_profile

    console = Console(highlight=False)
    render_profile(profile, console)
    if args.tensors:
        table = Table("tensor", "dtype", "shape", "file", box=None, pad_edge=False)
        for t in profile.tensors.values():
            table.add_row(t.name, t.dtype, "×".join(str(d) for d in t.shape), t.file)
        console.print(table)
    return 0
