"""The workbench App: five views as modes over one shared state, gauges in each.

Nothing heavy happens at start-up: torch and transformers are imported by workers (the method
catalog, profiles, preflight), so the first paint needs only Textual.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any, Iterable

from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen
from textual.worker import Worker

from mergetui import backend, jobs
from mergetui.backend import Profile
from mergetui.inspect.system import SystemSampler
from mergetui.screens.browse import BrowseScreen
from mergetui.screens.compare import CompareScreen
from mergetui.screens.help import HelpScreen
from mergetui.screens.jobs import JobsScreen
from mergetui.screens.layout import LayoutScreen
from mergetui.screens.recipe import RecipeScreen
from mergetui.screens.run import RunScreen
from mergetui.state import WorkbenchState
from mergetui.widgets.gauges import GaugeData, Sampler
from mergetui.widgets.topbar import VIEWS


class MergeTUI(App[None]):
    """mergetui's workbench."""

    TITLE = "mergetui"
    CSS_PATH = "app.tcss"
    MODES = {"browse": BrowseScreen, "compare": CompareScreen, "layout": LayoutScreen, "recipe": RecipeScreen, "run": RunScreen}
    BINDINGS = [
        Binding("1,f1", "view('browse')", "Browse", show=False),
        Binding("2,f2", "view('compare')", "Compare", show=False),
        Binding("3,f3", "view('layout')", "Layout", show=False),
        Binding("4,f4", "view('recipe')", "Recipe", show=False),
        Binding("5,f5", "view('run')", "Run", show=False),
        Binding("j", "jobs", "Jobs", show=False),
        Binding("question_mark", "help", "Help"),
        Binding("ctrl+q", "quit", "Quit"),
    ]

    def __init__(
        self,
        state: WorkbenchState | None = None,
        *,
        mode: str = "browse",
        sampler: Sampler | None = None,
        jobs_root: Path | None = None,
        merge_command: list[str] | None = None,
        autosearch: bool = True,
        gauge_interval: float = 1.0,
        start_merge: bool = False,
        show_jobs: bool = False,
        reattach: bool = True,
    ) -> None:
        super().__init__()
        self.state = state or WorkbenchState()
        self.initial_mode = mode
        self.sampler: Sampler = sampler or SystemSampler()
        self.gauge_data = GaugeData()
        self.gauge_interval = gauge_interval
        self.jobs_root = jobs_root
        self.merge_command = merge_command
        self.autosearch = autosearch
        self.start_merge = start_merge
        self.show_jobs = show_jobs
        self.reattach = reattach
        self.catalog_worker: Worker[dict[str, Any]] | None = None
        self.profile_worker: Worker[list[Profile]] | None = None
        self.reattach_worker: Worker[jobs.Job | None] | None = None

    def on_mount(self) -> None:
        self.switch_mode(self.initial_mode)  # the Run view starts the merge itself when start_merge
        if self.show_jobs:
            self.push_screen(JobsScreen())
        # the loaders import torch in threads; started after the first paint so they do not
        # compete with it for the GIL
        self.call_after_refresh(self._start_loading)

    def _start_loading(self) -> None:
        self.catalog_worker = self._load_catalog()
        if self.state.bench:
            self.load_profiles(list(self.state.bench))
        if self.reattach and not self.start_merge:
            self.reattach_worker = self._find_running()

    def on_unmount(self) -> None:
        close = getattr(self.sampler, "close", None)
        if callable(close):
            close()

    # ---- background loading ----------------------------------------------------------------
    @work(thread=True, exit_on_error=False, group="catalog")
    def _load_catalog(self) -> dict[str, Any]:
        """The method registry (imports torch), off the UI thread."""
        catalog = backend.method_catalog()
        self.call_from_thread(self._catalog_loaded, catalog)
        return catalog

    def _catalog_loaded(self, catalog: dict[str, Any]) -> None:
        self.state.methods = catalog
        self.state_changed()

    def load_profiles(self, refs: list[str]) -> Worker[list[Profile]]:
        """Load the profiles of `refs` in a worker; views refresh as each arrives."""
        self.profile_worker = self._load_profiles(refs)
        return self.profile_worker

    @work(thread=True, exit_on_error=False, group="profiles")
    def _load_profiles(self, refs: list[str]) -> list[Profile]:
        out = []
        for ref in refs:
            p = backend.load_profile(ref)
            out.append(p)
            self.call_from_thread(self._profile_loaded, p)
        return out

    def _profile_loaded(self, p: Profile) -> None:
        if p.ref in self.state.bench:
            self.state.set_profile(p)
            if p.error:
                self.notify(f"{p.ref}: {p.error}", severity="error", timeout=8)
            self.state_changed()

    @work(thread=True, exit_on_error=False, group="jobs")
    def _find_running(self) -> jobs.Job | None:
        """Re-attach to the newest merge still running (a previous session's)."""
        running = jobs.running_jobs(self.jobs_root)
        if running:
            self.call_from_thread(self.attach_job, running[0], True)
        return running[0] if running else None

    # ---- shared behaviour ---------------------------------------------------------------------
    def state_changed(self) -> None:
        """Tell the visible view that the shared state changed."""
        screen = self.screen
        refresh = getattr(screen, "refresh_from_state", None)
        if callable(refresh) and screen.is_mounted:  # not while it is still being composed
            refresh()
        for bar in screen.query("TopBar"):
            bar.refresh()

    def attach_job(self, job: jobs.Job, reattached: bool = False) -> None:
        """Show `job` in the Run view, which follows it."""
        self.state.job = job
        self.state.job_running = job.alive()
        if self.current_mode == "run" and isinstance(self.screen, RunScreen):
            self.screen.refresh_from_state()
        else:
            self.switch_mode("run")  # the Run view attaches when mounted or resumed
        if reattached:
            self.notify(f"Re-attached to the running merge {job.id} → {job.out_dir}")

    def action_view(self, mode: str) -> None:
        self.switch_mode(mode)

    def action_jobs(self) -> None:
        self.push_screen(JobsScreen())

    def action_help(self) -> None:
        self.push_screen(HelpScreen(self.screen))

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        """The command palette: the views, jobs, help, and every key of the view at hand."""
        yield from super().get_system_commands(screen)
        for mode, key, label in VIEWS:
            yield SystemCommand(f"View: {label}", f"switch to {label} (key {key})", partial(self.switch_mode, mode))
        yield SystemCommand("Jobs", "running and finished merges (key j)", self.action_jobs)
        yield SystemCommand("Help", "keys of this view (key ?)", self.action_help)
        # a view's own commands (reachable whatever has focus), then the keys active right now
        titles = set()
        extra = getattr(screen, "palette_commands", None)
        for title, help_text, action in extra() if callable(extra) else []:
            titles.add(title)
            yield SystemCommand(title, help_text, partial(self.run_action, action, screen))
        seen = set()
        for key, active in screen.active_bindings.items():
            b = active.binding
            if not b.description or active.node is self or (b.description, b.action) in seen:
                continue
            seen.add((b.description, b.action))
            view = getattr(screen, "MODE", "") or type(screen).__name__
            title = f"{view.title()}: {b.description}"
            if title not in titles:
                yield SystemCommand(title, f"key {b.key_display or key}", partial(self.run_action, b.action, active.node))
