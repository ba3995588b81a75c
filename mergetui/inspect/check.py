"""The pre-merge check: profile the models, compare them, read the config against them."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from mergetui.engine.errors import ConfigError
from mergetui.inspect.estimate import estimate, resource_findings
from mergetui.inspect.findings import SEVERITY_ORDER, find_issues
from mergetui.inspect.profile import profile_models
from mergetui.inspect.report import Report

if TYPE_CHECKING:
    from mergetui.engine.config import MergeConfig  # pydantic: imported only when a config is checked


def check_models(refs: list[str], *, refresh: bool = False) -> Report:
    """Compatibility report for a set of models (no config: the method is unknown)."""
    t0 = time.perf_counter()
    profiles = profile_models(refs, refresh=refresh)
    report = Report(profiles, find_issues(profiles))
    report.seconds = time.perf_counter() - t0
    return report


def check_config(
    config: MergeConfig,
    *,
    config_path: str | Path | None = None,
    out_dir: str | Path | None = None,
    device: str = "cpu",
    refresh: bool = False,
) -> Report:
    """Compatibility and resource report for a merge config."""
    t0 = time.perf_counter()
    refs = config.referenced_models()
    if not refs:
        raise ConfigError(f"{config_path or 'config'}: names no models")
    profiles = profile_models(refs, refresh=refresh)
    findings = find_issues(profiles, config)
    est = estimate(config, profiles, out_dir=out_dir, device=device)
    findings += resource_findings(est)
    findings.sort(key=lambda f: SEVERITY_ORDER[f.severity])
    report = Report(profiles, findings, est, str(config_path) if config_path else None)
    report.seconds = time.perf_counter() - t0
    return report
