"""`mergetui` command line: the workbench by default, headless subcommands otherwise.

Each subcommand lives in mergetui/commands/<name>.py with `add_parser(subparsers)` and
`run(args) -> int`; modules are imported only when their command runs, so `mergetui check`
answers without importing torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# command name -> (module under mergetui.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "merge": ("merge", "run a mergekit YAML merge headlessly"),
    "moe": ("moe", "assemble a Mixture of Experts from dense models (mergekit-moe YAML)"),
    "check": ("check", "check models (or a config) for merge compatibility before downloading"),
    "inspect": ("inspect_model", "print one model's profile"),
    "compare": ("compare", "open the workbench comparing models side by side"),
    "edit": ("edit", "open the workbench's recipe editor on a mergekit YAML (new if missing)"),
    "run": ("run_cmd", "open the workbench and start a merge, following it live"),
    "jobs": ("jobs_cmd", "list running and finished merges and attach to one"),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The top-level parser; subcommand options are loaded for `only` (default: all)."""
    parser = argparse.ArgumentParser(prog="mergetui", description="A terminal workbench for merging language models.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        if only is None or only == name:
            importlib.import_module(f"mergetui.commands.{module}").add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `mergetui` console script."""
    from mergetui.engine.errors import MergeError

    argv = sys.argv[1:] if argv is None else argv
    # import only the chosen command's module: `check` must start without torch
    chosen = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(chosen if chosen in COMMANDS else None).parse_args(argv)
    if args.command is None:
        from mergetui.commands import workbench

        return workbench.run(args)
    module = importlib.import_module(f"mergetui.commands.{args._module}")
    try:
        return int(module.run(args) or 0)
    except MergeError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
