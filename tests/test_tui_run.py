"""Run: a real merge to the end with live gauges, cancel (confirmed), resume, re-attach."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

from textual.widgets import Markdown, ProgressBar, Static

from mergetui import backend, jobs
from mergetui.recipe import config_for_bench
from mergetui.screens.dialogs import ConfirmScreen
from mergetui.screens.run import RunScreen
from mergetui.state import WorkbenchState
from mergetui.widgets.gauges import Gauges
from test_jobs import FAKE_MERGE
from tui_fakes import loaders_started, make_app, settle


async def until(pilot, cond, timeout: float = 30.0) -> None:
    """Let the app run until `cond()` holds."""
    end = time.time() + timeout
    while not cond():
        assert time.time() < end, "timed out"
        await pilot.pause(0.05)


def test_merge_to_the_end_with_gauges(tiny_model, tmp_path) -> None:
    a = str(tiny_model("llama", layers=2, seed=1))
    b = str(tiny_model("llama", layers=2, seed=2))

    async def run() -> None:
        state = WorkbenchState(bench=[a, b], out_dir=str(tmp_path / "merged"))
        state.config = config_for_bench([a, b], "linear")
        app = make_app(tmp_path, state, mode="run")
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(app, pilot)
            screen = app.screen
            assert isinstance(screen, RunScreen)
            await screen.preflight_worker.wait()
            await pilot.pause()
            assert "parameters" in str(screen.query_one("#preflight", Static).render())
            samples_before = app.gauge_data.samples
            await pilot.press("s")
            assert screen.follow_worker is not None
            await screen.follow_worker.wait()
            await until(pilot, lambda: not app.state.job_running)
            assert screen.last_event["event"] == "finished"
            assert (tmp_path / "merged" / "config.json").exists()
            bar = screen.query_one("#progress", ProgressBar)
            assert bar.percentage == 1.0
            assert screen.query_one("#card", Markdown).display
            # the gauges kept sampling while the merge ran, with the merge's pid
            await until(pilot, lambda: app.gauge_data.samples >= samples_before + 2)
            assert len(set(app.gauge_data.ram.values)) > 1
            assert any(pid == app.state.job.pid for pid in app.sampler.pids)
            gauges = screen.query_one(Gauges)
            assert "RAM" in str(gauges.render())
            info = str(screen.query_one("#job-info", Static).render())
            assert "finished" in info

    asyncio.run(run())


def fake_command(tmp_path) -> list[str]:
    script = tmp_path / "fake_merge.py"
    script.write_text(FAKE_MERGE)
    return [sys.executable, str(script)]


def test_cancel_asks_then_resume(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_TENSORS", "400")
    monkeypatch.setattr(backend, "preflight", lambda cfg, out: backend.Preflight())  # "org/a" is not real

    async def run() -> None:
        state = WorkbenchState(bench=["org/a"], out_dir=str(tmp_path / "merged"))
        state.config = config_for_bench(["org/a"], "linear")
        app = make_app(tmp_path, state, mode="run", merge_command=fake_command(tmp_path))
        async with app.run_test(size=(100, 30)) as pilot:
            screen = app.screen
            await pilot.press("s")
            await until(pilot, lambda: app.state.job_progress[0] > 0)
            await pilot.press("x")
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
            await pilot.press("n")  # declined: still running
            await until(pilot, lambda: isinstance(app.screen, RunScreen))
            assert app.state.job_running and jobs.Job.alive(app.state.job)
            await pilot.press("x")
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
            await pilot.press("y")
            await until(pilot, lambda: isinstance(app.screen, RunScreen))
            await screen.follow_worker.wait()
            await until(pilot, lambda: screen.last_event.get("event") == "cancelled")
            assert not app.state.job_running
            done = app.state.job_progress[0]
            assert 0 < done < 400_000
            monkeypatch.setenv("FAKE_TENSORS", "20")  # finish quickly once resumed
            await until(pilot, lambda: not app.state.job.alive())
            await pilot.press("r")
            await screen.follow_worker.wait()
            await until(pilot, lambda: screen.last_event.get("event") == "finished")
            assert app.state.job.attempts == 2

    asyncio.run(run())


def test_reattach_to_a_running_merge(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_TENSORS", "40")
    monkeypatch.setenv("FAKE_STEP", "0.05")
    root = tmp_path / "jobs"
    # a merge started by an earlier session (as if the SSH connection had dropped)
    job = jobs.start_job("merge_method: linear\n", str(tmp_path / "merged"), root=root, command=fake_command(tmp_path))

    async def run() -> None:
        app = make_app(tmp_path, mode="browse", reattach=True, jobs_root=root)
        async with app.run_test(size=(100, 30)) as pilot:
            await loaders_started(app, pilot)
            await app.reattach_worker.wait()
            await until(pilot, lambda: isinstance(app.screen, RunScreen))
            screen = app.screen
            assert app.state.job is not None and app.state.job.id == job.id
            await until(pilot, lambda: screen.follow_worker is not None)  # attached once mounted
            await screen.follow_worker.wait()
            await until(pilot, lambda: screen.last_event.get("event") == "finished")
            assert app.state.job_progress == (40_000, 40_000)
            log = screen.query_one("#log")
            assert any("following job" in str(line.text) for line in log.lines)

    asyncio.run(run())
    events = job.read_events()
    assert events[-1]["event"] == "finished" and os.path.exists(json.loads(json.dumps(events[-1]))["out_dir"])
