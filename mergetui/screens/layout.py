"""Layout: the visual frankenmerge editor over the LayoutModel (keys first, mouse too)."""

from __future__ import annotations

from typing import Iterable

from rich.text import Text
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widget import Widget
from textual.widgets import Static

from mergetui.screens.base import ViewScreen
from mergetui.screens.dialogs import PromptScreen
from mergetui.widgets.gauges import human
from mergetui.widgets.layout_canvas import LayoutCanvas


class LayoutScreen(ViewScreen):
    """Source strips, the output stack, inline validation and a live summary."""

    MODE = "layout"
    # arrows are priority bindings: the scroll container around the canvas would take them
    BINDINGS = [
        Binding("a", "edit('add_block')", "Add slice"),
        Binding("s", "edit('cycle_source', 1)", "Source"),
        Binding("S", "edit('cycle_source', -1)", "Prev source", show=False),
        Binding("up", "select(-1)", "Select up", show=False, priority=True),
        Binding("down", "select(1)", "Select down", show=False, priority=True),
        Binding("left", "edit('move', -1)", "Move ←", show=False, priority=True),
        Binding("right", "edit('move', 1)", "Move →", show=False, priority=True),
        Binding("plus,equals_sign", "edit('resize', 1)", "Grow", show=False),
        Binding("minus", "edit('resize', -1)", "Shrink", show=False),
        Binding("left_square_bracket", "edit('resize', 1, 'start')", "Grow start", show=False),
        Binding("right_square_bracket", "edit('resize', -1, 'start')", "Shrink start", show=False),
        Binding("shift+up", "edit('reorder', -1)", "Reorder up", show=False, priority=True),
        Binding("shift+down", "edit('reorder', 1)", "Reorder down", show=False, priority=True),
        Binding("d", "edit('duplicate')", "Duplicate"),
        Binding("delete,x", "edit('delete')", "Delete"),
        Binding("m", "edit('add_span')", "Combine", show=False),
        Binding("M", "edit('remove_span')", "Uncombine", show=False),
        Binding("u", "undo", "Undo"),
        Binding("U,ctrl+y", "redo", "Redo"),
        Binding("ctrl+s", "save", "Save YAML"),
    ]

    def compose_body(self) -> Iterable[Widget]:
        with VerticalScroll(id="layout-scroll"):
            yield LayoutCanvas(self.state.layout, id="canvas")
        yield Static("", id="layout-issues")
        yield Static("", id="layout-summary")

    def on_mount(self) -> None:
        self.query_one(LayoutCanvas).focus()
        self.refresh_from_state()

    def refresh_from_state(self) -> None:
        cfg = self.state.config
        layout = self.state.layout
        if cfg is not None and cfg.slices and not layout.same_as(cfg.slices):
            layout.load_slices(cfg.slices)  # the YAML changed the slices: show them
        self.state.sync_layout_sources()
        self._redraw()

    def _redraw(self) -> None:
        layout = self.state.layout
        self.query_one(LayoutCanvas).refresh(layout=True)
        issues = layout.validate()
        missing = [r for r in self.state.bench if r not in layout.sources]
        t = Text()
        for i in issues:
            t.append("✖ " if i.level == "error" else "▲ ", "bold red" if i.level == "error" else "bold yellow")
            t.append(i.message + "\n")
        if missing:
            t.append(f"(waiting for the profiles of {len(missing)} bench model(s))\n", "dim italic")
        if not issues:
            t.append("✓ valid — applied to the recipe (passthrough for single-source slices)", "green")
        self.query_one("#layout-issues", Static).update(t)
        layer_params = {r: p.layer_params for r, p in self.state.profiles.items()}
        first = layout.blocks[0].model if layout.blocks else None
        other = self.state.profiles[first].other_params if first in self.state.profiles else 0
        s = layout.summary(layer_params, other, bytes_per_param=4 if (self.state.config and self.state.config.dtype in ("float32", "fp32")) else 2)
        summary = Text()
        summary.append(" output ", "bold reverse")
        summary.append(f" {s['layers']} layers · {s['parameters']:,} parameters · {human(s['bytes'])}  ")
        summary.append("undo u · redo U · keys: ? ", "dim")
        self.query_one("#layout-summary", Static).update(summary)

    def _apply(self) -> None:
        """Write a valid layout into the recipe (an invalid one waits until it is fixed)."""
        layout = self.state.layout
        if layout.blocks and not layout.validate():
            try:
                self.state.set_recipe(layout.to_config(self.state.config))  # a layout is a merge recipe
            except ValueError as e:
                self.notify_error(str(e))
        self._redraw()

    # ---- actions ---------------------------------------------------------------------------
    def action_edit(self, op: str, *args: object) -> None:
        if not self.state.layout.sources:
            self.notify("No models with known layers yet: add models to the bench in Browse.", severity="warning")
            return
        getattr(self.state.layout, op)(*args)
        self._apply()

    def action_select(self, step: int) -> None:
        layout = self.state.layout
        layout.select(layout.cursor + step)
        self._redraw()

    def action_undo(self) -> None:
        if not self.state.layout.undo():
            self.notify("Nothing to undo.")
        self._apply()

    def action_redo(self) -> None:
        if not self.state.layout.redo():
            self.notify("Nothing to redo.")
        self._apply()

    def on_layout_canvas_edited(self, event: LayoutCanvas.Edited) -> None:
        self._apply()

    def action_save(self) -> None:
        layout = self.state.layout
        errors = [i for i in layout.validate() if i.level == "error"]
        if errors:
            self.notify_error(f"Fix the layout first: {errors[0].message}")
            return

        def done(path: str | None) -> None:
            if not path:
                return
            try:
                self.state.set_recipe(layout.to_config(self.state.config))
                saved = self.state.save_config(path)
            except (OSError, ValueError) as e:
                self.notify_error(f"Could not save: {e}")
                return
            self.notify(f"Saved {saved} ({layout.output_layers} layers).")

        self.app.push_screen(PromptScreen("Save the recipe as mergekit YAML:", self.state.config_path), done)
