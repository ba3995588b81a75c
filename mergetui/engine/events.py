"""Events: the only thing that crosses from a running merge to whoever watches it.

JSON lines, one object per line, each with "event" and "time" (unix seconds):
- plan: tensors, bytes (output), shards, out_dir, method, pid, config (path)
- tensor_done: name, bytes, done (tensors so far), done_bytes, shard
- shard_written: file, bytes
- finished: out_dir, tensors, bytes, seconds
- error: message
- cancelled: message
A watcher tails the file (see follow()); the writer flushes after every line so a dropped
terminal or a re-attach sees everything that happened.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, TextIO

EventSink = Callable[[dict[str, Any]], None]


def make_event(kind: str, **fields: Any) -> dict[str, Any]:
    """An event dict with its kind and timestamp."""
    return {"event": kind, "time": time.time(), **fields}


class EventFile:
    """Appends events as JSON lines to a file, thread-safe, flushed per line."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f: TextIO = open(self.path, "a", buffering=1)
        self._lock = threading.Lock()

    def __call__(self, event: dict[str, Any]) -> None:
        line = json.dumps(event, separators=(",", ":"))
        with self._lock:
            self._f.write(line + "\n")
            self._f.flush()

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            self._f.close()


def read_events(path: str | Path) -> list[dict[str, Any]]:
    """Every complete event in the file (a torn last line is skipped)."""
    out = []
    try:
        with open(path) as f:
            for line in f:
                if line.endswith("\n"):
                    try:
                        out.append(json.loads(line))
                    except ValueError:
                        continue
    except FileNotFoundError:
        pass
    return out


def follow(path: str | Path, stop: Callable[[], bool], poll: float = 0.2) -> Iterator[dict[str, Any]]:
    """Yield events as they are appended, until a finished/error/cancelled event or stop()."""
    pos = 0
    buf = ""
    while not stop():
        try:
            with open(path) as f:
                f.seek(pos)
                chunk = f.read()
                pos = f.tell()
        except FileNotFoundError:
            chunk = ""
        buf += chunk
        while "\n" in buf:
            line, buf = buf.split("\n", 1)
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            yield ev
            if ev.get("event") in ("finished", "error", "cancelled"):
                return
        if not chunk:
            time.sleep(poll)


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid still exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
