"""Compare: the bench side by side, differences coloured, findings with fixes, tensor differences.

A vocabulary mismatch (the embedding-rows-differ finding) is fixed from here in one key: u sets
the recipe's output vocabulary to the union of the models' tokens, v offers union, base or one
model's; the finding then drops to info and the merge can run.
"""

from __future__ import annotations

from typing import Any, Iterable

from rich.text import Text
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widget import Widget
from textual.widgets import DataTable, Static

from mergetui import backend
from mergetui.backend import Profile
from mergetui.engine.methods.catalog import METHOD_NAMES
from mergetui.moe_recipe import set_moe_field
from mergetui.recipe import set_field
from mergetui.screens.base import MARKS, ViewScreen
from mergetui.widgets.layout_canvas import short

LEVEL_STYLE = {"error": "bold white on dark_red", "warning": "bold black on yellow", "": ""}


class CompareScreen(ViewScreen):
    """One row per profile property, one column per bench model."""

    MODE = "compare"
    BINDINGS = [
        Binding("m", "cycle_method", "Method"),
        Binding("b", "make_base", "Set base"),
        Binding("x", "remove", "Remove"),
        Binding("r", "reload", "Reload"),
        Binding("u", "vocab_fix('union')", "Vocab: union"),
        Binding("v", "vocab_fix", "Vocab fix…"),
    ]

    def compose_body(self) -> Iterable[Widget]:
        yield Static("", id="compare-title")
        yield DataTable(id="props", cursor_type="column", zebra_stripes=True)
        with Horizontal(id="compare-bottom"):
            with VerticalScroll(id="findings-pane"):
                yield Static("", id="findings")
            with Vertical(id="diff-pane"):
                yield Static("Tensors whose names or shapes differ", id="diff-title", classes="section")
                yield DataTable(id="tensor-diff", cursor_type="row")

    def __init__(self) -> None:
        super().__init__()
        self._shown: tuple = ()

    def on_mount(self) -> None:
        self.refresh_from_state()

    def profiles(self) -> list[Profile]:
        """Loaded profiles of the bench, in bench order."""
        return [self.state.profiles[r] for r in self.state.bench if r in self.state.profiles]

    def refresh_from_state(self) -> None:
        bench = self.state.bench
        method = self.state.method()
        profiles = self.profiles()
        missing = [r for r in bench if r not in self.state.profiles]
        cfg = self.state.config if self.state.kind == "merge" else None
        aligned = cfg is not None and cfg.tokenizer_choice() is not None
        findings = backend.check_profiles(profiles, cfg)
        errors = sum(f.level == "error" for f in findings)
        warnings = sum(f.level == "warning" for f in findings)
        title = Text()
        title.append(f" method: {method}  ", "bold")
        if len(bench) < 2:
            title.append("put two or more models on the bench (Browse, a) to compare them", "dim")
        else:
            title.append(f"{errors} blocking", "bold red" if errors else "green")
            title.append(" · ")
            title.append(f"{warnings} warnings", "bold yellow" if warnings else "green")
        if missing:
            title.append(f"  · loading {len(missing)} profile(s)…", "italic dim")
        self.query_one("#compare-title", Static).update(title)
        # refill only when something shown changed (tables keep their cursor and scroll)
        signature = (tuple(id(p) for p in profiles), method, aligned, tuple(findings))
        if signature == self._shown:
            return
        self._shown = signature
        self._fill_props(profiles, method, aligned)
        self._fill_findings(findings)
        self._fill_diff(profiles)

    def _fill_props(self, profiles: list[Profile], method: str, aligned: bool) -> None:
        table = self.query_one("#props", DataTable)
        cursor = table.cursor_column
        table.clear(columns=True)
        # fixed widths: auto-sizing while rows stream in made the layout depend on timing
        table.add_column("property", key="property", width=18)
        for p in profiles:
            table.add_column(short(p.ref), key=p.ref, width=max(20, len(short(p.ref)) + 2))
        props: list[str] = []
        for p in profiles:
            props += [k for k in p.props if k not in props]
        for prop in props:
            values = [p.props.get(prop, "—") for p in profiles]
            level = backend.property_level(prop, method, values, aligned)
            cells: list[Any] = [Text(prop, "bold red" if level == "error" else "bold yellow" if level == "warning" else "bold")]
            usual = max(values, key=[repr(v) for v in values].count) if values else None
            for v in values:
                text = f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) and v >= 10_000 else str(v)
                if level and v != usual:  # the odd one out gets the mark and the loud colour
                    cells.append(Text(f"{'✖' if level == 'error' else '▲'} {text} ", LEVEL_STYLE[level]))
                else:
                    cells.append(Text(f"  {text}", "red" if level == "error" else "yellow" if level == "warning" else ""))
            table.add_row(*cells, key=prop)
        errored = [p for p in profiles if p.error]
        if errored:
            table.add_row(Text("error", "bold red"), *[Text(p.error[:40], "red") if p.error else "" for p in profiles])
        if profiles:
            table.move_cursor(column=max(1, min(cursor, len(profiles))))

    def _fill_findings(self, findings: list[backend.Finding]) -> None:
        t = Text()
        t.append("Findings\n", "bold underline")
        if not findings:
            t.append("No problems found." if len(self.profiles()) >= 2 else "—", "green")
        for f in findings:
            t.append(*MARKS[f.level])
            t.append(f.message + "\n")
            if f.code == "embedding-rows-differ" and f.level == "error":  # the keys first: the fix text is long
                t.append("  u: tokenizer source union · v: choose union / base / one model\n", "bold")
            if f.fix:
                t.append(f"  fix: {f.fix}\n", "dim")
        self.query_one("#findings", Static).update(t)

    def _fill_diff(self, profiles: list[Profile]) -> None:
        table = self.query_one("#tensor-diff", DataTable)
        table.clear(columns=True)
        good = [p for p in profiles if not p.error]
        diffs = backend.tensor_differences(good)
        table.add_column("tensor", width=min(40, max([6] + [len(n) for n, _ in diffs])))
        for p in good:
            table.add_column(short(p.ref), width=max(12, len(short(p.ref))))
        for name, shapes in diffs[:200]:
            cells = [Text("missing", "red") if s is None else Text(str(list(s)), "bold") for s in shapes]
            table.add_row(name, *cells)
        title = f"Tensors whose names or shapes differ: {len(diffs)}" if len(good) >= 2 else "Tensors whose names or shapes differ"
        self.query_one("#diff-title", Static).update(Text(title, "bold"))

    # ---- actions ---------------------------------------------------------------------------
    def _column_model(self) -> str | None:
        table = self.query_one("#props", DataTable)
        profiles = self.profiles()
        i = table.cursor_column - 1
        return profiles[i].ref if 0 <= i < len(profiles) else None

    def action_cycle_method(self) -> None:
        names = (sorted(self.state.methods) or sorted(METHOD_NAMES)) + ["moe"]
        current = self.state.method()
        nxt = names[(names.index(current) + 1) % len(names)] if current in names else names[0]
        try:
            self.state.set_method(nxt)
        except ValueError as e:
            self.notify_error(str(e))
            return
        self.refresh_from_state()

    def action_make_base(self) -> None:
        ref = self._column_model()
        if ref is None:
            return
        try:
            if self.state.kind == "moe":
                self.state.moe = set_moe_field(self.state.moe_recipe(), "base_model", ref)
            else:
                self.state.config = set_field(self.state.recipe(), "base_model", ref)
        except ValueError as e:
            self.notify_error(str(e))
            return
        self.notify(f"Base model: {ref}")

    def action_remove(self) -> None:
        ref = self._column_model()
        if ref is None:
            return
        self.state.remove_from_bench(ref)
        self.notify(f"Removed {ref} from the bench.")
        self.workbench.state_changed()

    def action_reload(self) -> None:
        for ref in self.state.bench:
            self.state.profiles.pop(ref, None)
        self.workbench.load_profiles(list(self.state.bench))
        self.refresh_from_state()
