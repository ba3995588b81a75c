"""Recipe: method, base, parameters, dtypes, tokenizer and output beside the editable YAML.

Both sides write the one MergeConfig in the state: a form edit re-renders the YAML, a valid
YAML edit refreshes the form (an invalid one shows its error under the YAML and changes
nothing). Programmatic updates run under `prevent(...Changed)`, and handlers also compare
against the config before writing, so nothing echoes back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from rich.text import Text
from textual import on
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widget import Widget
from textual.widgets import Input, Label, Select, Static, TextArea

from mergetui.engine.config import MergeConfig, parse_config
from mergetui.engine.errors import ConfigError
from mergetui.recipe import format_value, get_param, parse_value, plain, set_field, set_param
from mergetui.screens.base import ViewScreen
from mergetui.screens.dialogs import PromptScreen
from mergetui.widgets.layout_canvas import short

DTYPE_OPTIONS = [(d, d) for d in ("float32", "bfloat16", "float16")]
FALLBACK_METHODS = ("linear", "slerp", "nuslerp", "task_arithmetic", "ties", "dare_ties", "dare_linear", "breadcrumbs",
                    "breadcrumbs_ties", "della", "della_linear", "model_stock", "passthrough")


class RecipeScreen(ViewScreen):
    """The recipe form and its YAML."""

    MODE = "recipe"
    BINDINGS = [
        Binding("ctrl+s", "save", "Save YAML"),
        Binding("ctrl+o", "open", "Open YAML"),
        Binding("f2", "focus_yaml", "YAML pane"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self._yaml_shown = ""
        self._structure: tuple[Any, ...] = ()
        self._param_inputs: dict[str, tuple[str, str | None]] = {}  # input id -> (param, model)

    def compose_body(self) -> Iterable[Widget]:
        with Horizontal(id="recipe-body"):
            with VerticalScroll(id="recipe-form"):
                yield Label("Method", classes="field-label")
                names = self._method_names(self.state.recipe())
                yield Select([(n, n) for n in names], id="method", allow_blank=False, value=self.state.recipe().merge_method)
                yield Static("", id="method-desc", classes="hint")
                yield Label("Base model", classes="field-label")
                yield Select([], id="base", prompt="(none)")
                with Horizontal(classes="pair"):
                    with Vertical():
                        yield Label("dtype", classes="field-label")
                        yield Select(DTYPE_OPTIONS, id="dtype", prompt="(stored)")
                    with Vertical():
                        yield Label("out_dtype", classes="field-label")
                        yield Select(DTYPE_OPTIONS, id="out_dtype", prompt="(= dtype)")
                yield Label("Tokenizer source", classes="field-label")
                yield Select([], id="tokenizer", prompt="(base model's)")
                yield Label("Output directory", classes="field-label")
                yield Input(id="out-dir")
                yield Static("Parameters", classes="section")
                yield Static("numbers, gradients [0, 0.5, 1], or [{filter: mlp, value: 0.3}, {value: 0.5}]", classes="hint")
                yield Vertical(id="global-params")
                yield Vertical(id="model-params")
            with Vertical(id="yaml-pane"):
                yield TextArea("", id="yaml", soft_wrap=False, show_line_numbers=True, tab_behavior="focus")
                yield Static("", id="yaml-status")

    def on_mount(self) -> None:
        self.refresh_from_state()

    # ---- state -> widgets -------------------------------------------------------------------
    def refresh_from_state(self) -> None:
        cfg = self.state.recipe()
        self._refresh_form(cfg)
        self._show_yaml(cfg)

    def _method_names(self, cfg: MergeConfig) -> list[str]:
        names = sorted(self.state.methods) or list(FALLBACK_METHODS)
        return names if cfg.merge_method in names else names + [cfg.merge_method]

    def _refresh_form(self, cfg: MergeConfig) -> None:
        with self.prevent(Select.Changed, Input.Changed):  # programmatic updates are not user edits
            self._fill_form(cfg)

    def _fill_form(self, cfg: MergeConfig) -> None:
        models = list(dict.fromkeys(self.state.bench + cfg.referenced_models()))
        method = self.query_one("#method", Select)
        names = self._method_names(cfg)
        structure = (tuple(names), tuple(models), cfg.merge_method, tuple(m.model for m in cfg.models or []), bool(cfg.slices),
                     bool(self.state.methods))
        if structure != self._structure:
            self._structure = structure
            method.set_options([(n, n) for n in names])
            self.query_one("#base", Select).set_options([(short(m), m) for m in models])
            self.query_one("#tokenizer", Select).set_options([("base", "base"), ("union", "union")] + [(short(m), m) for m in models])
            self._build_params(cfg)
        self._set_select(method, cfg.merge_method)
        self._set_select(self.query_one("#base", Select), cfg.base_model)
        self._set_select(self.query_one("#dtype", Select), cfg.dtype)
        self._set_select(self.query_one("#out_dtype", Select), cfg.out_dtype)
        self._set_select(self.query_one("#tokenizer", Select), cfg.tokenizer_choice())
        out = self.query_one("#out-dir", Input)
        if out.value != self.state.out_dir:
            out.value = self.state.out_dir
        for input_id, (param, model) in self._param_inputs.items():
            text = format_value(get_param(cfg, param, model))
            for widget in self.query(f"#{input_id}").results(Input):  # absent while being (re)mounted
                if not widget.has_focus and widget.value != text:
                    widget.value = text
        spec = self.state.methods.get(cfg.merge_method)
        desc = spec.description if spec is not None else ("loading the method catalog…" if not self.state.methods else "unknown method")
        self.query_one("#method-desc", Static).update(desc)

    @staticmethod
    def _set_select(select: Select, value: Any) -> None:
        values = {v for _, v in select._options}  # noqa: SLF001 — Select has no public membership test
        target = value if value in values else Select.NULL
        if target is Select.NULL and not select._allow_blank:  # noqa: SLF001
            return
        if select.value != target:
            select.value = target

    def _build_params(self, cfg: MergeConfig) -> None:
        """(Re)create the parameter inputs for the method's parameters."""
        spec = self.state.methods.get(cfg.merge_method)
        gbox = self.query_one("#global-params", Vertical)
        mbox = self.query_one("#model-params", Vertical)
        gbox.remove_children()
        mbox.remove_children()
        self._param_inputs = {}
        if spec is None:
            gbox.mount(Static("(parameters appear once the method catalog has loaded)", classes="hint"))
            return
        per_model = [p for p in spec.params if p.per_model]
        shared = [p for p in spec.params if not p.per_model]
        rows: list[Widget] = []
        for i, p in enumerate(shared + per_model):
            rows.append(self._param_row(cfg, f"gp-{i}", p, None, "global: " if p.per_model else ""))
        gbox.mount_all(rows or [Static(f"{cfg.merge_method} takes no parameters", classes="hint")])
        if not per_model:
            return
        if cfg.slices:
            mbox.mount(Static("Per-source parameters of slices: edit them in the YAML.", classes="hint"))
            return
        widgets: list[Widget] = []
        for mi, m in enumerate(cfg.models or []):
            widgets.append(Static(Text(short(m.model), "bold"), classes="model-title"))
            widgets += [self._param_row(cfg, f"mp-{mi}-{pi}", p, m.model) for pi, p in enumerate(per_model)]
        mbox.mount_all(widgets)

    def _param_row(self, cfg: MergeConfig, input_id: str, p: Any, model: str | None, prefix: str = "") -> Horizontal:
        self._param_inputs[input_id] = (p.name, model)
        default = "required" if p.required else f"default {p.default}"
        value = format_value(get_param(cfg, p.name, model))
        return Horizontal(Label(f"{prefix}{p.name}", classes="param-name"),
                          Input(value, placeholder=default, id=input_id, tooltip=p.help or None), classes="param-row")

    def _show_yaml(self, cfg: MergeConfig) -> None:
        text = cfg.to_yaml()
        area = self.query_one("#yaml", TextArea)
        if area.text != text and parse_ok(area.text) != cfg:
            self._yaml_shown = text
            with self.prevent(TextArea.Changed):
                area.load_text(text)
        self._status(Text("✓ valid mergekit YAML", "green"))

    def _status(self, text: Text) -> None:
        self.query_one("#yaml-status", Static).update(text)

    # ---- widgets -> state -------------------------------------------------------------------
    def _commit(self, cfg: MergeConfig) -> None:
        self.state.config = cfg
        self._refresh_form(cfg)
        self._show_yaml(cfg)

    @on(Select.Changed)
    def _select_changed(self, event: Select.Changed) -> None:
        key = {"method": "merge_method", "base": "base_model", "dtype": "dtype", "out_dtype": "out_dtype",
               "tokenizer": "tokenizer_source"}.get(event.select.id or "")
        if key is None:
            return
        cfg = self.state.recipe()
        value = None if event.value is Select.NULL else event.value
        current = cfg.tokenizer_choice() if key == "tokenizer_source" else getattr(cfg, key)
        if value == current:
            return
        try:
            self._commit(set_field(cfg, key, value))
        except ValueError as e:
            self.notify_error(_first_line(e))

    @on(Input.Changed)
    def _input_changed(self, event: Input.Changed) -> None:
        input_id = event.input.id or ""
        if input_id == "out-dir":
            self.state.out_dir = event.value.strip() or "merged"
            return
        if input_id not in self._param_inputs:
            return
        param, model = self._param_inputs[input_id]
        cfg = self.state.recipe()
        try:
            value = parse_value(event.value)
            if value == plain(get_param(cfg, param, model)):
                event.input.remove_class("-invalid")
                return
            new = set_param(cfg, param, value, model)
        except ValueError as e:
            event.input.add_class("-invalid")
            self._status(Text(f"{param}: {_first_line(e)}", "red"))
            return
        event.input.remove_class("-invalid")
        self.state.config = new
        self._show_yaml(new)

    @on(TextArea.Changed, "#yaml")
    def _yaml_changed(self, event: TextArea.Changed) -> None:
        text = event.text_area.text
        if text == self._yaml_shown:
            return  # our own rendering of the config
        try:
            cfg = parse_config(text, "YAML")
        except ConfigError as e:
            self._status(Text(f"✖ {e.message}" + (f"\n  fix: {e.fix}" if e.fix else ""), "red"))
            return
        self._yaml_shown = text
        self.state.config = cfg
        added = [r for r in cfg.referenced_models() if r not in self.state.bench]
        for ref in added:
            self.state.add_to_bench(ref)
        if added:
            self.workbench.load_profiles(added)
        self._refresh_form(cfg)
        self._status(Text("✓ valid mergekit YAML", "green"))

    # ---- actions -----------------------------------------------------------------------------
    def action_focus_yaml(self) -> None:
        self.query_one("#yaml", TextArea).focus()

    def action_save(self) -> None:
        def done(path: str | None) -> None:
            if not path:
                return
            try:
                saved = self.state.save_config(path)
            except OSError as e:
                self.notify_error(f"Could not save {path}: {e.strerror}")
                return
            self.notify(f"Saved {saved}.")
        self.app.push_screen(PromptScreen("Save the recipe as mergekit YAML:", self.state.config_path), done)

    def action_open(self) -> None:
        def done(path: str | None) -> None:
            if not path:
                return
            if not Path(path).exists():
                self.notify_error(f"{path}: no such file")
                return
            try:
                self.state.open_config(path)
            except ConfigError as e:
                self.notify_error(str(e))
                return
            self.workbench.load_profiles(list(self.state.bench))
            self.refresh_from_state()
            self.notify(f"Opened {path}.")
        self.app.push_screen(PromptScreen("Open a mergekit YAML recipe:", self.state.config_path), done)


def parse_ok(text: str) -> MergeConfig | None:
    """The config `text` describes, or None when it does not parse."""
    try:
        return parse_config(text)
    except ConfigError:
        return None


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[-1] if len(lines) > 1 and "validation error" in lines[0] else (lines[0] if lines else type(e).__name__)
