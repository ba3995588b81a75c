"""The job registry: detached merge processes, their events, cancel (SIGTERM) and resume."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from mergetui import jobs

# A stand-in for `mergetui merge` that takes its time: it writes the same events, stops on
# SIGTERM with a "cancelled" event, and resumes from where it stopped.
FAKE_MERGE = r'''
import json, os, signal, sys, time
args = sys.argv[1:]
out = os.path.abspath(args[1])
events = args[args.index("--events") + 1]
resume = "--resume" in args
n, step = int(os.environ.get("FAKE_TENSORS", "60")), float(os.environ.get("FAKE_STEP", "0.05"))
state = out + ".fake-progress"
done = int(open(state).read()) if resume and os.path.exists(state) else 0
f = open(events, "a", buffering=1)
def emit(kind, **kw):
    f.write(json.dumps({"event": kind, "time": time.time(), **kw}) + "\n"); f.flush()
stop = []
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
emit("plan", tensors=n, bytes=n * 1000, shards=1, out_dir=out, method="linear", pid=os.getpid(),
     already_done=done, already_done_bytes=done * 1000, device="cpu")
while done < n:
    if stop:
        open(state, "w").write(str(done))
        emit("cancelled", message="cancelled", out_dir=out)
        sys.exit(130)
    time.sleep(step)
    done += 1
    emit("tensor_done", name=f"model.layers.{done}.weight", bytes=1000, done=done, done_bytes=done * 1000, shard="model-00001-of-00001.safetensors")
os.makedirs(out, exist_ok=True)
open(os.path.join(out, "README.md"), "w").write("---\nbase_model: []\n---\n# fake merged model\n")
emit("finished", out_dir=out, tensors=n, bytes=n * 1000, seconds=0.1)
'''


@pytest.fixture
def fake_merge(tmp_path: Path) -> list[str]:
    """argv prefix of the slow stand-in merge."""
    script = tmp_path / "fake_merge.py"
    script.write_text(FAKE_MERGE)
    return [sys.executable, str(script)]


def wait_for(cond, timeout: float = 10.0) -> None:
    """Poll `cond` until true."""
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_jobs_dir_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert jobs.jobs_dir() == tmp_path / "mergetui" / "jobs"


def test_start_cancel_resume(tmp_path: Path, fake_merge: list[str]) -> None:
    root = tmp_path / "jobs"
    job = jobs.start_job("merge_method: linear\n", str(tmp_path / "out"), root=root, command=fake_merge)
    assert (Path(job.dir) / "config.yml").read_text() == "merge_method: linear\n"
    assert os.getpgid(job.pid) == job.pid  # its own process group: SIGHUP-proof, cancellable as a group
    wait_for(lambda: any(e["event"] == "tensor_done" for e in job.read_events()))
    assert job.status() == "running"
    assert [j.id for j in jobs.running_jobs(root)] == [job.id]
    assert jobs.cancel_job(job)
    wait_for(lambda: job.status() == "cancelled")
    done_before, total = job.progress()
    assert 0 < done_before < total
    wait_for(lambda: not job.alive())
    jobs.resume_job(job, command=fake_merge)
    assert job.attempts == 2 and job.events == "events-2.jsonl"
    wait_for(lambda: job.status() == "finished", timeout=20)
    plan = job.read_events()[0]
    assert plan["already_done_bytes"] == done_before
    again = jobs.load_job(Path(job.dir))
    assert again is not None and again.attempts == 2 and again.status() == "finished"


def test_died_without_event_is_stopped(tmp_path: Path) -> None:
    job = jobs.start_job("x: 1\n", str(tmp_path / "out"), root=tmp_path / "jobs",
                         command=[sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"])
    wait_for(lambda: not job.alive())
    assert job.status() == "stopped"
    assert "boom" in job.log_tail()


def test_list_skips_broken_folders(tmp_path: Path) -> None:
    root = tmp_path / "jobs"
    (root / "junk").mkdir(parents=True)
    (root / "junk" / "job.json").write_text("{not json")
    assert jobs.list_jobs(root) == []
    assert jobs.list_jobs(tmp_path / "missing") == []
