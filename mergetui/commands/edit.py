"""`mergetui edit CONFIG.yml`: the Recipe editor on a config (a new one if the file is missing)."""

from __future__ import annotations

import argparse

from mergetui.commands.workbench import open_workbench
from mergetui.state import WorkbenchState


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The config to edit."""
    p.add_argument("config", help="mergekit YAML config (created on save if missing)")


def run(args: argparse.Namespace) -> int:
    """Load the config (its models join the bench) and open Recipe."""
    state = WorkbenchState()
    state.open_config(args.config)  # a malformed file raises ConfigError: cli prints it
    return open_workbench(state, mode="recipe", reattach=False)
