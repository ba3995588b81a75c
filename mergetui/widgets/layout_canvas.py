"""Draws a LayoutModel: one strip of layer cells per source, then the output stack.

The selected slice's layers light up in its source strip; the output stack is a bar of
output layers coloured by source, followed by one line per slice. Clicking a slice line
selects it; clicking a source cell moves the selected slice to start there.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.events import Click
from textual.message import Message
from textual.widget import Widget

from mergetui.layout_model import LayoutModel

PALETTE = ("#7aa2f7", "#9ece6a", "#e0af68", "#bb9af7", "#7dcfff", "#f7768e", "#73daca", "#ff9e64")
LABEL_W = 16


def short(ref: str) -> str:
    """The last path component of a model reference."""
    return ref.rstrip("/").rsplit("/", 1)[-1]


class LayoutCanvas(Widget, can_focus=True):
    """The visual frankenmerge editor's picture; keys are bound on the Layout screen."""

    DEFAULT_CSS = """
    LayoutCanvas { height: auto; padding: 0 1; }
    LayoutCanvas:focus { background: $boost; }
    """

    class Edited(Message):
        """The model was changed by the mouse."""

    def __init__(self, model: LayoutModel, **kw: Any) -> None:
        super().__init__(**kw)
        self.model = model
        self._hits: dict[int, tuple[Any, ...]] = {}

    def colour(self, ref: str) -> str:
        """One colour per source model, stable by bench order."""
        names = self.model.model_names()
        i = names.index(ref) if ref in names else len(names)
        return PALETTE[i % len(PALETTE)]

    def render(self) -> Text:
        m = self.model
        width = max(20, (self.size.width or 80) - 2)
        t = Text(no_wrap=True, overflow="ellipsis")
        self._hits = {}
        line = 0

        def nl() -> None:
            nonlocal line
            t.append("\n")
            line += 1

        t.append("Sources", "bold")
        nl()
        if not m.sources:
            t.append("  (no models with known layers on the bench yet)", "dim")
            nl()
        sel = m.selected
        max_layers = max(m.sources.values(), default=1)
        cell = max(1, min(3, (width - LABEL_W - 12) // max(1, max_layers)))
        for letter, (ref, n) in zip("ABCDEFGHIJKLMNOPQRSTUVWXYZ", m.sources.items()):
            colour = self.colour(ref)
            t.append(f"{letter} {short(ref)[:LABEL_W - 3]:<{LABEL_W - 2}}", colour)
            x0 = LABEL_W  # the label above is exactly this wide
            lit = set()
            if sel is not None:
                for s in sel.spans:
                    if s.model == ref:
                        lit.update(range(s.start, s.end))
            for i in range(n):
                ch = ("█" if cell == 1 else "█" * (cell - 1) + " ") if i in lit else ("▪" if cell == 1 else "▪" * (cell - 1) + " ")
                t.append(ch, f"bold {colour}" if i in lit else f"{colour} dim")
            t.append(f" {n} layers", "dim")
            self._hits[line] = ("source", ref, x0, cell)
            nl()
        total = m.output_layers
        t.append(f"Output stack: {total} layers", "bold")
        nl()
        ocell = max(1, min(2, (width - 2) // max(1, total))) if total else 1
        fits = total * ocell <= width - 2
        for bi, b in enumerate(m.blocks):
            ch = "█" * ocell if bi == m.cursor else "▆" * ocell
            n = b.length if fits else max(1, b.length * (width - 2) // max(1, total))
            t.append(ch * n, self.colour(b.model))
        nl()
        for bi, b in enumerate(m.blocks):
            mark = "▶" if bi == m.cursor else " "
            style = "reverse" if bi == m.cursor else ""
            t.append(f"{mark}{bi:>2} ", style)
            spans = " + ".join(f"{short(s.model)} [{s.start}, {s.end})" for s in b.spans)
            t.append("██ ", self.colour(b.model))
            t.append(f"{spans}  ", style)
            t.append(f"{b.length} layers", "dim")
            self._hits[line] = ("block", bi)
            nl()
        if not m.blocks:
            t.append("  (empty: press a to add a slice)", "dim")
        return t

    def on_click(self, event: Click) -> None:
        hit = self._hits.get(event.y)
        if hit is None:
            return
        if hit[0] == "block":
            self.model.select(hit[1])
        else:
            _, ref, x0, cell = hit
            x = event.x - 1 - x0  # padding
            if x >= 0:
                self.model.set_span_start(ref, x // cell)
        self.post_message(self.Edited())
        self.refresh(layout=True)
