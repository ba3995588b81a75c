"""A check's report: profiles, findings and (for a config) the resource estimate; as JSON or tables."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from mergetui.inspect.estimate import Estimate, human_bytes
from mergetui.inspect.findings import ERROR, INFO, WARNING, Finding
from mergetui.inspect.profile import Profile

if TYPE_CHECKING:
    from rich.console import Console

REPORT_VERSION = 1
_STYLE = {ERROR: ("✗", "bold red"), WARNING: ("!", "bold yellow"), INFO: ("i", "cyan")}


@dataclass
class Report:
    """Everything `mergetui check` found."""

    profiles: list[Profile]
    findings: list[Finding]
    estimate: Estimate | None = None
    config: str | None = None  # path of the checked config, if any
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def count(self, severity: str) -> int:
        """Number of findings of one severity."""
        return sum(1 for f in self.findings if f.severity == severity)

    @property
    def has_errors(self) -> bool:
        """Whether any finding is an error (the merge would fail or be broken)."""
        return self.count(ERROR) > 0

    @property
    def exit_code(self) -> int:
        """1 when there is an error, else 0."""
        return 1 if self.has_errors else 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "version": REPORT_VERSION,
            "config": self.config,
            "ok": not self.has_errors,
            "counts": {s: self.count(s) for s in (ERROR, WARNING, INFO)},
            "models": [p.to_dict() for p in self.profiles],
            "findings": [f.to_dict() for f in self.findings],
            "estimate": self.estimate.to_dict() if self.estimate else None,
        }

    def to_json(self, indent: int | None = 2) -> str:
        """The report as JSON text (timings left out, so equal checks give equal text)."""
        return json.dumps(self.to_dict(), indent=indent, default=str)


# -- rendering ------------------------------------------------------------------------------------------


def _fmt_int(n: int | None) -> str:
    return "–" if n is None else f"{n:,}"


def _fmt_params(n: int | None) -> str:
    if n is None:
        return "–"
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            return f"{n / div:.2f}{unit}"
    return str(n)


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, (list, tuple)):
        return ", ".join(str(x) for x in v) or "–"
    if isinstance(v, dict):
        return ", ".join(f"{k}={x}" for k, x in v.items()) or "–"
    return str(v)


ROWS: list[tuple[str, Callable[[Profile], str]]] = [
    ("architecture", lambda p: _fmt(p.architectures)),
    ("model type", lambda p: _fmt(p.model_type)),
    ("layers", lambda p: _fmt(p.layers)),
    ("hidden size", lambda p: _fmt(p.hidden_size)),
    ("intermediate", lambda p: _fmt(p.intermediate_size)),
    ("heads / kv / dim", lambda p: f"{_fmt(p.num_heads)} / {_fmt(p.num_kv_heads)} / {_fmt(p.head_dim)}"),
    ("vocab (config)", lambda p: _fmt(p.vocab_size)),
    ("embedding rows", lambda p: _fmt(p.embed_rows)),
    ("lm_head rows", lambda p: _fmt(p.lm_head_rows) if p.lm_head_rows else ("tied" if p.tied_embeddings else "–")),
    ("tokenizer length", lambda p: _fmt(p.tokenizer_length)),
    ("added tokens", lambda p: str(len(p.added_tokens))),
    ("tied embeddings", lambda p: _fmt(p.tied_embeddings) + (f" ({p.tied_from})" if p.tied_from != "config" else "")),
    ("dtype", lambda p: ", ".join(p.dtypes) or "–"),
    ("parameters", lambda p: _fmt_params(p.parameters)),
    ("weights", lambda p: f"{human_bytes(p.nbytes)} {p.weight_format or 'none'} ({len(p.weight_files)} file{'s' if len(p.weight_files) != 1 else ''})"),
    ("quantized", lambda p: (p.quantization or {}).get("quant_method", "yes") if p.quantized else "no"),
    ("rope theta", lambda p: _fmt(p.rope_theta)),
    ("rope scaling", lambda p: _fmt(p.rope_scaling)),
    ("max positions", lambda p: _fmt(p.max_positions)),
    ("chat template", lambda p: p.chat_template_hash or "none"),
    ("license", lambda p: _fmt(p.license)),
    ("gated", lambda p: _fmt(p.gated) if p.kind == "hub" else "–"),
    ("revision", lambda p: (p.commit or "")[:10] + (" (cached)" if p.from_cache else "") if p.kind == "hub" else "local"),
]


def render_profiles(profiles: list[Profile], console: "Console") -> None:
    """Side-by-side table of profiles; values that differ between models are highlighted."""
    from rich.table import Table

    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    table.add_column("", style="dim", no_wrap=True)
    for p in profiles:
        table.add_column(p.label, overflow="fold")
    for title, get in ROWS:
        values = [get(p) for p in profiles]
        differ = len(profiles) > 1 and len(set(values)) > 1
        table.add_row(title, *[f"[yellow]{v}[/]" if differ else v for v in values])
    console.print(table)


def render_findings(findings: list[Finding], console: "Console") -> None:
    """One entry per finding: severity mark, message, explanation, fix."""
    from rich.markup import escape
    from rich.table import Table

    if not findings:
        console.print("[green]✓ no compatibility problems found[/]")
        return
    table = Table(show_header=False, box=None, pad_edge=False, padding=(0, 1, 1, 0))
    table.add_column(no_wrap=True)
    table.add_column(overflow="fold")
    for f in findings:
        mark, style = _STYLE[f.severity]
        text = f"[{style}]{escape(f.message)}[/] [dim]({f.code})[/]\n{escape(f.explanation)}"
        if f.fix:
            text += f"\n[green]fix:[/] {escape(f.fix)}"
        table.add_row(f"[{style}]{mark}[/]", text)
    console.print(table)


def render_estimate(est: Estimate, console: "Console") -> None:
    """Key/value table of the resource estimate."""
    from rich.table import Table

    o = est.output
    t = Table(show_header=False, box=None, pad_edge=False)
    t.add_column(style="dim", no_wrap=True)
    t.add_column(overflow="fold")
    t.add_row("output", f"{o.layers} layers, {_fmt_params(o.parameters)} parameters, {human_bytes(o.nbytes)} {o.dtype}")
    t.add_row("to download", f"{human_bytes(est.download_bytes)} in {est.download_files} file(s); {human_bytes(est.cached_bytes)} already local")
    ram = f"~{human_bytes(est.peak_ram)} (available {human_bytes(est.ram_available)})"
    t.add_row("peak RAM", ram)
    if est.device.startswith("cuda"):
        t.add_row("peak VRAM", f"~{human_bytes(est.peak_vram)} on {est.device} (free {human_bytes(est.vram_free)})")
    t.add_row("disk (output)", f"{human_bytes(est.out_free)} free at {est.out_dir}")
    if not est.same_volume:
        t.add_row("disk (HF cache)", f"{human_bytes(est.cache_free)} free at {est.cache_dir}")
    console.print(t)


def render_report(report: Report, console: "Console") -> None:
    """The whole report: models, findings, estimate and a summary line."""
    from rich.rule import Rule

    console.print(Rule("models", align="left", style="dim"))
    render_profiles(report.profiles, console)
    console.print(Rule("findings", align="left", style="dim"))
    render_findings(report.findings, console)
    if report.estimate is not None:
        console.print(Rule("resources", align="left", style="dim"))
        render_estimate(report.estimate, console)
    e, w, i = report.count(ERROR), report.count(WARNING), report.count(INFO)
    verdict = "[bold red]cannot merge as is[/]" if e else "[bold green]ok to merge[/]"
    console.print(
        f"{verdict}: {e} error{'s' if e != 1 else ''}, {w} warning{'s' if w != 1 else ''}, {i} note{'s' if i != 1 else ''}"
        f" [dim](checked in {report.seconds:.2f} s, no weights downloaded)[/]"
    )


def render_profile(p: Profile, console: "Console") -> None:
    """One model's profile for `mergetui inspect`: the table plus tokens and files."""
    from rich.markup import escape

    render_profiles([p], console)
    if p.special_tokens:
        console.print("[dim]special tokens[/] " + escape(", ".join(f"{k}={v}" for k, v in p.special_tokens.items())))
    if p.added_tokens:
        shown = ", ".join(f"{i}:{c}" for i, c, _ in p.added_tokens[:12])
        more = f" and {len(p.added_tokens) - 12} more" if len(p.added_tokens) > 12 else ""
        console.print("[dim]added tokens[/] " + escape(shown + more))
    if p.weight_files:
        console.print("[dim]weight files[/] " + escape(", ".join(f"{f} ({human_bytes(s)})" for f, s in p.weight_files.items())))
