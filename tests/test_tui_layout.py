"""Layout: a frankenmerge built with keys only, saved as YAML that `mergetui merge` runs."""

from __future__ import annotations

import asyncio
import json

from mergetui.cli import main as cli_main
from mergetui.engine.config import load_config, parse_config
from mergetui.state import WorkbenchState
from tui_fakes import make_app, settle


def test_build_frankenmerge_with_keys_and_merge_it(tiny_model, tmp_path) -> None:
    a = str(tiny_model("llama", layers=4, seed=1))
    b = str(tiny_model("llama", layers=4, seed=2))
    out_yaml = tmp_path / "franken.yml"

    async def run() -> None:
        app = make_app(tmp_path, WorkbenchState(bench=[a, b]), mode="layout")
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(app, pilot)
            layout = app.state.layout
            assert layout.sources == {a: 4, b: 4}
            await pilot.press("a")  # a [0, 4)
            await pilot.press("minus", "minus")  # a [0, 2)
            await pilot.press("a")  # continues: a [2, 4)
            await pilot.press("s")  # that slice takes b: b [2, 4)
            await pilot.press("d")  # duplicate: b [2, 4) twice
            await pilot.press("left")  # move the copy: b [1, 3)
            await pilot.press("x")  # delete it again
            await pilot.press("u")  # undo the delete
            await pilot.press("shift+up")  # reorder: the copy goes up one
            assert [(bl.model, bl.spans[0].start, bl.spans[0].end) for bl in layout.blocks] == [(a, 0, 2), (b, 1, 3), (b, 2, 4)]
            assert layout.validate() == []
            assert app.state.config is not None and app.state.config.merge_method == "passthrough"
            await pilot.press("ctrl+s")
            await pilot.pause()
            prompt = app.screen.query_one("#prompt-input")
            prompt.value = ""
            await pilot.press(*str(out_yaml), "enter")
            await pilot.pause()
            assert out_yaml.exists()

    asyncio.run(run())
    cfg = load_config(out_yaml)
    assert [s.sources[0].layer_range for s in cfg.slices] == [(0, 2), (1, 3), (2, 4)]
    assert cli_main(["merge", str(out_yaml), str(tmp_path / "out"), "--quiet"]) == 0
    assert json.loads((tmp_path / "out" / "config.json").read_text())["num_hidden_layers"] == 6


def test_layout_shows_validation_inline(tiny_model, tmp_path) -> None:
    a = str(tiny_model("llama", layers=4, seed=1))

    async def run() -> None:
        app = make_app(tmp_path, WorkbenchState(bench=[a]), mode="layout")
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(app, pilot)
            issues = app.screen.query_one("#layout-issues")
            assert "no slices yet" in str(issues.render())
            await pilot.press("a", "plus")  # growing past the end is refused, not an error
            assert app.state.layout.blocks[0].spans[0].end == 4
            # a hand-edited recipe with a slice past the end shows up in Layout, flagged
            app.state.config = parse_config(f"merge_method: passthrough\nslices:\n- sources:\n  - model: {a}\n    layer_range: [0, 9]\n")
            app.screen.refresh_from_state()
            await pilot.pause()
            assert "outside its 4 layers" in str(issues.render())

    asyncio.run(run())
