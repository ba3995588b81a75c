"""Recipe: form edits show in the YAML, YAML edits show in the form, invalid YAML is flagged."""

from __future__ import annotations

import asyncio

from textual.widgets import Input, Select, Static, TextArea

from mergetui.engine.config import load_config
from mergetui.recipe import config_for_bench
from mergetui.state import WorkbenchState
from tui_fakes import make_app, settle


def test_recipe_yaml_round_trip(tmp_path) -> None:
    a, b = str(tmp_path / "model-a"), str(tmp_path / "model-b")  # profiles are not needed here

    async def run() -> None:
        state = WorkbenchState(bench=[a, b])
        state.config = config_for_bench([a, b], "linear")
        app = make_app(tmp_path, state, mode="recipe")
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(app, pilot)
            await pilot.pause()
            screen = app.screen
            area = screen.query_one("#yaml", TextArea)
            assert "merge_method: linear" in area.text
            # form -> YAML: the method, then one model's weight typed into its field
            screen.query_one("#method", Select).value = "task_arithmetic"
            await pilot.pause()
            assert "merge_method: task_arithmetic" in area.text
            screen.query_one("#base", Select).value = a
            await pilot.pause()
            assert f"base_model: {a}" in area.text
            weight_id = next(i for i, (p, m) in screen._param_inputs.items() if p == "weight" and m == b)
            field = screen.query_one(f"#{weight_id}", Input)
            field.focus()
            field.value = ""
            await pilot.press("0", ".", "3")
            await pilot.pause()
            assert app.state.config.models[1].parameters["weight"] == 0.3
            assert "weight: 0.3" in area.text
            # YAML -> form
            area.focus()
            area.load_text(area.text.replace("task_arithmetic", "linear").replace("weight: 0.3", "weight: [0, 0.5, 1]"))
            await pilot.pause()
            assert app.state.config.merge_method == "linear"
            assert screen.query_one("#method", Select).value == "linear"
            assert screen.query_one(f"#{weight_id}", Input).value == "[0, 0.5, 1]"
            # invalid YAML: flagged in place, the recipe stays as it was
            area.load_text("merge_method: linear\nmodels: [\n")
            await pilot.pause()
            assert "malformed YAML" in str(screen.query_one("#yaml-status", Static).render())
            assert app.state.config.merge_method == "linear" and len(app.state.config.models) == 2
            area.load_text(app.state.config.to_yaml())
            await pilot.pause()
            # save
            await pilot.press("ctrl+s")
            await pilot.pause()
            app.screen.query_one("#prompt-input", Input).value = str(tmp_path / "recipe.yml")
            await pilot.press("enter")
            await pilot.pause()
        saved = load_config(tmp_path / "recipe.yml")
        assert saved == state.config and saved.models[1].parameters["weight"] == [0, 0.5, 1]

    asyncio.run(run())
