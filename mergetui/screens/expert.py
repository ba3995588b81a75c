"""The expert editor: one MoE expert's model, prompts (one a line) and scales, as a dialog."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Footer, Input, Label, Select, TextArea

from mergetui.moe_recipe import prompts_from_text, prompts_text
from mergetui.widgets.layout_canvas import short


class ExpertScreen(ModalScreen["dict[str, Any] | None"]):
    """Edit one expert; ctrl+s applies (the dict put_expert takes), escape cancels."""

    BINDINGS = [Binding("ctrl+s", "apply", "Apply"), Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, models: list[str], expert: dict[str, Any]) -> None:
        super().__init__()
        self.title_text = title
        self.models = list(dict.fromkeys(models + [expert["source_model"]] if expert.get("source_model") else models))
        self.expert = expert

    def compose(self) -> ComposeResult:
        e = self.expert
        with Vertical(classes="dialog expert"):
            yield Label(self.title_text, classes="section")
            yield Select([(short(m), m) for m in self.models], id="expert-model", allow_blank=False,
                         value=e.get("source_model") or self.models[0])
            yield Label("positive prompts: what should be routed here (one a line)", classes="field-label")
            yield TextArea(prompts_text(e.get("positive_prompts")), id="positive", tab_behavior="focus", soft_wrap=True)
            yield Label("negative prompts: what should not (one a line)", classes="field-label")
            yield TextArea(prompts_text(e.get("negative_prompts")), id="negative", tab_behavior="focus", soft_wrap=True)
            with Horizontal(classes="pair"):
                with Vertical():
                    yield Label("noise_scale", classes="field-label")
                    yield Input(_num(e.get("noise_scale")), placeholder="none", id="noise")
                with Vertical():
                    yield Label("residual_scale", classes="field-label")
                    yield Input(_num(e.get("residual_scale")), placeholder="none", id="residual")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#positive", TextArea).focus()

    def action_apply(self) -> None:
        out: dict[str, Any] = {"source_model": self.query_one("#expert-model", Select).value,
                               "positive_prompts": prompts_from_text(self.query_one("#positive", TextArea).text),
                               "negative_prompts": prompts_from_text(self.query_one("#negative", TextArea).text)}
        for key, input_id in (("noise_scale", "#noise"), ("residual_scale", "#residual")):
            field = self.query_one(input_id, Input)
            text = field.value.strip()
            try:
                out[key] = float(text) if text else None
            except ValueError:
                field.add_class("-invalid")
                self.notify(f"{key}: {text!r} is not a number", severity="error")
                return
        self.dismiss(out)

    def action_cancel(self) -> None:
        self.dismiss(None)


def _num(v: Any) -> str:
    return "" if v is None else str(v)
