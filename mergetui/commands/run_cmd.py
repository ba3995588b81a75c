"""`mergetui run CONFIG.yml OUT`: the Run view, starting that merge after its preflight."""

from __future__ import annotations

import argparse

from mergetui.commands.workbench import open_workbench
from mergetui.engine.errors import ConfigError
from mergetui.state import WorkbenchState


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The config and the output directory."""
    p.add_argument("config", help="mergekit YAML config")
    p.add_argument("out_dir", help="output directory")


def run(args: argparse.Namespace) -> int:
    """Load the config and open Run, which starts the merge as a detached process."""
    from pathlib import Path

    if not Path(args.config).exists():
        raise ConfigError(f"{args.config}: config file not found", fix="check the path, or create it with `mergetui edit`")
    state = WorkbenchState(out_dir=args.out_dir)
    state.open_config(args.config)
    return open_workbench(state, mode="run", start_merge=True)
