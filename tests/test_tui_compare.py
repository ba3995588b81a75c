"""Compare: the bench side by side; the vocabulary mismatch is marked at first sight."""

from __future__ import annotations

import asyncio

from textual.widgets import DataTable, Static

from mergetui.state import WorkbenchState
from tui_fakes import make_app, settle


def test_compare_shows_vocabulary_mismatch(tiny_model, tmp_path) -> None:
    a = str(tiny_model("llama", layers=2, seed=1))
    b = str(tiny_model("llama", layers=2, seed=2, extra_tokens=2))

    async def run() -> None:
        app = make_app(tmp_path, WorkbenchState(bench=[a, b]), mode="compare")
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(app, pilot)
            screen = app.screen
            props = screen.query_one("#props", DataTable)
            row = props.get_row("embedding rows")
            assert str(row[1]).strip() == "128"
            assert str(row[2]).strip() == "✖ 130"  # the odd one out, marked and red
            assert row[2].style.startswith("bold white on dark_red")
            findings = str(screen.query_one("#findings", Static).render())
            assert "embedding rows differ" in findings and "fix:" in findings
            diff = screen.query_one("#tensor-diff", DataTable)
            names = {str(diff.get_row_at(i)[0]) for i in range(diff.row_count)}
            assert "model.embed_tokens.weight" in names
            title = str(screen.query_one("#compare-title", Static).render())
            assert "1 blocking" in title
            # x takes the model under the column cursor off the bench
            props.move_cursor(column=2)
            await pilot.press("x")
            assert app.state.bench == [a]

    asyncio.run(run())
