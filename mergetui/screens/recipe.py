"""Recipe: method, base, parameters, dtypes, vocabulary and output beside the editable YAML.

Both sides write the one recipe in the state: a form edit re-renders the YAML, a valid YAML
edit refreshes the form (an invalid one shows its error under the YAML and changes nothing).
The method "moe" swaps the merge fields for the MoE ones (mergekit-moe: base, gate mode,
experts as rows with their prompts); a YAML that lists experts is a MoE recipe. Programmatic
updates run under `prevent(...Changed)`, and handlers also compare against the config before
writing, so nothing echoes back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from rich.text import Text
from textual import on
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widget import Widget
from textual.widgets import DataTable, Input, Label, Select, Static, TextArea

from mergetui.engine.config import MergeConfig
from mergetui.engine.errors import ConfigError
from mergetui.engine.methods.catalog import METHOD_NAMES
from mergetui.engine.moe.config import MoEConfig
from mergetui.moe_recipe import (
    ARCHITECTURES,
    GATE_MODES,
    Recipe,
    expert_rows,
    moe_problem,
    moe_warnings,
    parse_recipe,
    put_expert,
    remove_expert,
    set_moe_field,
    toggle_shared,
)
from mergetui.recipe import (
    CHAT_TEMPLATES,
    chat_template_choice,
    format_value,
    get_param,
    parse_value,
    plain,
    set_field,
    set_param,
    set_tokenizer,
    token_overrides,
    tokenizer_pad,
)
from mergetui.screens.base import ViewScreen
from mergetui.screens.dialogs import PromptScreen
from mergetui.screens.expert import ExpertScreen
from mergetui.widgets.layout_canvas import short

DTYPE_OPTIONS = [(d, d) for d in ("float32", "bfloat16", "float16")]
MOE_LABEL = "moe (Mixture of Experts)"
MOE_DESC = ("Mixture of Experts (mergekit-moe YAML): the base model's attention and embeddings, each expert's MLP, "
            "and a router per layer set from the experts' prompts.")
# form field id -> the merge / MoE setting it edits
MERGE_SELECTS = {"base": "base_model", "dtype": "dtype", "out_dtype": "out_dtype", "chat-template": "chat_template"}
MOE_SELECTS = {"moe-base": "base_model", "gate-mode": "gate_mode", "moe-dtype": "dtype", "moe-arch": "architecture"}


class ExpertTable(DataTable):
    """The MoE's experts, one a row; its keys edit the recipe through the Recipe view."""

    BINDINGS = [
        Binding("e", "screen.edit_expert", "Edit expert"),
        Binding("a,insert", "screen.add_expert", "Add expert"),
        Binding("x,delete", "screen.remove_expert", "Remove expert"),
        Binding("s", "screen.toggle_shared", "Shared ↔ routed"),
    ]


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
        self._rows: list[tuple[str, int]] = []  # expert table row -> (group, index)

    def compose_body(self) -> Iterable[Widget]:
        with Horizontal(id="recipe-body"):
            with VerticalScroll(id="recipe-form"):
                yield Label("Method", classes="field-label")
                names = self._method_names(self.state.recipe())
                yield Select(self._method_options(names), id="method", allow_blank=False, value=self.state.method())
                yield Static("", id="method-desc", classes="hint")
                with Vertical(id="merge-fields"):
                    yield Label("Base model", classes="field-label")
                    yield Select([], id="base", prompt="(none)")
                    with Horizontal(classes="pair"):
                        with Vertical():
                            yield Label("dtype", classes="field-label")
                            yield Select(DTYPE_OPTIONS, id="dtype", prompt="(stored)")
                        with Vertical():
                            yield Label("out_dtype", classes="field-label")
                            yield Select(DTYPE_OPTIONS, id="out_dtype", prompt="(= dtype)")
                    yield Static("Vocabulary", classes="section")
                    with Horizontal(classes="pair"):
                        with Vertical():
                            yield Label("Tokenizer source", classes="field-label")
                            yield Select([], id="tokenizer", prompt="(none)")
                        with Vertical():
                            yield Label("pad_to_multiple_of", classes="field-label")
                            yield Input(id="pad", placeholder="(no padding)")
                    yield Label("Chat template", classes="field-label")
                    yield Select([], id="chat-template", prompt="(keep the base's)")
                    yield Static("", id="tokens-summary", classes="hint")
                with Vertical(id="moe-fields"):
                    yield Label("Base model (attention, embeddings)", classes="field-label")
                    yield Select([], id="moe-base", prompt="(choose)")
                    with Horizontal(classes="pair"):
                        with Vertical(classes="wide"):
                            yield Label("gate_mode", classes="field-label")
                            yield Select([(g, g) for g in GATE_MODES], id="gate-mode", allow_blank=False)
                        with Vertical(classes="narrow"):
                            yield Label("per token", classes="field-label")
                            yield Input(id="ept", placeholder="2", tooltip="experts_per_token: experts each token is routed to")
                    with Horizontal(classes="pair"):
                        with Vertical():
                            yield Label("dtype", classes="field-label")
                            yield Select(DTYPE_OPTIONS, id="moe-dtype", prompt="(base's)")
                        with Vertical():
                            yield Label("architecture", classes="field-label")
                            yield Select([(a, a) for a in ARCHITECTURES], id="moe-arch", prompt="(auto)")
                    yield Static("Experts", classes="section")
                    yield Static("e/enter edits prompts · a adds · x removes · s shared (s0; qwen)", classes="hint")
                    yield ExpertTable(id="experts", cursor_type="row")
                    yield Static("", id="moe-problems")
                yield Label("Output directory", classes="field-label")
                yield Input(id="out-dir")
                with Vertical(id="merge-params"):
                    yield Static("Parameters", classes="section")
                    yield Static("numbers, gradients [0, 0.5, 1], or [{filter: mlp, value: 0.3}, {value: 0.5}]", classes="hint")
                    yield Vertical(id="global-params")
                    yield Vertical(id="model-params")
            with Vertical(id="yaml-pane"):
                yield TextArea("", id="yaml", soft_wrap=False, show_line_numbers=True, tab_behavior="focus")
                yield Static("", id="yaml-status")

    def on_mount(self) -> None:
        table = self.query_one("#experts", DataTable)
        table.add_column("#", width=2)  # s0: the shared expert
        table.add_column("expert", width=12)
        table.add_column("prompts")
        self.refresh_from_state()

    # ---- state -> widgets -------------------------------------------------------------------
    def refresh_from_state(self) -> None:
        moe = self.state.kind == "moe"
        self._refresh_form(self.state.recipe())
        for gid in ("#merge-fields", "#merge-params"):
            self.query_one(gid).display = not moe
        self.query_one("#moe-fields").display = moe
        self._show_yaml(self.state.active())

    def _method_names(self, cfg: MergeConfig) -> list[str]:
        names = sorted(self.state.methods) or sorted(METHOD_NAMES)
        return names if cfg.merge_method in names else names + [cfg.merge_method]

    @staticmethod
    def _method_options(names: list[str]) -> list[tuple[str, str]]:
        return [(n, n) for n in names] + [(MOE_LABEL, "moe")]

    def _refresh_form(self, cfg: MergeConfig) -> None:
        with self.prevent(Select.Changed, Input.Changed):  # programmatic updates are not user edits
            self._fill_form(cfg)
            if self.state.kind == "moe":
                self._fill_moe(self.state.moe_recipe())

    def _models(self, *extra: list[str]) -> list[str]:
        refs = list(self.state.bench)
        for more in extra:
            refs += more
        return list(dict.fromkeys(refs))

    def _fill_form(self, cfg: MergeConfig) -> None:
        models = self._models(cfg.referenced_models())
        method = self.query_one("#method", Select)
        names = self._method_names(cfg)
        template = chat_template_choice(cfg)
        structure = (tuple(names), tuple(models), cfg.merge_method, tuple(m.model for m in cfg.models or []), bool(cfg.slices),
                     bool(self.state.methods), template == "literal")
        if structure != self._structure:
            self._structure = structure
            method.set_options(self._method_options(names))
            self.query_one("#base", Select).set_options([(short(m), m) for m in models])
            self.query_one("#tokenizer", Select).set_options([("union", "union"), ("base", "base")] + [(short(m), m) for m in models])
            templates = [("auto (most inputs' own)", "auto")] + [(t, t) for t in CHAT_TEMPLATES[1:]]
            self.query_one("#chat-template", Select).set_options(templates + ([("literal (edit in YAML)", "literal")] if template == "literal" else []))
            self._build_params(cfg)
        self._set_select(method, self.state.method())
        self._set_select(self.query_one("#base", Select), cfg.base_model)
        self._set_select(self.query_one("#dtype", Select), cfg.dtype)
        self._set_select(self.query_one("#out_dtype", Select), cfg.out_dtype)
        self._set_select(self.query_one("#tokenizer", Select), cfg.tokenizer_choice())
        self._set_select(self.query_one("#chat-template", Select), template)
        self._set_input(self.query_one("#pad", Input), format_value(tokenizer_pad(cfg)))
        self._set_input(self.query_one("#out-dir", Input), self.state.out_dir)
        self.query_one("#tokens-summary", Static).update(self._tokens_text(cfg))
        for input_id, (param, model) in self._param_inputs.items():
            text = format_value(get_param(cfg, param, model))
            for widget in self.query(f"#{input_id}").results(Input):  # absent while being (re)mounted
                self._set_input(widget, text)
        if self.state.kind == "moe":
            desc = MOE_DESC
        else:
            spec = self.state.methods.get(cfg.merge_method)
            desc = spec.description if spec is not None else ("loading the method catalog…" if not self.state.methods else "unknown method")
        self.query_one("#method-desc", Static).update(desc)

    @staticmethod
    def _tokens_text(cfg: MergeConfig) -> Text:
        tokens = token_overrides(cfg)
        if cfg.tokenizer_choice() is None:
            return Text("(none): one shared vocabulary needed · token overrides: YAML tokenizer.tokens")
        if not tokens:
            return Text("token overrides: none · add them under tokenizer.tokens in the YAML")
        listed = ", ".join(list(tokens)[:4]) + (" …" if len(tokens) > 4 else "")
        return Text(f"token overrides: {len(tokens)} ({listed}) · edit them in the YAML")

    def _fill_moe(self, cfg: MoEConfig) -> None:
        models = self._models(cfg.referenced_models())
        base = self.query_one("#moe-base", Select)
        if [v for _, v in base._options if v is not Select.NULL] != models:  # noqa: SLF001
            base.set_options([(short(m), m) for m in models])
        self._set_select(base, cfg.base_model)
        self._set_select(self.query_one("#gate-mode", Select), cfg.gate_mode)
        self._set_select(self.query_one("#moe-dtype", Select), cfg.dtype)
        self._set_select(self.query_one("#moe-arch", Select), cfg.architecture)
        self._set_input(self.query_one("#ept", Input), str(cfg.experts_per_token))
        table = self.query_one("#experts", DataTable)
        row = table.cursor_row
        table.clear()
        self._rows = []
        for group, i, e in expert_rows(cfg):
            self._rows.append((group, i))
            pos, neg = e.positive_prompts or [], e.negative_prompts or []
            prompts = Text(f"+{len(pos)} −{len(neg)} ", "bold" if pos else "dim")
            prompts.append(pos[0] if pos else "(no prompts)", "" if pos else "dim italic")
            table.add_row(str(i) if group == "experts" else f"s{i}", short(e.source_model), prompts)
        if self._rows:
            table.move_cursor(row=max(0, min(row, len(self._rows) - 1)))
        problem = moe_problem(cfg)
        t = Text()
        if problem:
            t.append("✖ " + problem, "red")
        else:  # doubts only once nothing blocks: identical empty prompts are part of the problem
            for w in moe_warnings(cfg):
                t.append("▲ " + w + "\n", "yellow")
            t.append("✓ ready for mergetui moe", "green")
        self.query_one("#moe-problems", Static).update(t)

    @staticmethod
    def _set_input(widget: Input, text: str) -> None:
        if not widget.has_focus and widget.value != text:  # never under the user's cursor
            widget.value = text

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

    def _show_yaml(self, cfg: Recipe) -> None:
        text = cfg.to_yaml()
        area = self.query_one("#yaml", TextArea)
        if area.text != text and parse_ok(area.text) != cfg:
            self._yaml_shown = text
            with self.prevent(TextArea.Changed):
                area.load_text(text)
        self._yaml_ok(cfg)

    def _yaml_ok(self, cfg: Recipe) -> None:
        if isinstance(cfg, MoEConfig):
            problem = moe_problem(cfg)
            if problem:
                self._status(Text(f"▲ mergekit-moe YAML, not ready: {problem}", "yellow"))
                return
            self._status(Text("✓ valid mergekit-moe YAML", "green"))
        else:
            self._status(Text("✓ valid mergekit YAML", "green"))

    def _status(self, text: Text) -> None:
        self.query_one("#yaml-status", Static).update(text)

    # ---- widgets -> state -------------------------------------------------------------------
    def _commit(self, cfg: Recipe) -> None:
        self.state.set_recipe(cfg)
        self.refresh_from_state()

    @on(Select.Changed)
    def _select_changed(self, event: Select.Changed) -> None:
        sid = event.select.id or ""
        if event.value != event.select.value:
            return  # a stale event (the initial value, posted after a refresh had set the real one)
        value = None if event.value is Select.NULL else event.value
        try:
            if sid == "method":
                if value is not None and value != self.state.method():
                    self.state.set_method(str(value))
                    self.refresh_from_state()
                return
            cfg = self.state.recipe()
            if sid == "tokenizer":
                if value != cfg.tokenizer_choice():
                    self._commit(set_tokenizer(cfg, source=value))
            elif sid == "chat-template":
                if value != chat_template_choice(cfg) and value != "literal":
                    self._commit(set_field(cfg, "chat_template", value))
            elif sid in MERGE_SELECTS:
                if value != getattr(cfg, MERGE_SELECTS[sid]):
                    self._commit(set_field(cfg, MERGE_SELECTS[sid], value))
            elif sid in MOE_SELECTS and self.state.kind == "moe":
                moe = self.state.moe_recipe()
                if value != getattr(moe, MOE_SELECTS[sid]):
                    self._commit(set_moe_field(moe, MOE_SELECTS[sid], value))
        except ValueError as e:
            self.notify_error(_first_line(e))

    @on(Input.Changed)
    def _input_changed(self, event: Input.Changed) -> None:
        input_id = event.input.id or ""
        if input_id == "out-dir":
            self.state.out_dir = event.value.strip() or "merged"
            return
        if input_id in ("pad", "ept"):
            self._number_changed(event.input, input_id)
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

    def _number_changed(self, field: Input, input_id: str) -> None:
        """pad_to_multiple_of or experts_per_token typed: a whole number, or empty to unset."""
        text = field.value.strip()
        name = "pad_to_multiple_of" if input_id == "pad" else "experts_per_token"
        try:
            value = int(text) if text else None
            if input_id == "pad":
                cfg = self.state.recipe()
                new: Recipe = cfg if value == tokenizer_pad(cfg) else set_tokenizer(cfg, pad=value)
            else:
                moe = self.state.moe_recipe()
                new = moe if value == moe.experts_per_token else set_moe_field(moe, "experts_per_token", value)
        except ValueError as e:
            field.add_class("-invalid")
            self._status(Text(f"{name}: {_first_line(e) if text.lstrip('-').isdigit() else 'a whole number, or empty'}", "red"))
            return
        field.remove_class("-invalid")
        if new is not self.state.active():
            self._commit(new)

    @on(TextArea.Changed, "#yaml")
    def _yaml_changed(self, event: TextArea.Changed) -> None:
        text = event.text_area.text
        if text == self._yaml_shown:
            return  # our own rendering of the config
        try:
            cfg = parse_recipe(text, "YAML")
        except ConfigError as e:
            self._status(Text(f"✖ {e.message}" + (f"\n  fix: {e.fix}" if e.fix else ""), "red"))
            return
        self._yaml_shown = text
        self.state.set_recipe(cfg)
        added = [r for r in cfg.referenced_models() if r not in self.state.bench]
        for ref in added:
            self.state.add_to_bench(ref)
        if added:
            self.workbench.load_profiles(added)
        self._refresh_form(self.state.recipe())
        moe = self.state.kind == "moe"
        for gid in ("#merge-fields", "#merge-params"):
            self.query_one(gid).display = not moe
        self.query_one("#moe-fields").display = moe
        self._yaml_ok(cfg)

    # ---- MoE experts -------------------------------------------------------------------------
    def _expert_at_cursor(self) -> tuple[str, int] | None:
        row = self.query_one("#experts", DataTable).cursor_row
        return self._rows[row] if 0 <= row < len(self._rows) else None

    def _moe_only(self) -> bool:
        if self.state.kind != "moe":
            self.notify("Experts belong to a MoE recipe: choose the method moe first.", severity="warning")
            return False
        return True

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id == "experts":
            self.action_edit_expert()

    def action_edit_expert(self) -> None:
        if not self._moe_only():
            return
        at = self._expert_at_cursor()
        if at is None:
            self.action_add_expert()
            return
        group, i = at
        expert = (getattr(self.state.moe_recipe(), group) or [])[i]
        title = f"{'Expert' if group == 'experts' else 'Shared expert'} {i}: {short(expert.source_model)}"
        self._edit_expert(title, group, i, expert.model_dump(exclude_none=True))

    def action_add_expert(self) -> None:
        if not self._moe_only():
            return
        cfg = self.state.moe_recipe()
        used = {e.source_model for _, _, e in expert_rows(cfg)}
        models = self._models(cfg.referenced_models())
        model = next((m for m in models if m not in used), models[0] if models else cfg.base_model)
        self._edit_expert(f"New expert {len(cfg.experts)}", "experts", None, {"source_model": model})

    def _edit_expert(self, title: str, group: str, index: int | None, expert: dict[str, Any]) -> None:
        def done(result: dict[str, Any] | None) -> None:
            if result is None:
                return
            try:
                self._commit(put_expert(self.state.moe_recipe(), group, index, result))
            except ValueError as e:
                self.notify_error(_first_line(e))
        models = self._models(self.state.moe_recipe().referenced_models())
        self.app.push_screen(ExpertScreen(title, models, expert), done)

    def action_remove_expert(self) -> None:
        at = self._expert_at_cursor() if self._moe_only() else None
        if at is None:
            return
        try:
            self._commit(remove_expert(self.state.moe_recipe(), *at))
        except ValueError as e:
            self.notify_error(_first_line(e))

    def action_toggle_shared(self) -> None:
        at = self._expert_at_cursor() if self._moe_only() else None
        if at is None:
            return
        try:
            cfg, group, index = toggle_shared(self.state.moe_recipe(), *at)
        except ValueError as e:
            self.notify_error(_first_line(e))
            return
        self._commit(cfg)
        self.query_one("#experts", DataTable).move_cursor(row=self._rows.index((group, index)))

    def palette_commands(self) -> list[tuple[str, str, str]]:
        """(title, help, action) the command palette offers whatever has focus: the expert actions."""
        if self.state.kind != "moe":
            return []
        return [("Recipe: Edit expert", "the expert under the table's cursor (e / enter)", "edit_expert"),
                ("Recipe: Add expert", "a new expert row (a)", "add_expert"),
                ("Recipe: Remove expert", "the expert under the table's cursor (x)", "remove_expert"),
                ("Recipe: Shared ↔ routed", "make the expert a shared one, or routed again (s)", "toggle_shared")]

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
            self.notify(f"Saved {saved}{' (mergekit-moe YAML)' if self.state.kind == 'moe' else ''}.")
        what = "mergekit-moe" if self.state.kind == "moe" else "mergekit"
        self.app.push_screen(PromptScreen(f"Save the recipe as {what} YAML:", self.state.config_path), done)

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
        self.app.push_screen(PromptScreen("Open a mergekit (or mergekit-moe) YAML recipe:", self.state.config_path), done)


def parse_ok(text: str) -> Recipe | None:
    """The recipe `text` describes, or None when it does not parse."""
    try:
        return parse_recipe(text)
    except ConfigError:
        return None


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[-1] if len(lines) > 1 and "validation error" in lines[0] else (lines[0] if lines else type(e).__name__)
