"""Run: preflight, then the merge as its own process, followed through its events file.

The merge is `python -m mergetui merge ... --events FILE` (a MoE recipe: `mergetui moe`, which
writes the same events) in a new session (mergetui.jobs), so it survives a dropped SSH
connection; a thread worker tails the events file and posts each event here. Reopening the
workbench finds the job folder and follows the same file again. The preflight is run again
whenever the recipe or the output directory changed since it was shown.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterable

from rich.text import Text
from textual import work
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Markdown, ProgressBar, RichLog, Static
from textual.worker import Worker, get_current_worker

from mergetui import backend, jobs
from mergetui.backend import Preflight
from mergetui.engine.events import follow
from mergetui.screens.base import MARKS, ViewScreen
from mergetui.screens.dialogs import ConfirmScreen, PromptScreen
from mergetui.widgets.gauges import Gauges, human


class JobEvent(Message):
    """One event of the followed merge (or a synthetic 'stopped' when it died silently)."""

    def __init__(self, job_id: str, event: dict[str, Any]) -> None:
        super().__init__()
        self.job_id = job_id
        self.event = event


class RunScreen(ViewScreen):
    """Preflight, progress, log, gauges and the result."""

    MODE = "run"
    GAUGES_DETAILED = True
    BINDINGS = [
        Binding("p", "preflight", "Preflight"),
        Binding("s", "start", "Start merge"),
        Binding("x", "cancel", "Cancel"),
        Binding("r", "resume", "Resume"),
        Binding("o", "out_dir", "Output dir"),
        Binding("u", "push", "Push to Hub"),
        Binding("c", "toggle_card", "Model card", show=False),
        Binding("v", "vocab_fix", "Vocab fix…", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.preflight_worker: Worker[Preflight] | None = None
        self.follow_worker: Worker[None] | None = None
        self.push_worker: Worker[str] | None = None
        self.preflight_result: Preflight | None = None
        self.last_event: dict[str, Any] = {}
        self.followed = ""  # id of the job whose events this view follows
        self._totals = {"tensors": 0, "bytes": 0, "start_bytes": 0}
        self._t0 = 0.0
        self._start_when_ready = False
        self._preflight_for: tuple[str, str] | None = None  # (recipe YAML, out dir) of the preflight shown

    def compose_body(self) -> Iterable[Widget]:
        with Horizontal(id="run-body"):
            with Vertical(id="run-main"):
                yield Static("", id="preflight")
                yield ProgressBar(id="progress", show_eta=False)
                yield Static("", id="progress-text")
                yield RichLog(id="log", wrap=True, markup=False, max_lines=2000)
                yield Markdown("", id="card")
            with Vertical(id="run-side"):
                yield Gauges(detailed=True, interval=self.workbench.gauge_interval)
                yield Static("", id="job-info")

    def on_mount(self) -> None:
        self.query_one("#card", Markdown).display = False
        self.query_one("#progress", ProgressBar).display = False  # until there is a merge to show
        if self.workbench.start_merge:
            self.start_after_preflight()
        elif self.state.job is None:
            self.action_preflight()
        self.refresh_from_state()

    def refresh_from_state(self) -> None:
        job = self.state.job
        if job is not None and self.followed != job.id:
            self.attach(job)
        if self._preflight_for is not None and self._preflight_for != self._recipe_key():
            self.action_preflight()  # the recipe changed elsewhere (Recipe, Compare's vocabulary fix)
        self._job_info()

    def _recipe_key(self) -> tuple[str, str]:
        cfg = self.state.active() if (self.state.bench or self.state.config is not None or self.state.moe is not None) else None
        return (cfg.to_yaml() if cfg is not None else "", self.state.out_dir)

    # ---- preflight ---------------------------------------------------------------------------
    def action_preflight(self) -> None:
        self._preflight_for = self._recipe_key()
        if not self.state.bench and self.state.config is None and self.state.moe is None:
            self.query_one("#preflight", Static).update(Text("No recipe yet: add models in Browse, shape it in Layout or Recipe.", "dim"))
            return
        self.query_one("#preflight", Static).update(Text("Preflight: planning from headers…", "italic"))
        self.preflight_worker = self._preflight(self.state.active(), self.state.out_dir)

    @work(thread=True, exclusive=True, group="preflight", exit_on_error=False)
    def _preflight(self, cfg: Any, out_dir: str) -> Preflight:
        pf = backend.preflight(cfg, out_dir)
        if not get_current_worker().is_cancelled:
            self.app.call_from_thread(self._show_preflight, pf)
        return pf

    def _show_preflight(self, pf: Preflight) -> None:
        self.preflight_result = pf
        t = Text()
        t.append("Preflight\n", "bold underline")
        if pf.error:
            t.append(f"✖ {pf.error}\n", "bold red")
        for f in pf.findings:
            t.append(*MARKS[f.level])
            t.append(f"{f.message}\n")
            if f.code == "embedding-rows-differ" and f.level == "error":
                t.append("  v: set the output vocabulary (tokenizer source union / base / one model)\n", "bold")
        if pf.summary:
            s = pf.summary
            t.append(f"{s['method']} → {s['output_layers']} layers, {s['parameters']:,} parameters, {s['tensors']} tensors\n")
            t.append(f"download {human(pf.download_bytes)} · output {human(pf.output_bytes)} · peak RAM ~{human(pf.peak_ram)} · "
                     f"VRAM {human(pf.peak_vram) if pf.peak_vram else '0 (CPU merge)'} · free disk {human(pf.free_disk)}\n")
            t.append(f"output → {self.state.out_dir}   ", "dim")
            t.append("s starts the MoE assembly" if self.state.kind == "moe" else "s starts the merge", "bold green")
        self.query_one("#preflight", Static).update(t)
        if self._start_when_ready:
            self._start_when_ready = False
            if pf.error:
                self.notify_error("Not started: the preflight found a problem.")
            else:
                self.action_start()

    def start_after_preflight(self) -> None:
        """Run preflight, then start the merge if it planned cleanly (`mergetui run`)."""
        self._start_when_ready = True
        self.action_preflight()

    # ---- starting and following ----------------------------------------------------------------
    def action_start(self) -> None:
        if self.state.job_running:
            self.notify("A merge is already running here: x cancels it.", severity="warning")
            return
        pf = self.preflight_result
        if pf is not None and pf.error:
            self.notify_error(f"Preflight failed: {pf.error}")
            return
        app = self.workbench
        kind = self.state.kind
        try:
            job = jobs.start_job(self.state.active().to_yaml(), self.state.out_dir, root=app.jobs_root, command=app.merge_command,
                                 kind=kind)
        except OSError as e:
            self.notify_error(f"Could not start the {kind}: {e}")
            return
        self.query_one("#log", RichLog).clear()
        self.notify(f"{'MoE assembly' if kind == 'moe' else 'Merge'} started (job {job.id}).")
        self.attach(job)

    def attach(self, job: jobs.Job) -> Worker[None]:
        """Follow `job`'s events from the start of its current attempt."""
        self.state.job = job
        self.followed = job.id
        self.state.job_running = job.alive()
        self.state.job_progress = (0, 0)
        self._totals = {"tensors": 0, "bytes": 0, "start_bytes": 0}
        self._t0 = time.time()
        self.query_one("#card", Markdown).display = False
        self.query_one("#log", RichLog).display = True
        bar = self.query_one("#progress", ProgressBar)
        bar.display = True
        bar.update(total=None, progress=0)
        self._log(f"following job {job.id} (pid {job.pid}) → {job.out_dir}", "dim")
        self._job_info()
        self.follow_worker = self._follow(job)
        return self.follow_worker

    @work(thread=True, exclusive=True, group="follow", exit_on_error=False)
    def _follow(self, job: jobs.Job) -> None:
        worker = get_current_worker()
        seen = 0
        for ev in follow(job.events_path, stop=lambda: worker.is_cancelled or not job.alive(), poll=0.2):
            seen += 1
            self.post_message(JobEvent(job.id, ev))
        if worker.is_cancelled:
            return
        events = job.read_events()  # the process may have ended between two polls
        for ev in events[seen:]:
            self.post_message(JobEvent(job.id, ev))
        if job.status(events) == "stopped":
            self.post_message(JobEvent(job.id, {"event": "stopped", "log": job.log_tail()}))

    def on_job_event(self, message: JobEvent) -> None:
        job = self.state.job
        if job is None or message.job_id != job.id:
            return
        ev = message.event
        self.last_event = ev
        kind = ev.get("event")
        bar = self.query_one("#progress", ProgressBar)
        if kind == "plan":
            self._totals = {"tensors": ev.get("tensors", 0), "bytes": ev.get("bytes", 0), "start_bytes": ev.get("already_done_bytes", 0)}
            self._t0 = ev.get("time", time.time())
            bar.update(total=max(1, ev.get("bytes", 0)), progress=ev.get("already_done_bytes", 0))
            self.state.job_progress = (ev.get("already_done_bytes", 0), ev.get("bytes", 0))
            resumed = f", resuming after {ev['already_done']} done" if ev.get("already_done") else ""
            self._log(f"plan: {ev.get('tensors')} tensors, {human(ev.get('bytes'))} in {ev.get('shards')} shard(s) "
                      f"on {ev.get('device', 'cpu')}{resumed}")
            self._progress_text(ev.get("already_done", 0), ev.get("already_done_bytes", 0), "")
        elif kind == "tensor_done":
            bar.update(progress=ev.get("done_bytes", 0))
            self.state.job_progress = (ev.get("done_bytes", 0), self._totals["bytes"])
            self._progress_text(ev.get("done", 0), ev.get("done_bytes", 0), ev.get("name", ""))
        elif kind == "shard_written":
            self._log(f"wrote {ev.get('file')} ({human(ev.get('bytes'))})")
        elif kind == "finished":
            self._finished(ev)
        elif kind == "error":
            self._ended()
            self._log(f"error: {ev.get('message')}", "bold red")
            what = "MoE assembly" if self._job_kind() == "moe" else "Merge"
            self.notify_error(f"{what} failed: {str(ev.get('message', '')).splitlines()[0]}")
        elif kind == "cancelled":
            self._ended()
            if self._job_kind() == "moe":  # a MoE assembly leaves nothing behind: it starts over
                self._log("cancelled; nothing was written: r starts it again", "bold yellow")
                self.notify("MoE assembly cancelled. r starts it again.", severity="warning")
            else:
                self._log("cancelled; the partial output is kept: r resumes", "bold yellow")
                self.notify("Merge cancelled. r resumes it.", severity="warning")
        elif kind == "stopped":
            self._ended()
            self._log("the merge process ended without a final event; its last output:", "bold red")
            for line in str(ev.get("log", "")).splitlines()[-10:]:
                self._log(line, "red")
            self.notify_error("The merge process stopped unexpectedly (see the log). r resumes it.")
        self._job_info()

    def _progress_text(self, done: int, done_bytes: int, current: str) -> None:
        total_t, total_b, start_b = self._totals["tensors"], self._totals["bytes"], self._totals["start_bytes"]
        elapsed = max(1e-6, time.time() - self._t0)
        rate = (done_bytes - start_b) / elapsed
        eta = (total_b - done_bytes) / rate if rate > 0 else None
        t = Text()
        t.append(f"{done}/{total_t} tensors · {human(done_bytes)}/{human(total_b)}")
        t.append(f" · ETA {_duration(eta)}" if eta is not None else " · ETA —", "bold")
        if current:
            t.append(f"\nnow: {current}", "dim")
        self.query_one("#progress-text", Static).update(t)

    def _finished(self, ev: dict[str, Any]) -> None:
        self._ended()
        bar = self.query_one("#progress", ProgressBar)
        bar.update(total=max(1, ev.get("bytes", 1)), progress=max(1, ev.get("bytes", 1)))
        self.state.job_progress = (ev.get("bytes", 0), ev.get("bytes", 0))
        self._progress_text(ev.get("tensors", 0), ev.get("bytes", 0), "")
        out = ev.get("out_dir", "")
        self._log(f"finished: {ev.get('tensors')} tensors, {human(ev.get('bytes'))} in {ev.get('seconds', 0):.1f}s → {out}", "bold green")
        self.notify(f"{'MoE' if self._job_kind() == 'moe' else 'Merge'} finished: {out}")
        card = Path(out) / "README.md"
        try:
            text = card.read_text()
        except OSError:
            text = f"(no model card found in {out})"
        md = self.query_one("#card", Markdown)
        md.update(_strip_front_matter(text))
        md.display = True
        self.query_one("#log", RichLog).display = False

    def _job_kind(self) -> str:
        return self.state.job.kind if self.state.job is not None else self.state.kind

    def _ended(self) -> None:
        self.state.job_running = False

    def _log(self, text: str, style: str = "") -> None:
        self.query_one("#log", RichLog).write(Text(text, style))

    def _job_info(self) -> None:
        job = self.state.job
        t = Text()
        if job is None:
            t.append("No merge yet.\n", "dim")
            t.append(f"output: {self.state.out_dir}\n")
            t.append("j lists past and running merges", "dim")
        else:
            status = "running" if self.state.job_running else job.status()
            t.append(f"job {job.id}{' (moe)' if job.kind == 'moe' else ''}  ", "bold")
            t.append(status + "\n", {"running": "bold green", "finished": "green", "cancelled": "yellow"}.get(status, "red"))
            t.append(f"out: {job.out_dir}\n")
            t.append(f"pid {job.pid} · attempt {job.attempts}\n", "dim")
            if status == "finished":
                t.append("u pushes it to the Hub · c toggles the card", "dim")
            elif status in ("cancelled", "error", "stopped"):
                t.append("r starts it again" if job.kind == "moe" else "r resumes", "dim")
            elif status == "running":
                t.append("x cancels (asks first)", "dim")
        self.query_one("#job-info", Static).update(t)

    # ---- actions ---------------------------------------------------------------------------
    def action_cancel(self) -> None:
        job = self.state.job
        if job is None or not self.state.job_running:
            self.notify("No merge is running.")
            return

        def done(yes: bool | None) -> None:
            if yes and job is not None:
                if jobs.cancel_job(job):
                    self._log("cancelling… (the merge finishes the tensors in flight)", "yellow")
                else:
                    self.notify("The merge had already stopped.")
        self.app.push_screen(ConfirmScreen(f"Cancel the merge into {job.out_dir}? The partial output is kept for resume."), done)

    def action_resume(self) -> None:
        job = self.state.job
        if job is None:
            self.notify("Nothing to resume: start a merge with s.")
            return
        if self.state.job_running or job.alive():
            self.notify("The merge is still running.")
            return
        if job.status() == "finished":
            self.notify("That merge already finished.")
            return
        app = self.workbench
        jobs.resume_job(job, command=app.merge_command)
        self.notify(f"Resuming job {job.id}.")
        self.attach(job)

    def action_out_dir(self) -> None:
        def done(path: str | None) -> None:
            if path:
                self.state.out_dir = path
                self.action_preflight()
                self._job_info()
        self.app.push_screen(PromptScreen("Output directory for the merged model:", self.state.out_dir), done)

    def action_toggle_card(self) -> None:
        card = self.query_one("#card", Markdown)
        card.display = not card.display
        self.query_one("#log", RichLog).display = not card.display

    def action_push(self) -> None:
        job = self.state.job
        if job is None or job.status() != "finished":
            self.notify("Push needs a finished merge.", severity="warning")
            return

        if self.push_worker is not None and self.push_worker.is_running:
            self.notify("A push is already running.")
            return

        def done(repo: str | None) -> None:
            if repo:
                # the card hides the log after a merge: show it, or the upload's progress and outcome are invisible
                self.query_one("#card", Markdown).display = False
                self.query_one("#log", RichLog).display = True
                self._log(f"uploading {job.out_dir} to {repo}…")
                self.push_worker = self._push(job.out_dir, repo)
        default = f"{Path(job.out_dir).name}"
        self.app.push_screen(PromptScreen("Push to the Hub as (org/name, private):", default), done)

    @work(thread=True, exclusive=True, group="push", exit_on_error=False)
    def _push(self, out_dir: str, repo: str) -> str:
        try:
            url = backend.push_to_hub(out_dir, repo)
        except Exception as e:  # shown in place, one line with its fix: login, permissions, network
            message = backend.describe_error(e)
            self.app.call_from_thread(self._log, f"push failed: {message}", "bold red")
            self.app.call_from_thread(self.notify_error, f"Push failed: {message}")
            return ""
        self.app.call_from_thread(self._log, f"pushed: {url}", "bold green")
        self.app.call_from_thread(self.notify, f"Pushed to {url}")
        return url


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _strip_front_matter(text: str) -> str:
    """The model card without its YAML front matter (shown as Markdown)."""
    if text.startswith("---"):
        end = text.find("\n---", 3)
        if end != -1:
            return text[end + 4:].lstrip()
    return text
