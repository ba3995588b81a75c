"""A Mixture of Experts built in Recipe (experts as rows, prompts edited), saved as mergekit-moe YAML, run from Run."""

from __future__ import annotations

import asyncio
import json

from textual.widgets import DataTable, Input, Select, Static, TextArea

from mergetui.engine.moe.config import load_moe_config
from mergetui.recipe import config_for_bench
from mergetui.screens.expert import ExpertScreen
from mergetui.screens.recipe import RecipeScreen
from mergetui.screens.run import RunScreen
from mergetui.state import WorkbenchState
from test_tui_run import until
from tui_fakes import make_app, settle

KEYS = {" ": "space", "\n": "enter"}


async def type_text(pilot, text: str) -> None:
    """Type `text` key by key into the focused widget."""
    await pilot.press(*[KEYS.get(c, c) for c in text])


async def edit_expert(pilot, app, key: str, positive: str, negative: str = "") -> None:
    """Open the expert editor with `key`, type the prompts, apply with ctrl+s."""
    await pilot.press(key)
    await until(pilot, lambda: isinstance(app.screen, ExpertScreen))
    await pilot.pause()
    area = app.screen.query_one("#positive", TextArea)
    area.clear()
    await type_text(pilot, positive)
    if negative:
        await pilot.press("tab")
        await type_text(pilot, negative)
    await pilot.press("ctrl+s")
    await until(pilot, lambda: isinstance(app.screen, RecipeScreen))
    await pilot.pause()


def test_build_a_moe_in_recipe_and_run_it(tiny_model, tmp_path) -> None:
    base = str(tiny_model("llama", layers=2, seed=1))
    code = str(tiny_model("llama", layers=2, seed=2))
    math = str(tiny_model("llama", layers=2, seed=3))
    out = tmp_path / "moe-out"
    saved = tmp_path / "moe.yml"

    async def run() -> None:
        state = WorkbenchState(bench=[base, code, math], out_dir=str(out))
        state.config = config_for_bench([base, code, math], "linear")
        app = make_app(tmp_path, state, mode="recipe")
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(app, pilot)
            screen = app.screen
            screen.query_one("#method", Select).value = "moe"  # MoE is a choice of method
            await pilot.pause()
            assert app.state.kind == "moe" and screen.query_one("#moe-fields").display
            assert not screen.query_one("#merge-fields").display
            table = screen.query_one("#experts", DataTable)
            assert table.row_count == 3  # every bench model starts as an expert
            assert "has no positive_prompts" in str(screen.query_one("#moe-problems", Static).render())
            # the base model need not be an expert: x removes the row under the cursor
            table.focus()
            table.move_cursor(row=0)
            await pilot.press("x")
            await pilot.pause()
            assert [e.source_model for e in app.state.moe.experts] == [code, math]
            # prompts per expert, in the editor (enter on a row, or e)
            await edit_expert(pilot, app, "enter", "w1 w2 w3\nw4 w5", "w30")
            table.move_cursor(row=1)
            await edit_expert(pilot, app, "e", "w30 w31")
            moe = app.state.moe
            assert moe.experts[0].positive_prompts == ["w1 w2 w3", "w4 w5"] and moe.experts[0].negative_prompts == ["w30"]
            assert moe.experts[1].positive_prompts == ["w30 w31"]
            # a added then x removed: back to two experts
            await edit_expert(pilot, app, "a", "w50")
            assert len(app.state.moe.experts) == 3 and app.state.moe.experts[2].source_model == base
            table.move_cursor(row=2)
            await pilot.press("x")
            await pilot.pause()
            assert len(app.state.moe.experts) == 2
            # the gate mode and experts per token in the form
            screen.query_one("#gate-mode", Select).value = "cheap_embed"
            await pilot.pause()
            ept = screen.query_one("#ept", Input)
            ept.focus()
            await pilot.press("backspace", "1")
            await pilot.pause()
            moe = app.state.moe
            assert moe.gate_mode == "cheap_embed" and moe.experts_per_token == 1
            assert "ready for mergetui moe" in str(screen.query_one("#moe-problems", Static).render())
            # the expert actions are in the command palette whatever has focus
            titles = {c.title for c in app.get_system_commands(screen)}
            assert {"Recipe: Add expert", "Recipe: Edit expert", "Recipe: Remove expert"} <= titles
            area = screen.query_one("#yaml", TextArea)
            assert "gate_mode: cheap_embed" in area.text and "experts_per_token: 1" in area.text
            # ctrl+s writes mergekit-moe YAML
            await pilot.press("ctrl+s")
            await pilot.pause()
            app.screen.query_one("#prompt-input", Input).value = str(saved)
            await pilot.press("enter")
            await pilot.pause()
            assert load_moe_config(saved) == app.state.moe
            # Run: the MoE's preflight, then `mergetui moe` as a detached job, followed to the end
            await pilot.press("f5")  # the focus is in a text field: F5, not 5
            run_view = app.screen
            assert isinstance(run_view, RunScreen)
            await until(pilot, lambda: run_view.preflight_worker is not None)
            await run_view.preflight_worker.wait()
            await pilot.pause()
            pf = run_view.preflight_result
            assert not pf.error and pf.summary["method"].startswith("moe (Mixtral, 2 experts")
            assert "s starts the MoE assembly" in str(run_view.query_one("#preflight", Static).render())
            await pilot.press("s")
            await until(pilot, lambda: run_view.follow_worker is not None)
            assert app.state.job.kind == "moe"
            await run_view.follow_worker.wait()
            await until(pilot, lambda: not app.state.job_running)
            assert run_view.last_event["event"] == "finished", run_view.last_event
            assert app.state.job_progress[0] == app.state.job_progress[1] > 0
            assert "(moe)" in str(run_view.query_one("#job-info", Static).render())

    asyncio.run(run())
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["num_local_experts"] == 2 and cfg["num_experts_per_tok"] == 1 and cfg["model_type"] == "mixtral"
