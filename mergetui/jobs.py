"""The job registry: merges and MoE assemblies started from the workbench, each its own detached process.

A job is a folder under $XDG_STATE_HOME/mergetui/jobs (default ~/.local/state/...) holding
config.yml, the events file(s), merge.log (the process's stdout/stderr) and job.json
{id, pid, out_dir, config, started, events, cwd, attempts, kind}; kind is the subcommand,
`merge` or `moe` (both write the same events). The process runs in a new session
(start_new_session), so a dropped SSH connection or a closed workbench does not stop it;
whoever opens the workbench later reads the same folder and re-attaches.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mergetui.engine.events import pid_alive, read_events

TERMINAL = ("finished", "error", "cancelled")
KINDS = ("merge", "moe")  # the mergetui subcommand a job runs

# Popen objects of jobs this process started: polling them reaps the child, so a finished
# merge does not linger as a zombie that pid_alive() would still call alive.
_CHILDREN: dict[int, subprocess.Popen] = {}


def jobs_dir() -> Path:
    """Where jobs live: $XDG_STATE_HOME/mergetui/jobs, else ~/.local/state/mergetui/jobs."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "mergetui" / "jobs"


@dataclass
class Job:
    """One merge job, as recorded in its job.json."""

    id: str
    dir: str
    pid: int
    out_dir: str
    config: str
    started: float
    events: str
    cwd: str = ""
    attempts: int = 1
    kind: str = "merge"  # "merge" or "moe" (job.json files written before MoE jobs lack it)

    @property
    def events_path(self) -> Path:
        """The events file of the current attempt."""
        return Path(self.dir) / self.events

    @property
    def log_path(self) -> Path:
        """The merge process's stdout/stderr."""
        return Path(self.dir) / "merge.log"

    def read_events(self) -> list[dict[str, Any]]:
        """Every event of the current attempt so far."""
        return read_events(self.events_path)

    def alive(self) -> bool:
        """Whether the merge process still runs."""
        child = _CHILDREN.get(self.pid)
        if child is not None:
            return child.poll() is None
        return pid_alive(self.pid)

    def status(self, events: list[dict[str, Any]] | None = None) -> str:
        """running | finished | error | cancelled | stopped (the process died without a word)."""
        events = self.read_events() if events is None else events
        last = next((e["event"] for e in reversed(events) if e.get("event") in TERMINAL), None)
        if last:
            return last
        return "running" if self.alive() else "stopped"

    def progress(self, events: list[dict[str, Any]] | None = None) -> tuple[int, int]:
        """(bytes done, bytes total) from the events."""
        events = self.read_events() if events is None else events
        total = done = 0
        for e in events:
            if e.get("event") == "plan":
                total, done = e.get("bytes", 0), e.get("already_done_bytes", 0)
            elif e.get("event") == "tensor_done":
                done = e.get("done_bytes", done)
            elif e.get("event") == "finished":
                done = total = e.get("bytes", total)
        return done, total

    def log_tail(self, lines: int = 20) -> str:
        """The last lines the merge process printed (where a crash's traceback would be)."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def save(self) -> None:
        """Write job.json atomically."""
        path = Path(self.dir) / "job.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        os.replace(tmp, path)


def job_command(kind: str, config: str, out_dir: str, events: str, resume: bool, extra: list[str]) -> list[str]:
    """The argv of a job's process: `python -m mergetui merge|moe CONFIG OUT --events FILE --quiet`.

    A MoE assembly has no --resume (it leaves nothing behind when stopped): it starts over.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown job kind {kind!r}; use one of {', '.join(KINDS)}")
    cmd = [sys.executable, "-m", "mergetui", kind, config, out_dir, "--events", events, "--quiet"]
    return cmd + (["--resume"] if resume and kind == "merge" else []) + list(extra)


def merge_command(config: str, out_dir: str, events: str, resume: bool, extra: list[str]) -> list[str]:
    """The argv of the merge process."""
    return job_command("merge", config, out_dir, events, resume, extra)


def _spawn(job: Job, resume: bool, extra: list[str], command: list[str] | None) -> None:
    argv = command + [job.config, job.out_dir, "--events", str(job.events_path)] if command else \
        job_command(job.kind, job.config, job.out_dir, str(job.events_path), resume, extra)
    if command and resume and job.kind == "merge":
        argv.append("--resume")
    with open(job.log_path, "ab") as log:
        proc = subprocess.Popen(
            argv, cwd=job.cwd or None, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,  # own session and process group: survives SIGHUP, cancellable as a group
        )
    _CHILDREN[proc.pid] = proc
    job.pid = proc.pid
    job.save()


def start_job(config_yaml: str, out_dir: str, *, extra: list[str] | None = None, root: Path | None = None,
              command: list[str] | None = None, kind: str = "merge") -> Job:
    """Save the config into a new job folder and start `mergetui merge` (or `moe`) on it, detached.

    `command` replaces `python -m mergetui merge` (tests use a slow stand-in).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown job kind {kind!r}; use one of {', '.join(KINDS)}")
    root = root or jobs_dir()
    root.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    n = 0
    while (folder := root / (f"{stamp}" + (f"-{n}" if n else ""))).exists():
        n += 1
    folder.mkdir()
    (folder / "config.yml").write_text(config_yaml)
    job = Job(id=folder.name, dir=str(folder), pid=0, out_dir=str(Path(os.path.expanduser(out_dir)).absolute()),
              config=str(folder / "config.yml"), started=time.time(), events="events.jsonl", cwd=os.getcwd(), kind=kind)
    _spawn(job, False, extra or [], command)
    return job


def resume_job(job: Job, *, extra: list[str] | None = None, command: list[str] | None = None) -> Job:
    """Start the job's merge again with --resume (a MoE starts over); events of this attempt go to a new file."""
    if job.alive():
        return job
    job.attempts += 1
    job.events = f"events-{job.attempts}.jsonl"
    job.started = time.time()
    _spawn(job, True, extra or [], command)
    return job


def cancel_job(job: Job) -> bool:
    """SIGTERM the job's process group; the merge stops and keeps its partial dir for resume."""
    if not job.alive():
        return False
    try:
        os.killpg(job.pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(job.pid, signal.SIGTERM)
        except OSError:
            return False
    return True


def load_job(folder: Path) -> Job | None:
    """The job recorded in `folder`, or None when job.json is missing or unreadable."""
    try:
        data = json.loads((folder / "job.json").read_text())
        return Job(**{k: data[k] for k in Job.__dataclass_fields__ if k in data})
    except (OSError, ValueError, TypeError):
        return None


def list_jobs(root: Path | None = None) -> list[Job]:
    """Every recorded job, newest first."""
    root = root or jobs_dir()
    if not root.is_dir():
        return []
    jobs = [j for f in root.iterdir() if f.is_dir() and (j := load_job(f))]
    return sorted(jobs, key=lambda j: j.started, reverse=True)


def running_jobs(root: Path | None = None) -> list[Job]:
    """Jobs whose process still runs and has not reported an end, newest first."""
    return [j for j in list_jobs(root) if j.status() == "running"]
