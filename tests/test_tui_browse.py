"""Browse: search the local Hub, see a profile, put a model on the bench; errors show in place."""

from __future__ import annotations

import asyncio
import uuid

from textual.widgets import DataTable, Input, Static

from mergetui.screens.browse import BrowseScreen
from tui_fakes import make_app


def test_search_profile_and_add_to_bench(hub, tiny_model, tmp_path) -> None:
    async def run() -> None:
        tag = uuid.uuid4().hex[:8]
        path = tiny_model("llama", layers=2, seed=1)
        hub.add_repo(f"tui/{tag}-small", path, downloads=5, likes=1)
        hub.add_repo(f"tui/{tag}-popular", path, downloads=50, likes=3)
        app = make_app(tmp_path)
        async with app.run_test(size=(100, 30)) as pilot:
            screen = app.screen
            assert isinstance(screen, BrowseScreen)
            await pilot.press("slash")
            assert isinstance(app.focused, Input)
            await pilot.press(*tag, "enter")
            await pilot.pause()
            await screen.search_worker.wait()
            await pilot.pause()
            table = screen.query_one("#hub-table", DataTable)
            assert [table.get_row_at(i)[0] for i in range(table.row_count)] == [f"tui/{tag}-popular", f"tui/{tag}-small"]
            await pilot.press("escape")  # back to the table
            assert app.focused is table
            await pilot.press("down")
            await pilot.pause()
            await screen.profile_worker.wait()
            await pilot.pause()
            profile = str(screen.query_one("#profile", Static).render())
            assert f"tui/{tag}-small" in profile and "LlamaForCausalLM" in profile
            await pilot.press("a")
            assert app.state.bench == [f"tui/{tag}-small"]
            await app.profile_worker.wait()
            assert app.state.profiles[f"tui/{tag}-small"].layers == 2

    asyncio.run(run())


def test_search_error_shows_in_place(hub, tmp_path, monkeypatch, dead_endpoint) -> None:
    async def run() -> None:
        from huggingface_hub import constants

        monkeypatch.setattr(constants, "ENDPOINT", dead_endpoint)
        monkeypatch.setenv("MERGETUI_HUB_TIMEOUT", "1")
        app = make_app(tmp_path)
        async with app.run_test(size=(100, 30)) as pilot:
            screen = app.screen
            worker = screen.search()
            await worker.wait()
            await pilot.pause()
            status = str(screen.query_one("#hub-status", Static).render())
            assert "cannot reach the Hub" in status
            assert screen.query_one("#hub-table", DataTable).row_count == 0

    asyncio.run(run())


def test_local_directory_listing(tiny_model, tmp_path) -> None:
    async def run() -> None:
        path = tiny_model("llama", layers=2, seed=1)
        app = make_app(tmp_path)
        app.state.local_dirs.append(str(path.parent))
        async with app.run_test(size=(100, 30)) as pilot:
            screen = app.screen
            await screen.local_worker.wait()
            await pilot.press("l")
            await pilot.pause()
            table = screen.query_one("#local-table", DataTable)
            ids = [r.id for r in screen.rows["local"]]
            assert str(path) in ids  # (HF cache rows may come first)
            table.move_cursor(row=ids.index(str(path)))
            await pilot.press("a")
            assert app.state.bench == [str(path)]

    asyncio.run(run())
