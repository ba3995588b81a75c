"""Jobs: running and finished merges and MoE assemblies; enter attaches the Run view to one."""

from __future__ import annotations

import time

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Footer, Static
from textual.worker import Worker

from mergetui import jobs
from mergetui.widgets.gauges import human

STATUS_STYLE = {"running": "bold green", "finished": "green", "cancelled": "yellow", "error": "red", "stopped": "red"}


class JobsScreen(ModalScreen[None]):
    """The job registry as a table."""

    BINDINGS = [
        Binding("enter", "attach", "Attach"),
        Binding("x", "cancel_job", "Cancel"),
        Binding("r", "refresh", "Refresh"),
        Binding("escape,q", "close", "Close"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.jobs: list[jobs.Job] = []
        self.load_worker: Worker[list[tuple[jobs.Job, str, tuple[int, int]]]] | None = None

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog jobs"):
            yield Static(Text("Merges (enter attaches, x cancels, escape closes)", "bold"))
            yield DataTable(id="jobs-table", cursor_type="row")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(DataTable).add_columns("job", "kind", "status", "progress", "output", "started")
        self.action_refresh()

    def action_refresh(self) -> None:
        self.load_worker = self._load()

    @work(thread=True, exclusive=True, exit_on_error=False)
    def _load(self) -> list[tuple[jobs.Job, str, tuple[int, int]]]:
        root = getattr(self.app, "jobs_root", None)
        rows = []
        for j in jobs.list_jobs(root):
            events = j.read_events()
            rows.append((j, j.status(events), j.progress(events)))
        self.app.call_from_thread(self._show, rows)
        return rows

    def _show(self, rows: list[tuple[jobs.Job, str, tuple[int, int]]]) -> None:
        table = self.query_one(DataTable)
        table.clear()
        self.jobs = [j for j, _, _ in rows]
        for j, status, (done, total) in rows:
            pct = f"{100 * done // total}% of {human(total)}" if total else "—"
            started = time.strftime("%Y-%m-%d %H:%M", time.localtime(j.started))
            table.add_row(j.id, j.kind, Text(status, STATUS_STYLE.get(status, "")), pct, j.out_dir, started, key=j.id)
        if not rows:
            table.add_row("no merges yet", "", "", "", "", "")
        table.focus()

    def _selected(self) -> jobs.Job | None:
        table = self.query_one(DataTable)
        return self.jobs[table.cursor_row] if 0 <= table.cursor_row < len(self.jobs) else None

    def action_attach(self) -> None:
        job = self._selected()
        if job is None:
            return
        self.dismiss(None)
        self.app.attach_job(job)  # type: ignore[attr-defined]

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_attach()

    def action_cancel_job(self) -> None:
        job = self._selected()
        if job is not None and jobs.cancel_job(job):
            self.notify(f"Cancelling job {job.id}.")
        self.action_refresh()

    def action_close(self) -> None:
        self.dismiss(None)
