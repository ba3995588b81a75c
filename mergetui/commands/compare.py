"""`mergetui compare A B ...`: the workbench's Compare view on those models."""

from __future__ import annotations

import argparse

from mergetui.commands.workbench import open_workbench
from mergetui.state import WorkbenchState


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Models to compare."""
    p.add_argument("models", nargs="+", help="model directories or Hub repo ids (org/name[@revision])")
    p.add_argument("--method", default=None, help="merge method whose blocking differences to colour (default linear)")


def run(args: argparse.Namespace) -> int:
    """Put the models on the bench and open Compare."""
    from mergetui.recipe import config_for_bench

    state = WorkbenchState(bench=list(dict.fromkeys(args.models)))
    if args.method:
        state.config = config_for_bench(state.bench, args.method)
    return open_workbench(state, mode="compare", reattach=False)
