"""`mergetui jobs`: running and finished merges and MoE assemblies; attach to one in the workbench (or --list)."""

from __future__ import annotations

import argparse
import time


def add_arguments(p: argparse.ArgumentParser) -> None:
    """--list prints instead of opening the workbench."""
    p.add_argument("--list", action="store_true", help="print the jobs and exit (no TUI)")


def run(args: argparse.Namespace) -> int:
    """List jobs, or open the workbench's jobs list."""
    if args.list:
        from mergetui import jobs

        for j in jobs.list_jobs():
            events = j.read_events()
            done, total = j.progress(events)
            pct = f"{100 * done // total:3d}%" if total else "   -"
            started = time.strftime("%Y-%m-%d %H:%M", time.localtime(j.started))
            print(f"{j.id}  {j.kind:<5} {j.status(events):<9} {pct}  {started}  {j.out_dir}")
        return 0
    from mergetui.commands.workbench import open_workbench

    return open_workbench(mode="run", show_jobs=True, reattach=False)
