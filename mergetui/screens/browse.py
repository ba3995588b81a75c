"""Browse: search the Hub, list local models, read a profile, put models on the bench."""

from __future__ import annotations

from typing import Iterable

from rich.text import Text
from textual import on, work
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.widget import Widget
from textual.widgets import Checkbox, DataTable, Input, Select, Static, TabbedContent, TabPane
from textual.worker import Worker, get_current_worker

from mergetui import backend
from mergetui.backend import HubRow, Profile
from mergetui.screens.base import ViewScreen
from mergetui.screens.dialogs import PromptScreen
from mergetui.widgets.gauges import count

SORT_OPTIONS = [("downloads", "downloads"), ("likes", "likes"), ("trending", "trending"), ("recent", "recent")]


def hub_error(e: BaseException) -> str:
    """What went wrong with a Hub call, in words a user can act on (inspect words most of them)."""
    name = type(e).__name__
    if "GatedRepo" in name:
        return "gated: accept the model's licence on the Hub and log in (huggingface-cli login)"
    if "RepositoryNotFound" in name:
        return "not found: check the repo id (private repos need a token)"
    return backend.describe_error(e)


class BrowseScreen(ViewScreen):
    """Hub search and local models in tables, a profile beside them."""

    MODE = "browse"
    AUTO_FOCUS = "#hub-table"  # not the search box: digits switch views, "/" searches
    BINDINGS = [
        Binding("escape", "leave_input", "Back to table", show=False),
        Binding("slash", "focus_search", "Search"),
        Binding("a", "add_to_bench", "Add to bench"),
        Binding("h", "tab('hub')", "Hub"),
        Binding("l", "tab('local')", "Local"),
        Binding("o", "add_dir", "Add dir"),
        Binding("t", "toggle_textgen", "Text-gen only", show=False),
        Binding("s", "cycle_sort", "Sort", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, list[HubRow]] = {"hub": [], "local": []}
        self.search_worker: Worker[list[HubRow]] | None = None
        self.local_worker: Worker[list[HubRow]] | None = None
        self.profile_worker: Worker[Profile] | None = None
        self._searched = False

    def compose_body(self) -> Iterable[Widget]:
        with Horizontal(id="search-row"):
            yield Input(placeholder="search the Hub (enter)", id="query")
            yield Input(placeholder="author", id="author")
            yield Select(SORT_OPTIONS, value="downloads", allow_blank=False, id="sort")
            yield Checkbox("text-gen", True, id="textgen")
        with Horizontal(id="browse-body"):
            with TabbedContent(id="sources", initial="hub"):
                with TabPane("Hub", id="hub"):
                    yield Static("", id="hub-status", classes="status")
                    yield DataTable(id="hub-table", cursor_type="row", zebra_stripes=True)
                with TabPane("Local", id="local"):
                    yield Static("", id="local-status", classes="status")
                    yield DataTable(id="local-table", cursor_type="row", zebra_stripes=True)
            with VerticalScroll(id="profile-pane"):
                yield Static("Select a model to see its profile.", id="profile")

    def on_mount(self) -> None:
        hub = self.query_one("#hub-table", DataTable)
        hub.add_columns("id", "params", "downloads", "likes", "updated", "gated")
        local = self.query_one("#local-table", DataTable)
        local.add_columns("model", "updated", "path")
        self.query_one("#hub-status", Static).update("Type a query and press enter (empty: top models).")
        if self.workbench.autosearch:
            self.search()
        self.load_local()

    # ---- actions ---------------------------------------------------------------------------
    def action_focus_search(self) -> None:
        self.query_one("#sources", TabbedContent).active = "hub"
        self.query_one("#query", Input).focus()

    def action_leave_input(self) -> None:
        self.query_one(f"#{self.active_tab()}-table", DataTable).focus()

    def action_tab(self, tab: str) -> None:
        self.query_one("#sources", TabbedContent).active = tab
        self.query_one(f"#{tab}-table", DataTable).focus()

    def action_toggle_textgen(self) -> None:
        box = self.query_one("#textgen", Checkbox)
        box.value = not box.value

    def action_cycle_sort(self) -> None:
        sel = self.query_one("#sort", Select)
        keys = [k for k, _ in SORT_OPTIONS]
        sel.value = keys[(keys.index(str(sel.value)) + 1) % len(keys)]

    def action_add_to_bench(self) -> None:
        row = self.current_row()
        if row is None:
            self.notify("No model selected.", severity="warning")
            return
        ref = row.id  # a repo id (cached or not) or a directory: what a mergekit YAML names
        if self.state.add_to_bench(ref):
            self.notify(f"Added {ref} to the bench ({len(self.state.bench)} models).")
            self.workbench.load_profiles([ref])
            self.workbench.state_changed()
        else:
            self.notify(f"{ref} is already on the bench.")

    def action_add_dir(self) -> None:
        def done(path: str | None) -> None:
            if path:
                self.state.local_dirs.append(path)
                self.action_tab("local")
                self.load_local()
        self.app.push_screen(PromptScreen("Directory with models (or one model directory):", placeholder="~/models"), done)

    # ---- searching -------------------------------------------------------------------------
    @on(Input.Submitted, "#query,#author")
    def _submitted(self, event: Input.Submitted) -> None:
        self.search()

    @on(Select.Changed, "#sort")
    @on(Checkbox.Changed, "#textgen")
    def _options_changed(self) -> None:
        if self._searched:
            self.search()

    def search(self) -> Worker[list[HubRow]]:
        """Start a Hub search with the current inputs (replacing a running one)."""
        self._searched = True
        query = self.query_one("#query", Input).value.strip()
        author = self.query_one("#author", Input).value.strip()
        sort = str(self.query_one("#sort", Select).value)
        textgen = self.query_one("#textgen", Checkbox).value
        self.query_one("#hub-status", Static).update(Text("Searching the Hub…", "italic"))
        self.search_worker = self._search(query, author, sort, textgen)
        return self.search_worker

    @work(thread=True, exclusive=True, group="hub-search", exit_on_error=False)
    def _search(self, query: str, author: str, sort: str, textgen: bool) -> list[HubRow]:
        try:
            rows = backend.search_hub(query, author, sort, textgen)
        except Exception as e:  # shown in place, never raised into the UI
            self.app.call_from_thread(self._search_failed, hub_error(e))
            return []
        if not get_current_worker().is_cancelled:
            self.app.call_from_thread(self._show_hub, rows)
        return rows

    def _search_failed(self, message: str) -> None:
        self.query_one("#hub-status", Static).update(Text(message, "bold red"))
        self.query_one("#hub-table", DataTable).clear()
        self.rows["hub"] = []

    def _show_hub(self, rows: list[HubRow]) -> None:
        table = self.query_one("#hub-table", DataTable)
        table.clear()
        self.rows["hub"] = rows
        for r in rows:
            params = count(r.parameters)
            table.add_row(r.id, params, f"{r.downloads or 0:,}", f"{r.likes or 0:,}", r.updated,
                          Text(r.gated, "yellow") if r.gated else "", key=r.id)
        self.query_one("#hub-status", Static).update(f"{len(rows)} models — a adds the selected one to the bench" if rows else "No models found.")

    def load_local(self) -> Worker[list[HubRow]]:
        """List the HF cache and the added directories."""
        self.local_worker = self._load_local(list(self.state.local_dirs))
        return self.local_worker

    @work(thread=True, exclusive=True, group="local", exit_on_error=False)
    def _load_local(self, dirs: list[str]) -> list[HubRow]:
        rows = backend.local_models(dirs)
        self.app.call_from_thread(self._show_local, rows)
        return rows

    def _show_local(self, rows: list[HubRow]) -> None:
        table = self.query_one("#local-table", DataTable)
        table.clear()
        self.rows["local"] = rows
        for i, r in enumerate(rows):
            table.add_row(r.id.rstrip("/").rsplit("/", 1)[-1] if r.path == r.id else r.id, r.updated, r.path, key=str(i))
        self.query_one("#local-status", Static).update(
            f"{len(rows)} local models (HF cache + added dirs; o adds a dir)" if rows else "No local models: o adds a directory.")

    # ---- selection and profile ---------------------------------------------------------------
    def active_tab(self) -> str:
        """'hub' or 'local'."""
        return self.query_one("#sources", TabbedContent).active or "hub"

    def current_row(self) -> HubRow | None:
        """The highlighted row of the active table."""
        tab = self.active_tab()
        table = self.query_one(f"#{tab}-table", DataTable)
        rows = self.rows.get(tab, [])
        if not rows or not 0 <= table.cursor_row < len(rows):
            return None
        return rows[table.cursor_row]

    @on(DataTable.RowHighlighted)
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        row = self.current_row()
        if row is None:
            return
        ref = row.id
        cached = self.state.profiles.get(ref)
        if cached is not None:
            self._show_profile(cached)
            return
        self.query_one("#profile", Static).update(Text(f"Loading the profile of {row.id}…", "italic"))
        self.profile_worker = self._load_profile(ref)

    @work(thread=True, exclusive=True, group="profile", exit_on_error=False)
    def _load_profile(self, ref: str) -> Profile:
        profile = backend.load_profile(ref)
        if not get_current_worker().is_cancelled:
            self.app.call_from_thread(self._show_profile, profile)
        return profile

    def _show_profile(self, p: Profile) -> None:
        t = Text()
        t.append(f"{p.ref}\n", "bold")
        if p.error:
            t.append(p.error, "red")
        for k, v in p.props.items():
            value = f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) and k == "parameters" else str(v)
            t.append(f"{k:>18} ", "dim")
            t.append(f"{value}\n")
        on_bench = p.ref in self.state.bench
        t.append("\n✓ on the bench" if on_bench else "\na: add to the bench", "green" if on_bench else "dim")
        self.query_one("#profile", Static).update(t)
