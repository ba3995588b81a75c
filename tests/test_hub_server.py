"""The local Hub server answers the real huggingface_hub client the way the Hub does."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from hub_server import HubServer


def _repo(hub: HubServer, path: Path, **kwargs) -> str:
    repo_id = f"t{uuid.uuid4().hex[:8]}/model"
    hub.add_repo(repo_id, path, **kwargs)
    return repo_id


def test_model_info_download_and_tree(hub: HubServer, tiny_model) -> None:
    from huggingface_hub import HfApi, hf_hub_download

    path = tiny_model("llama", layers=2)
    repo_id = _repo(hub, path)
    api = HfApi()
    info = api.model_info(repo_id, files_metadata=True)
    sizes = {s.rfilename: s.size for s in info.siblings}
    assert sizes["model.safetensors"] == (path / "model.safetensors").stat().st_size
    assert info.safetensors.total > 0 and info.card_data.license == "apache-2.0"
    local = hf_hub_download(repo_id, "config.json")
    assert Path(local).read_bytes() == (path / "config.json").read_bytes()
    assert info.sha in local  # stored under the commit the server reported
    assert {e.path for e in api.list_repo_tree(repo_id)} == set(sizes)
    assert api.model_info(repo_id, revision=info.sha).sha == info.sha


def test_range_reads_and_head(hub: HubServer, tiny_model) -> None:
    from huggingface_hub import hf_hub_url
    from huggingface_hub.utils import get_session

    path = tiny_model("llama", layers=2)
    repo_id = _repo(hub, path)
    url = hf_hub_url(repo_id, "model.safetensors")
    data = (path / "model.safetensors").read_bytes()
    r = get_session().get(url, headers={"Range": "bytes=8-15"})
    assert r.status_code == 206 and r.content == data[8:16]
    assert r.headers["Content-Range"] == f"bytes 8-15/{len(data)}"
    h = get_session().head(url)
    assert h.headers["X-Linked-Size"] == str(len(data)) and h.headers["X-Repo-Commit"]
    assert h.headers["ETag"] == h.headers["X-Linked-Etag"]
    assert get_session().get(url, headers={"Range": f"bytes={len(data)}-"}).status_code == 416


def test_errors_carry_hub_error_codes(hub: HubServer, tiny_model) -> None:
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import GatedRepoError, RemoteEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    path = tiny_model("llama", layers=2)
    repo_id = _repo(hub, path)
    gated = _repo(hub, path, gated="manual", tokens=["hf_granted_token_123"])
    with pytest.raises(RepositoryNotFoundError):
        HfApi().model_info("nobody/nothing")
    with pytest.raises(RevisionNotFoundError):
        HfApi().model_info(repo_id, revision="v9")
    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download(repo_id, "nope.json")
    with pytest.raises(GatedRepoError):
        hf_hub_download(gated, "config.json")
    assert HfApi().model_info(gated).gated == "manual"  # metadata of gated repos is public
    assert Path(hf_hub_download(gated, "config.json", token="hf_granted_token_123")).is_file()


def test_search(hub: HubServer, tiny_model) -> None:
    from huggingface_hub import HfApi

    path = tiny_model("llama", layers=2)
    tag = uuid.uuid4().hex[:8]
    hub.add_repo(f"searcher/{tag}-small", path, downloads=5)
    hub.add_repo(f"searcher/{tag}-big", path, downloads=50)
    found = [m.id for m in HfApi().list_models(search=tag, sort="downloads", limit=10)]
    assert found == [f"searcher/{tag}-big", f"searcher/{tag}-small"]
    assert len(list(HfApi().list_models(search=tag, limit=1))) == 1
    assert list(HfApi().list_models(author="nobody-at-all", limit=5)) == []
