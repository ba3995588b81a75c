"""What every view shares: the top bar, its body, the gauges and the footer."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Footer

from mergetui.widgets.gauges import Gauges
from mergetui.widgets.topbar import TopBar

if TYPE_CHECKING:
    from mergetui.app import MergeTUI
    from mergetui.state import WorkbenchState


# how a finding's severity is marked wherever findings are listed
MARKS = {"error": ("✖ ", "bold red"), "warning": ("▲ ", "bold yellow"), "info": ("· ", "dim")}


class ViewScreen(Screen):
    """A workbench view (an App mode); subclasses give MODE and compose_body()."""

    MODE = ""
    GAUGES_DETAILED = False

    @property
    def workbench(self) -> "MergeTUI":
        """The app, typed."""
        return self.app  # type: ignore[return-value]

    @property
    def state(self) -> "WorkbenchState":
        """The shared workbench state."""
        return self.workbench.state

    def compose(self) -> ComposeResult:
        yield TopBar(self.MODE)
        yield from self.compose_body()
        if not self.GAUGES_DETAILED:
            yield Gauges(interval=self.workbench.gauge_interval)
        yield Footer()

    def compose_body(self) -> Iterable[Widget]:
        """The view's own widgets."""
        return ()

    def on_screen_resume(self) -> None:
        self.query_one(TopBar).refresh()
        self.refresh_from_state()

    def refresh_from_state(self) -> None:
        """Redraw from the shared state (called when shown and when the state changes)."""

    def action_vocab_fix(self, source: str = "") -> None:
        """The embedding-rows fix: set the recipe's output vocabulary (`tokenizer: {source: ...}`).

        With `source` it is applied at once; without, a dialog offers union, base and each model.
        """
        from mergetui.recipe import set_tokenizer, vocab_fix_choices
        from mergetui.screens.dialogs import ChoiceScreen

        if self.state.kind == "moe":
            self.notify("A MoE keeps its base model's vocabulary: there is nothing to align.", severity="warning")
            return

        def apply(choice: str | None) -> None:
            if not choice:
                return
            try:
                self.state.config = set_tokenizer(self.state.recipe(), source=choice)
            except ValueError as e:
                self.notify_error(str(e))
                return
            self.notify(f"Recipe: tokenizer source {choice}: embedding rows are aligned by token and vocab_size follows.")
            self.workbench.state_changed()

        if source:
            apply(source)
            return
        choices = vocab_fix_choices(self.state.recipe(), self.state.bench)
        self.app.push_screen(ChoiceScreen("Output vocabulary (tokenizer source) of the merge:", choices), apply)

    def notify_error(self, message: str, **kw: Any) -> None:
        """An error as a notification (never a traceback)."""
        self.notify(message, severity="error", timeout=8, **kw)
