"""VRAM, RAM and disk gauges with sparklines, sampled off the UI thread.

Each Gauges widget owns its sampling worker: a thread worker takes one sample, and only when
it has finished is the next one armed (a slow NVML call never piles up samples). The history
lives on the App (GaugeData) so every view's gauges show the same sparklines; a widget whose
screen is not the current one skips its turn.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from rich.text import Text
from textual.widget import Widget
from textual.worker import Worker, WorkerState

from mergetui.inspect.system import History, SystemSample

BARS = "▁▂▃▄▅▆▇█"


class Sampler(Protocol):
    """What the gauges need from a sampler (SystemSampler, or a fake in tests)."""

    def sample(self, pid: int | None = None, out_dir: str | None = None) -> SystemSample: ...


@dataclass
class GaugeData:
    """The latest sample and each gauge's history, shared by every view."""

    last: SystemSample | None = None
    vram: History = field(default_factory=History)
    ram: History = field(default_factory=History)
    rss: History = field(default_factory=History)
    written: History = field(default_factory=History)
    samples: int = 0

    def push(self, s: SystemSample) -> None:
        """Record a sample."""
        self.last = s
        self.samples += 1
        used = sum(g.used or 0 for g in s.gpus)
        self.vram.push(float(used))
        self.ram.push(float(s.ram_used))
        self.rss.push(float(s.proc_rss or 0))
        self.written.push(float(s.written or 0))


def human(n: float | None, unit: str = "B") -> str:
    """1234567890 -> '1.1G' (binary units, compact)."""
    if n is None:
        return "n/a"
    for prefix in ("", "K", "M", "G", "T"):
        if abs(n) < 1024 or prefix == "T":
            return f"{n:.0f}{prefix}{unit}" if prefix == "" else f"{n:.1f}{prefix}{unit}"
        n /= 1024
    return f"{n:.1f}P{unit}"


def compact(n: float | None) -> str:
    """Bytes without the unit letter B, for the narrow gauges ('23.5G')."""
    return human(n, "")


def count(n: int | None) -> str:
    """A parameter count the way model cards say it: 312K, 7.2B."""
    if n is None:
        return "?"
    for div, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            return f"{n / div:.1f}".rstrip("0").rstrip(".") + suffix
    return str(n)


def spark(values: list[float], width: int) -> str:
    """The last `width` values as block characters, scaled to their own maximum."""
    vals = values[-width:]
    if not vals:
        return ""
    top = max(vals) or 1.0
    return "".join(BARS[min(len(BARS) - 1, int(v / top * (len(BARS) - 1)))] for v in vals)


def level_style(frac: float) -> str:
    """Colour for a fill fraction."""
    return "red" if frac > 0.9 else "yellow" if frac > 0.75 else "green"


class Gauges(Widget):
    """Compact (one line) or detailed gauges; `interval` seconds between samples."""

    DEFAULT_CSS = """
    Gauges { height: 1; padding: 0 1; background: $boost; }
    Gauges.detailed { height: auto; min-height: 4; background: $surface; border: round $primary-darken-2; }
    """

    def __init__(self, detailed: bool = False, interval: float = 1.0, **kw: Any) -> None:
        super().__init__(**kw)
        self.detailed = detailed
        self.interval = interval
        self.worker: Worker[SystemSample] | None = None
        if detailed:
            self.add_class("detailed")

    def on_mount(self) -> None:
        self._kick()

    def _kick(self) -> None:
        """Start one sample now if this view is showing, else look again after `interval`."""
        if not self.is_attached:
            return
        if not self.screen.is_current:
            self.set_timer(min(self.interval, 0.5), self._kick)  # look again soon: the view may be shown any moment
            return
        self.worker = self.run_worker(self._sample, thread=True, group="gauges", exit_on_error=False)

    def _sample(self) -> SystemSample:
        app: Any = self.app
        job = app.state.job
        pid = job.pid if job is not None and app.state.job_running else None
        out_dir = job.out_dir if job is not None else app.state.out_dir
        return app.sampler.sample(pid=pid, out_dir=out_dir)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker is not self.worker or event.state not in (WorkerState.SUCCESS, WorkerState.ERROR, WorkerState.CANCELLED):
            return
        event.stop()
        if event.state == WorkerState.SUCCESS and event.worker.result is not None:
            self.app.gauge_data.push(event.worker.result)  # type: ignore[attr-defined]
            self.refresh(layout=self.detailed)
        self.set_timer(self.interval, self._kick)  # re-arm only after this sample finished

    def render(self) -> Text:
        data: GaugeData = self.app.gauge_data  # type: ignore[attr-defined]
        return self._detailed(data) if self.detailed else self._compact(data)

    # ---- rendering ---------------------------------------------------------------------------
    def _vram_parts(self, s: SystemSample) -> list[tuple[str, str]]:
        if s.gpu_status or not s.gpus:
            return [(s.gpu_status or "no GPU", "dim")]
        out = []
        for g in s.gpus:
            if g.used is None or not g.total:
                out.append((f"GPU{g.index} n/a", "dim"))
            else:
                out.append((f"GPU{g.index} {compact(g.used)}/{compact(g.total)}", level_style(g.used / g.total)))
        return out

    def _compact(self, data: GaugeData) -> Text:
        s = data.last
        t = Text(no_wrap=True, overflow="ellipsis")
        if s is None:
            t.append("gauges: sampling…", "dim")
            return t
        narrow = self.size.width and self.size.width < 96
        sw = 4 if narrow else 8
        t.append("VRAM ", "bold")
        for text, style in self._vram_parts(s)[:2]:  # more GPUs: the Run view lists them all
            t.append(text + " ", style)
        t.append(spark(data.vram.values, sw), "cyan")
        t.append(" │ RAM ", "bold")
        frac = s.ram_used / s.ram_total if s.ram_total else 0
        t.append(f"{compact(s.ram_used)}/{compact(s.ram_total)} ", level_style(frac))
        t.append(spark(data.ram.values, sw), "cyan")
        app: Any = self.app
        if s.proc_rss is not None:
            t.append(" │ merge ", "bold")
            t.append(f"{compact(s.proc_rss)} ")
            t.append(spark(data.rss.values, sw), "magenta")
        t.append(" │ disk ", "bold")
        t.append(f"{compact(s.disk_free)} free")
        if s.written and app.state.job is not None:
            t.append(f" +{compact(s.written)} ")
            t.append(spark(data.written.values, sw), "green")
        done, total = app.state.job_progress
        if app.state.job_running and total:
            t.append(f" │ ▶ merge {100 * done // total}%", "bold green")
        return t

    def _detailed(self, data: GaugeData) -> Text:
        s = data.last
        t = Text(no_wrap=True, overflow="ellipsis")
        if s is None:
            t.append("sampling…", "dim")
            return t
        sw = max(8, min(40, (self.size.width or 40) - 26))
        for text, style in self._vram_parts(s):
            t.append("VRAM  ", "bold")
            t.append(f"{text}\n", style)
        t.append(" " * 6 + spark(data.vram.values, sw) + "\n", "cyan")
        frac = s.ram_used / s.ram_total if s.ram_total else 0
        t.append("RAM   ", "bold")
        t.append(f"{compact(s.ram_used)}/{compact(s.ram_total)} ({frac:.0%})\n", level_style(frac))
        t.append(" " * 6 + spark(data.ram.values, sw) + "\n", "cyan")
        t.append("merge ", "bold")
        t.append(f"RSS {compact(s.proc_rss)}\n" if s.proc_rss is not None else "not running\n", "" if s.proc_rss else "dim")
        t.append(" " * 6 + spark(data.rss.values, sw) + "\n", "magenta")
        t.append("disk  ", "bold")
        t.append(f"{compact(s.disk_free)} free, {compact(s.written or 0)} written\n")
        t.append(" " * 6 + spark(data.written.values, sw), "green")
        return t
