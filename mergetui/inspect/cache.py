"""On-disk cache of what is known about Hub models, per (repo, commit), plus resolved refs.

A commit never changes, so its facts are cached forever; a branch name (`main`) is resolved
to a commit again after REF_TTL seconds, or never when offline (HF_HUB_OFFLINE=1). The
directory is $MERGETUI_CACHE_DIR, else $XDG_CACHE_HOME/mergetui, else ~/.cache/mergetui.
Nothing secret is written here: facts hold no token.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

CACHE_VERSION = 1
REF_TTL = 600.0  # seconds a branch -> commit resolution is trusted while online


def cache_dir() -> Path:
    """Root of mergetui's cache (read from the environment on every call, for tests)."""
    env = os.environ.get("MERGETUI_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "mergetui"


def _repo_dir(kind: str, repo_id: str) -> Path:
    return cache_dir() / kind / repo_id.replace("/", "--")


def load_facts(repo_id: str, commit: str) -> dict[str, Any] | None:
    """The cached facts of `repo_id` at `commit`, or None."""
    p = _repo_dir("profiles", repo_id) / f"{commit}.json"
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("cache_version") != CACHE_VERSION:
        return None
    return data


def save_facts(repo_id: str, commit: str, data: dict[str, Any]) -> None:
    """Cache facts for (repo, commit); failures to write are ignored (the cache is optional)."""
    _write_json(_repo_dir("profiles", repo_id) / f"{commit}.json", {**data, "cache_version": CACHE_VERSION})


def lookup_ref(repo_id: str, revision: str, max_age: float | None) -> str | None:
    """The commit `revision` last resolved to, if younger than max_age (None: any age)."""
    p = _repo_dir("refs", repo_id) / quote(revision, safe="")
    try:
        data = json.loads(p.read_text())
        commit, when = str(data["commit"]), float(data["time"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if max_age is not None and time.time() - when > max_age:
        return None
    return commit


def save_ref(repo_id: str, revision: str, commit: str) -> None:
    """Remember that `revision` resolved to `commit` now."""
    _write_json(_repo_dir("refs", repo_id) / quote(revision, safe=""), {"commit": commit, "time": time.time()})


def _write_json(path: Path, data: dict[str, Any]) -> None:
    # Write to a temp file and rename, so a concurrent reader never sees half a file.
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, separators=(",", ":"))
        os.replace(tmp, path)
    except OSError:
        pass
