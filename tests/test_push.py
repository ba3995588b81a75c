"""Pushing a merge output to the Hub: backend.push_to_hub and the Run view's `u`, against tests/hub_server.py."""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from pathlib import Path

import pytest
from hub_server import HubServer
from tiny_models import make_model
from tui_fakes import make_app, settle

from mergetui import backend
from mergetui.backend import PushError
from mergetui.cli import main
from mergetui.recipe import config_for_bench
from mergetui.screens.dialogs import PromptScreen
from mergetui.screens.run import RunScreen
from mergetui.state import WorkbenchState

TOKEN = "hf_me_write_token"


@pytest.fixture(scope="module")
def merged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The output folder of a passthrough merge of a tiny llama."""
    d = tmp_path_factory.mktemp("push")
    a = make_model(d / "a", "llama", layers=2, seed=1)
    cfg = d / "cfg.yml"
    cfg.write_text(f"merge_method: passthrough\nslices:\n  - sources:\n      - model: {a}\n        layer_range: [0, 2]\n"
                   "dtype: float32\n")
    out = d / "out"
    assert main(["merge", str(cfg), str(out), "--quiet"]) == 0
    return out


@pytest.fixture
def me(hub: HubServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """Logged in (HF_TOKEN) as user `me`, member of `my-org`; returns the token."""
    hub.add_user("me", TOKEN, orgs=["my-org"])
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    return TOKEN


def folder_files(path: Path) -> dict[str, bytes]:
    """Every file under `path` by its relative path, with its content."""
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def uploaded(hub: HubServer, repo_id: str, rev: str = "main") -> dict[str, bytes]:
    """A repo's files as the server holds them, without the .gitattributes every new repo starts with."""
    return {k: v for k, v in hub.files(repo_id, rev).items() if k != ".gitattributes"}


def unique(prefix: str = "merged") -> str:
    """A repo name no other test of this worker uses (the Hub lives for the whole session)."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_push_uploads_every_file_byte_identical(hub: HubServer, me: str, merged: Path) -> None:
    from huggingface_hub import HfApi, hf_hub_download, hf_hub_url
    from huggingface_hub.utils import get_session

    url = backend.push_to_hub(str(merged), "me/merged", private=True)
    assert url == f"{hub.url}/me/merged"
    expected = folder_files(merged)
    assert "model-00001-of-00001.safetensors" in expected and "README.md" in expected
    assert uploaded(hub, "me/merged") == expected
    assert hub.repos["me/merged"].private
    assert hub.counters.bytes_received > sum(map(len, expected.values()))  # base64 in the commit body
    # served back through the read API, to the owner only
    info = HfApi().model_info("me/merged", files_metadata=True)
    assert info.private and info.sha == hub.repos["me/merged"].revisions["main"].commit
    assert {s.rfilename for s in info.siblings} == set(expected) | {".gitattributes"}
    weights = hf_hub_download("me/merged", "model-00001-of-00001.safetensors")
    assert Path(weights).read_bytes() == expected["model-00001-of-00001.safetensors"]
    config = hf_hub_url("me/merged", "config.json")
    assert get_session().get(config, headers={"Authorization": f"Bearer {me}"}).content == expected["config.json"]
    assert get_session().get(config).status_code == 401  # anonymous
    assert "me/merged" in [m.id for m in HfApi().list_models(author="me")]
    assert "me/merged" not in [m.id for m in HfApi().list_models(author="me", token=False)]  # private: hidden from others


def test_push_again_skips_unchanged_files_and_commits_changes(hub: HubServer, me: str, merged: Path, tmp_path: Path) -> None:
    repo = f"my-org/{unique()}"
    backend.push_to_hub(str(merged), repo)
    first = hub.repos[repo].revisions["main"].commit
    hub.reset_counters()
    backend.push_to_hub(str(merged), repo)  # the repo exists (409 → exist_ok) and nothing changed
    assert hub.repos[repo].revisions["main"].commit == first
    assert not any(path.endswith("/commit/main") for _, path, *_ in hub.counters.requests)
    changed = tmp_path / "out"
    shutil.copytree(merged, changed)
    (changed / "README.md").write_text((merged / "README.md").read_text() + "\nEdited.\n")
    backend.push_to_hub(str(changed), repo)
    second = hub.repos[repo].revisions["main"].commit
    assert second != first and uploaded(hub, repo) == folder_files(changed)
    assert uploaded(hub, repo, first) == folder_files(merged)  # the earlier commit stays reachable by sha


def test_a_bare_name_goes_to_the_users_namespace(hub: HubServer, me: str, merged: Path) -> None:
    name = unique()
    url = backend.push_to_hub(str(merged), name)
    assert url == f"{hub.url}/me/{name}" and uploaded(hub, f"me/{name}") == folder_files(merged)


def test_push_without_token_is_a_short_error(hub: HubServer, merged: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    hub.reset_counters()
    with pytest.raises(PushError) as info:
        backend.push_to_hub(str(merged), "me/never")
    message = backend.describe_error(info.value)
    assert "not logged in" in message and "hf auth login" in message and "\n" not in message
    assert not any(method == "POST" for method, *_ in hub.counters.requests) and "me/never" not in hub.repos


@pytest.mark.parametrize(("token", "repo", "says"), [
    ("hf_unknown_token", "me/never", "did not accept your token"),
    (TOKEN, "someone-else/never", "no write access to someone-else/never"),
])
def test_push_refused_by_the_hub_is_a_short_error(hub: HubServer, me: str, merged: Path, monkeypatch: pytest.MonkeyPatch,
                                                  token: str, repo: str, says: str) -> None:
    monkeypatch.setenv("HF_TOKEN", token)
    with pytest.raises(PushError) as info:
        backend.push_to_hub(str(merged), repo)
    assert says in info.value.message and "\n" not in backend.describe_error(info.value)
    assert repo not in hub.repos


def test_server_requires_a_token_for_every_write(hub: HubServer, me: str, merged: Path) -> None:
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi()
    repo = f"me/{unique()}"
    with pytest.raises(HfHubHTTPError) as info:
        api.create_repo(repo, token=False)
    assert info.value.response.status_code == 401 and repo not in hub.repos
    api.create_repo(repo)  # public, with HF_TOKEN
    with pytest.raises(HfHubHTTPError) as info:
        api.create_repo(repo)
    assert info.value.response.status_code == 409
    assert api.create_repo(repo, exist_ok=True).repo_id == repo
    head = hub.repos[repo].revisions["main"].commit
    add = CommitOperationAdd("config.json", str(merged / "config.json"))
    with pytest.raises(HfHubHTTPError) as info:
        api.create_commit(repo, [add], commit_message="anonymous", token=False)
    assert info.value.response.status_code == 401 and hub.repos[repo].revisions["main"].commit == head
    with pytest.raises(ValueError, match="Invalid metadata"):  # the README's front matter is validated first
        api.upload_file(path_or_fileobj=b"---\nkey: [unclosed\n---\n", path_in_repo="README.md", repo_id=repo)
    api.upload_file(path_or_fileobj=b"{}", path_in_repo="sub/dir/x.json", repo_id=repo)
    assert uploaded(hub, repo) == {"sub/dir/x.json": b"{}"}
    api.delete_folder("sub", repo_id=repo)
    assert uploaded(hub, repo) == {}
    assert api.whoami()["name"] == "me"


async def until(pilot, cond, timeout: float = 30.0) -> None:
    """Let the app run until `cond()` holds."""
    end = time.time() + timeout
    while not cond():
        assert time.time() < end, "timed out"
        await pilot.pause(0.05)


def test_run_view_pushes_a_finished_merge(hub: HubServer, me: str, tiny_model, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from textual.widgets import Input, RichLog

    a = str(tiny_model("llama", layers=2, seed=1))
    b = str(tiny_model("llama", layers=2, seed=2))
    repo = f"me/{unique('tui')}"
    out = tmp_path / "merged"

    async def push(app, pilot, screen: RunScreen, repo_id: str) -> str:
        """Press u, enter `repo_id` in the prompt, wait for the upload; returns its result."""
        await pilot.press("u")
        await until(pilot, lambda: isinstance(app.screen, PromptScreen))
        field = app.screen.query_one("#prompt-input", Input)
        assert field.value == "merged"  # the output folder's name, to edit
        field.value = repo_id
        before = screen.push_worker
        await pilot.press("enter")
        await until(pilot, lambda: screen.push_worker is not before)
        await screen.push_worker.wait()
        await pilot.pause()
        return screen.push_worker.result

    async def run() -> None:
        state = WorkbenchState(bench=[a, b], out_dir=str(out))
        state.config = config_for_bench([a, b], "linear")
        app = make_app(tmp_path, state, mode="run")
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(app, pilot)
            screen = app.screen
            assert isinstance(screen, RunScreen)
            await screen.preflight_worker.wait()
            await pilot.press("s")
            await screen.follow_worker.wait()
            await until(pilot, lambda: screen.last_event.get("event") == "finished")
            log = screen.query_one("#log", RichLog)
            # not logged in: one line saying so and how to fix it, in the notification and the log
            monkeypatch.delenv("HF_TOKEN")
            assert await push(app, pilot, screen, repo) == ""
            errors = [n.message for n in app._notifications if n.severity == "error"]
            assert errors and errors[-1].startswith("Push failed: not logged in") and "hf auth login" in errors[-1]
            assert "\n" not in errors[-1] and "Traceback" not in errors[-1]
            assert log.display and any("push failed: not logged in" in str(line.text) for line in log.lines)
            assert repo not in hub.repos
            # logged in: the success message names the repo
            monkeypatch.setenv("HF_TOKEN", me)
            assert await push(app, pilot, screen, repo) == f"{hub.url}/{repo}"
            messages = [n.message for n in app._notifications]
            assert f"Pushed to {hub.url}/{repo}" in messages, messages
            assert any(f"pushed: {hub.url}/{repo}" in str(line.text) for line in log.lines)

    asyncio.run(run())
    assert uploaded(hub, repo) == folder_files(out) and hub.repos[repo].private
