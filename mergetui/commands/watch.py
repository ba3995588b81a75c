"""What `merge` and `moe` share while they run: events file, progress display, signals."""

from __future__ import annotations

import signal
import sys
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator


@contextmanager
def watched(sinks: list[Callable[[dict[str, Any]], None]], cancel: threading.Event, events_path: str | None, quiet: bool) -> Iterator[None]:
    """Attach an events file and a progress display to `sinks`, and SIGTERM/SIGINT to `cancel`."""
    from mergetui.engine.events import EventFile

    event_file = EventFile(events_path) if events_path else None
    if event_file:
        sinks.append(event_file)
    install_signal_handlers(cancel)
    progress = None if quiet else ProgressDisplay()
    if progress:
        sinks.append(progress)
    try:
        yield
    finally:
        if progress:
            progress.close()
        if event_file:
            event_file.close()


def install_signal_handlers(cancel: threading.Event) -> None:
    """SIGTERM/SIGINT ask the workers to stop; the partial directory stays for --resume."""
    def handler(signum: int, frame: Any) -> None:
        cancel.set()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            signal.signal(sig, handler)
        except ValueError:  # not the main thread (tests)
            pass


class ProgressDisplay:
    """Turns events into a rich progress bar on a TTY, or plain lines otherwise."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.bar: Any = None
        self.task: Any = None
        self.total = 0
        self.n_tensors = 0
        self.last_pct = -1

    def __call__(self, ev: dict[str, Any]) -> None:
        kind = ev["event"]
        if kind == "plan":
            self.total = ev["bytes"]
            if self.tty:
                from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

                self.bar = Progress(TextColumn("merging"), BarColumn(), TextColumn("{task.fields[tensors]} tensors"), DownloadColumn(),
                                    TimeRemainingColumn(), TextColumn("{task.fields[current]}"), transient=True)
                self.bar.start()
                self.n_tensors = ev["tensors"]
                self.task = self.bar.add_task("merge", total=ev["bytes"], completed=ev.get("already_done_bytes", 0),
                                              tensors=f"{ev.get('already_done', 0)}/{ev['tensors']}", current="")
            else:
                print(f"plan: {ev['tensors']} tensors, {ev['bytes'] / 1e9:.2f} GB, {ev['shards']} shard(s)", file=sys.stderr)
        elif kind == "tensor_done":
            if self.bar is not None:
                self.bar.update(self.task, completed=ev["done_bytes"], tensors=f"{ev['done']}/{self.n_tensors}", current=ev["name"])
            else:
                pct = int(100 * ev["done_bytes"] / max(1, self.total))
                if pct // 10 != self.last_pct // 10:
                    self.last_pct = pct
                    print(f"progress: {ev['done']} tensors, {pct}%", file=sys.stderr)
        elif kind == "shard_written" and self.bar is None:
            print(f"wrote {ev['file']}", file=sys.stderr)

    def close(self) -> None:
        """Stop the live display."""
        if self.bar is not None:
            self.bar.stop()
