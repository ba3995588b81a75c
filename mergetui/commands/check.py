"""`mergetui check CONFIG.yml` or `mergetui check MODEL MODEL ...`: will these merge? Asked before downloading.

Exit status: 0 when nothing blocks the merge, 1 when there is an error finding, 2 for bad
input (unreadable config, unknown model, unreachable Hub). Imports stay inside functions so
`mergetui check` never imports torch.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mergetui.engine.config import MergeConfig
    from mergetui.inspect.report import Report

CONFIG_SUFFIXES = (".yml", ".yaml")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the check command's arguments."""
    parser.add_argument("targets", nargs="+", metavar="CONFIG_OR_MODEL", help="a mergekit YAML config, or two or more models (paths or org/name[@revision])")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--out", metavar="DIR", help="output directory the merge will write (for the disk check; default: current directory)")
    parser.add_argument("--device", default="cpu", help="device the merge will run on: cpu, cuda, cuda:N (for the memory estimate)")
    parser.add_argument("--refresh", action="store_true", help="re-read models from the Hub instead of mergetui's cache")


def is_config_target(targets: list[str]) -> bool:
    """Whether the command line names one config file rather than models."""
    if len(targets) != 1:
        return False
    p = Path(targets[0])
    return p.suffix.lower() in CONFIG_SUFFIXES or p.is_file()


def run(args: argparse.Namespace) -> int:
    """Run the check and print the report; exit 1 on error findings."""
    from mergetui.inspect.check import check_config, check_models

    if is_config_target(args.targets):
        from mergetui.engine.config import load_config

        config = load_config(args.targets[0])
        report = check_config(config, config_path=args.targets[0], out_dir=args.out, device=args.device, refresh=args.refresh)
    else:
        report = check_models(args.targets, refresh=args.refresh)
    print_report(report, as_json=args.json)
    return report.exit_code


def print_report(report: "Report", *, as_json: bool = False, file: Any = None) -> None:
    """Print a report as JSON or as tables."""
    out = file or sys.stdout
    if as_json:
        print(report.to_json(), file=out)
        return
    from rich.console import Console

    from mergetui.inspect.report import render_report

    render_report(report, Console(file=out, highlight=False))


def preflight(
    config: "MergeConfig",
    *,
    config_path: str | Path | None = None,
    out_dir: str | Path | None = None,
    device: str = "cpu",
    allow_crimes: bool = False,
    file: Any = None,
) -> "Report":
    """The check `mergetui merge` runs first: print problems; raise unless they are allowed.

    Errors stop the merge with a MergeError (exit 2) unless allow_crimes; warnings are printed.
    """
    from rich.console import Console

    from mergetui.engine.errors import MergeError
    from mergetui.inspect.check import check_config
    from mergetui.inspect.findings import INFO
    from mergetui.inspect.report import render_findings

    report = check_config(config, config_path=config_path, out_dir=out_dir, device=device)
    shown = [f for f in report.findings if f.severity != INFO]
    if shown:
        out = file or sys.stderr
        # no hard wrapping into pipes and logs: paths and tensor names stay whole
        render_findings(shown, Console(file=out, highlight=False, soft_wrap=not out.isatty()))
    if report.has_errors and not allow_crimes:
        n = report.count("error")
        raise MergeError(
            f"the pre-merge check found {n} error{'s' if n != 1 else ''} (listed above)",
            fix="fix the config or the models, or pass --allow-crimes to merge anyway",
        )
    return report
