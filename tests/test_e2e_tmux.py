"""End to end in a real terminal: `mergetui compare A B` in tmux, then a merge driven by keys."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")]


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], check=True, capture_output=True, text=True).stdout


def wait_screen(session: str, text: str, timeout: float = 60.0) -> str:
    """capture-pane until `text` shows."""
    end = time.time() + timeout
    screen = ""
    while time.time() < end:
        screen = tmux("capture-pane", "-p", "-t", session)
        if text in screen:
            return screen
        time.sleep(0.2)
    raise AssertionError(f"{text!r} never appeared; the screen:\n{screen}")


def test_merge_in_tmux(tiny_model, tmp_path: Path) -> None:
    a = tiny_model("llama", layers=2, seed=1)
    b = tiny_model("llama", layers=2, seed=2)
    session = f"mergetui-e2e-{tmp_path.name}"
    env = f"XDG_STATE_HOME={tmp_path / 'state'} TERM=xterm-256color"
    cmd = f"env {env} {sys.executable} -m mergetui compare {a} {b}"
    tmux("new-session", "-d", "-s", session, "-x", "100", "-y", "30", "-c", str(tmp_path), cmd)
    try:
        wait_screen(session, "embedding rows")  # Compare with both profiles
        tmux("send-keys", "-t", session, "5")
        wait_screen(session, "s starts the merge")  # Run view, preflight done
        tmux("send-keys", "-t", session, "s")
        screen = wait_screen(session, "finished")
        assert "merge" in screen.lower()
        tmux("send-keys", "-t", session, "C-q")
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
    out = json.loads((tmp_path / "merged" / "config.json").read_text())
    assert out["num_hidden_layers"] == 2
