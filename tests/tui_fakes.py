"""Shared pieces of the workbench tests: a deterministic sampler and an app factory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mergetui.app import MergeTUI
from mergetui.inspect.system import GpuSample, SystemSample
from mergetui.state import WorkbenchState


class FakeSampler:
    """Fixed numbers (snapshots) or numbers that grow with each call (live tests)."""

    def __init__(self, moving: bool = False) -> None:
        self.moving = moving
        self.calls = 0
        self.pids: list[int | None] = []

    def sample(self, pid: int | None = None, out_dir: str | None = None) -> SystemSample:
        self.calls += 1
        self.pids.append(pid)
        k = self.calls if self.moving else 1
        gib = 1 << 30
        return SystemSample(
            time=1000.0 + k,
            gpus=(GpuSample(0, "Fake GPU", 3 * gib + k * (1 << 20), 80 * gib),),
            ram_used=12 * gib + k * (1 << 20), ram_total=64 * gib,
            proc_rss=(500 << 20) + k * (1 << 20) if pid else None,
            disk_free=200 * gib, disk_total=500 * gib,
            written=k * (1 << 20) if pid else 0,
        )


def make_app(tmp_path: Path, state: WorkbenchState | None = None, **kw: Any) -> MergeTUI:
    """An app that never searches on its own, samples fast and keeps its jobs under tmp_path."""
    kw.setdefault("sampler", FakeSampler(moving=True))
    kw.setdefault("autosearch", False)
    kw.setdefault("gauge_interval", 0.1)
    kw.setdefault("reattach", False)
    kw.setdefault("jobs_root", tmp_path / "jobs")
    return MergeTUI(state or WorkbenchState(out_dir=str(tmp_path / "merged")), **kw)


async def loaders_started(app: MergeTUI, pilot: Any) -> None:
    """The loaders start after the first paint: wait until they have."""
    for _ in range(200):
        if app.catalog_worker is not None:
            return
        await pilot.pause(0.02)
    raise AssertionError("the loading workers never started")


async def settle(app: MergeTUI, pilot: Any) -> None:
    """Wait for the app's loading workers (catalog, profiles), then for the UI to catch up."""
    await loaders_started(app, pilot)
    for w in (app.catalog_worker, app.profile_worker):
        if w is not None:
            await w.wait()
    await pilot.pause()
