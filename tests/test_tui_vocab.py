"""The vocabulary fix in one key (Run and Compare), then a merge to the end; the Recipe's tokenizer section."""

from __future__ import annotations

import asyncio
import json

from textual.widgets import Input, Select, Static, TextArea

from mergetui.engine.config import parse_config
from mergetui.recipe import config_for_bench, token_overrides
from mergetui.screens.dialogs import ChoiceScreen
from mergetui.screens.run import RunScreen
from mergetui.state import WorkbenchState
from test_tui_run import until
from tui_fakes import make_app, settle


async def preflight_done(pilot, screen: RunScreen, yaml: str):
    """Wait for the preflight of the recipe `yaml` to be shown; returns it."""
    await until(pilot, lambda: screen._preflight_for is not None and screen._preflight_for[0] == yaml)
    await screen.preflight_worker.wait()
    await until(pilot, lambda: screen.preflight_result is not None and screen.preflight_worker.is_finished)
    await pilot.pause()
    return screen.preflight_result


def test_vocab_fix_in_one_key_then_merge(tiny_model, tmp_path) -> None:
    # the demo's bench: two clean models and one with two added tokens (two extra embedding rows)
    refs = [str(tiny_model("llama", layers=2, seed=1)), str(tiny_model("llama", layers=2, seed=2)),
            str(tiny_model("llama", layers=2, seed=3, extra_tokens=2))]
    out = tmp_path / "merged"

    async def run() -> None:
        state = WorkbenchState(bench=list(refs), out_dir=str(out))
        state.config = config_for_bench(refs, "linear")
        app = make_app(tmp_path, state, mode="run")
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(app, pilot)
            run_view = app.screen
            pf = await preflight_done(pilot, run_view, app.state.recipe().to_yaml())
            assert pf.error and "vocabulary" in pf.error  # the plan refuses the mismatch
            assert "v: set the output vocabulary" in str(run_view.query_one("#preflight", Static).render())
            # Run: v offers union / base / each model; 2 picks base, and the preflight is run again
            await pilot.press("v")
            await until(pilot, lambda: isinstance(app.screen, ChoiceScreen))
            await pilot.press("2")
            await until(pilot, lambda: app.screen is run_view)
            assert app.state.config.tokenizer.source == "base"
            pf = await preflight_done(pilot, run_view, app.state.recipe().to_yaml())
            assert not pf.error and not [f for f in pf.findings if f.level == "error"]
            # Compare: the finding is no longer blocking; u switches to the union in one key
            await pilot.press("2")
            await pilot.pause()
            title = app.screen.query_one("#compare-title", Static)
            assert "0 blocking" in str(title.render())
            titles = {c.title for c in app.get_system_commands(app.screen)}
            assert {"Compare: Vocab: union", "Compare: Vocab fix…"} <= titles
            await pilot.press("u")
            await pilot.pause()
            assert app.state.config.tokenizer.source == "union"
            assert "tokenizer:\n  source: union\n" in app.state.config.to_yaml()
            assert "0 blocking" in str(title.render())
            # Recipe shows the section in the form and in the YAML
            await pilot.press("4")
            await pilot.pause()
            assert "source: union" in app.screen.query_one("#yaml", TextArea).text
            assert app.screen.query_one("#tokenizer", Select).value == "union"
            # Run: preflight again (the recipe changed), clean; the merge runs to the end
            await pilot.press("5")
            pf = await preflight_done(pilot, run_view, app.state.recipe().to_yaml())
            assert not pf.error and not [f for f in pf.findings if f.level == "error"]
            await pilot.press("s")
            await until(pilot, lambda: run_view.follow_worker is not None)
            await run_view.follow_worker.wait()
            await until(pilot, lambda: not app.state.job_running)
            assert run_view.last_event["event"] == "finished", run_view.last_event

    asyncio.run(run())
    assert json.loads((out / "config.json").read_text())["vocab_size"] == 130  # 128 shared tokens + 2 added


TOKENIZER_YAML = """\
merge_method: linear
models:
- model: {a}
- model: {b}
tokenizer:
  source: union
  tokens:
    <extra_0>:
      source: {b}
    <pad>:
      source:
        kind: zero
      force: true
chat_template: chatml
"""


def test_recipe_tokenizer_section_round_trip(tmp_path) -> None:
    a, b = str(tmp_path / "model-a"), str(tmp_path / "model-b")  # profiles are not needed here

    async def run() -> None:
        state = WorkbenchState(bench=[a, b])
        state.config = config_for_bench([a, b], "linear")
        app = make_app(tmp_path, state, mode="recipe")
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(app, pilot)
            screen = app.screen
            area = screen.query_one("#yaml", TextArea)
            # form -> YAML: source, padding, chat template
            screen.query_one("#tokenizer", Select).value = "union"
            await pilot.pause()
            assert "tokenizer:\n  source: union\n" in area.text
            pad = screen.query_one("#pad", Input)
            pad.focus()
            await pilot.press("6", "4")
            await pilot.pause()
            assert app.state.config.tokenizer.pad_to_multiple_of == 64 and "pad_to_multiple_of: 64" in area.text
            await pilot.press("x")  # not a number: flagged, the recipe keeps 64
            await pilot.pause()
            assert pad.has_class("-invalid") and app.state.config.tokenizer.pad_to_multiple_of == 64
            await pilot.press("backspace")
            screen.query_one("#chat-template", Select).value = "llama3"
            await pilot.pause()
            assert "chat_template: llama3" in area.text
            screen.query_one("#tokenizer", Select).value = b
            await pilot.pause()
            assert app.state.config.tokenizer.source == b and app.state.config.tokenizer.pad_to_multiple_of == 64
            # YAML -> form: per-token overrides, typed into the YAML pane, survive form edits
            area.focus()
            area.load_text(TOKENIZER_YAML.format(a=a, b=b))
            await pilot.pause()
            cfg = app.state.config
            assert len(token_overrides(cfg)) == 2 and cfg.chat_template == "chatml"
            assert screen.query_one("#tokenizer", Select).value == "union"
            assert screen.query_one("#chat-template", Select).value == "chatml"
            assert screen.query_one("#pad", Input).value == ""
            assert "2 (<extra_0>, <pad>)" in str(screen.query_one("#tokens-summary", Static).render())
            screen.query_one("#tokenizer", Select).value = "base"
            await pilot.pause()
            assert token_overrides(app.state.config) == token_overrides(cfg)
            assert parse_config(area.text) == app.state.config  # the pane shows exactly the recipe
            # the chat template back to "keep the base's", the source to none: the section goes
            screen.query_one("#chat-template", Select).clear()
            await pilot.pause()
            screen.query_one("#tokenizer", Select).clear()
            await pilot.pause()
            assert app.state.config.tokenizer is None and app.state.config.chat_template is None
            assert "tokenizer:" not in area.text and "chat_template:" not in area.text

    asyncio.run(run())
