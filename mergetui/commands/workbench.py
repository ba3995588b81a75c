"""`mergetui` with no subcommand: the workbench, on Browse (or re-attached to a running merge)."""

from __future__ import annotations

import argparse
from typing import Any

from mergetui.state import WorkbenchState


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The workbench takes no options of its own."""


def open_workbench(state: WorkbenchState | None = None, **kw: Any) -> int:
    """Run the workbench App until the user quits."""
    from mergetui.app import MergeTUI

    MergeTUI(state or WorkbenchState(), **kw).run()
    return 0


def run(args: argparse.Namespace) -> int:
    """Open the workbench on Browse."""
    return open_workbench()
