"""`?`: the keys of the view at hand and of the whole workbench."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Markdown

INTRO = """\
# mergetui keys

Views: **1** Browse · **2** Compare · **3** Layout · **4** Recipe · **5** Run (F1–F5 work inside text fields too) · **j** jobs ·
**ctrl+p** command palette (every action) · **?** this help · **ctrl+q** quit.
Tab / shift+tab move between panes; escape leaves a dialog.
"""


def keys_markdown(screen: Screen) -> str:
    """The active bindings of `screen` as a Markdown table."""
    rows = []
    seen = set()
    for key, active in screen.active_bindings.items():
        b = active.binding
        if not b.description or (b.description, b.action) in seen:
            continue
        seen.add((b.description, b.action))
        rows.append(f"| `{b.key_display or key}` | {b.description} |")
    title = getattr(screen, "MODE", "") or type(screen).__name__
    return INTRO + f"\n## {title.title()}\n\n| key | action |\n|---|---|\n" + "\n".join(rows) + "\n"


class HelpScreen(ModalScreen[None]):
    """Help for the screen beneath."""

    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "Close")]

    def __init__(self, under: Screen) -> None:
        super().__init__()
        self.under = under

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog help"):
            yield Markdown(keys_markdown(self.under))

    async def action_dismiss(self, result: None = None) -> None:
        self.dismiss(None)
