"""The one-line bar on top of every view: the views with their keys, and the bench."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.events import Click
from textual.widget import Widget

VIEWS = (("browse", "1", "Browse"), ("compare", "2", "Compare"), ("layout", "3", "Layout"), ("recipe", "4", "Recipe"), ("run", "5", "Run"))


class TopBar(Widget):
    """Shows which view is active; clicking a view's name switches to it."""

    DEFAULT_CSS = """
    TopBar { height: 1; background: $panel; }
    """

    def __init__(self, mode: str, **kw: Any) -> None:
        super().__init__(**kw)
        self.mode = mode
        self._spans: list[tuple[int, int, str]] = []

    def render(self) -> Text:
        app: Any = self.app
        t = Text(no_wrap=True, overflow="ellipsis")
        t.append(" mergetui ", "bold reverse")
        self._spans = []
        for mode, key, label in VIEWS:
            start = t.cell_len
            t.append(f" {key} {label} ", "bold black on #e0af68" if mode == self.mode else "")
            self._spans.append((start, t.cell_len, mode))
        bench = app.state.bench
        names = ", ".join(b.rstrip("/").rsplit("/", 1)[-1] for b in bench) or "empty (a in Browse adds)"
        t.append(f"  bench[{len(bench)}]: ", "dim")
        t.append(names)
        return t

    def on_click(self, event: Click) -> None:
        for start, end, mode in self._spans:
            if start <= event.x < end:
                self.app.switch_mode(mode)
