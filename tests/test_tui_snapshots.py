"""How each view looks at 100x30: fixed models under a fixed relative path, fixed gauge numbers."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from textual.widgets import Input, TextArea

from mergetui import backend
from mergetui.state import WorkbenchState
from mergetui.widgets.gauges import Gauges
from tui_fakes import FakeSampler, loaders_started, make_app

SIZE = (100, 30)


@pytest.fixture
def bench(tiny_model, tmp_path, monkeypatch) -> list[str]:
    """Three models as relative paths (no temp dir in the picture), cwd set to their parent."""
    root = tmp_path / "snap"
    for name, kw in (("base-a", dict(seed=1)), ("tune-b", dict(seed=2)), ("extra-c", dict(seed=3, extra_tokens=2))):
        shutil.copytree(tiny_model("llama", layers=4, **kw), root / "models" / name)
    monkeypatch.chdir(root)
    monkeypatch.setattr(backend, "local_models", lambda dirs: [])  # the HF cache differs between runs
    return ["models/base-a", "models/tune-b", "models/extra-c"]


def app_for(tmp_path: Path, bench: list[str], mode: str, **state_kw):
    state = WorkbenchState(bench=list(bench), out_dir="merged", **state_kw)
    app = make_app(tmp_path, state, mode=mode, sampler=FakeSampler(moving=False), gauge_interval=3600)
    return app


async def steady(pilot) -> None:
    """Loaders done, one gauge sample in, no blinking cursors, no animation."""
    app = pilot.app
    app.animation_level = "none"
    await loaders_started(app, pilot)
    for w in (app.catalog_worker, app.profile_worker):
        if w is not None:
            await w.wait()
    await pilot.pause()
    for _ in range(100):  # the gauge's first sample (its own worker) must be in the picture
        workers = [g.worker for g in app.screen.query(Gauges) if g.worker is not None]
        if workers:
            for w in workers:
                await w.wait()
            break
        await pilot.pause(0.05)
    await pilot.pause()
    assert app.gauge_data.samples == 1
    for w in app.screen.query(Input):
        w.cursor_blink = False
    for w in app.screen.query(TextArea):
        w.cursor_blink = False
    await pilot.pause()
    worker = getattr(app.screen, "preflight_worker", None)
    if worker is not None:
        await worker.wait()
    await pilot.pause()


def test_browse(snap_compare, tmp_path, bench) -> None:
    assert snap_compare(app_for(tmp_path, bench[:2], "browse"), terminal_size=SIZE, run_before=steady)


def test_compare(snap_compare, tmp_path, bench) -> None:
    assert snap_compare(app_for(tmp_path, bench, "compare"), terminal_size=SIZE, run_before=steady)


def test_layout(snap_compare, tmp_path, bench) -> None:
    async def build(pilot) -> None:
        await steady(pilot)
        await pilot.press("a", "minus", "minus", "a", "s", "d", "left")
        await pilot.pause()

    assert snap_compare(app_for(tmp_path, bench[:2], "layout"), terminal_size=SIZE, run_before=build)


def test_recipe(snap_compare, tmp_path, bench) -> None:
    from mergetui.recipe import config_for_bench

    app = app_for(tmp_path, bench[:2], "recipe", config=config_for_bench(bench[:2], "linear"))
    assert snap_compare(app, terminal_size=SIZE, run_before=steady)


def test_recipe_moe(snap_compare, tmp_path, bench) -> None:
    from mergetui.moe_recipe import moe_for_bench, put_expert

    moe = put_expert(moe_for_bench(bench[:2]), "experts", 0, {"source_model": bench[0], "positive_prompts": ["w1 w2"]})
    app = app_for(tmp_path, bench[:2], "recipe", moe=moe, kind="moe")
    assert snap_compare(app, terminal_size=SIZE, run_before=steady)


def test_run(snap_compare, tmp_path, bench, monkeypatch) -> None:
    from mergetui.recipe import config_for_bench

    fixed = backend.Preflight(summary={"method": "linear", "output_layers": 4, "parameters": 312384, "tensors": 39},
                              download_bytes=0, output_bytes=1_249_536, peak_ram=640 << 20, free_disk=200 << 30,
                              findings=[backend.Finding("info", "tied embeddings differ (example)", "")])
    monkeypatch.setattr(backend, "preflight", lambda cfg, out: fixed)
    app = app_for(tmp_path, bench[:2], "run", config=config_for_bench(bench[:2], "linear"))
    assert snap_compare(app, terminal_size=SIZE, run_before=steady)
