"""Test set-up shared by every test module: a private HF cache and a local Hub per worker.

This runs before any test module is imported, so huggingface_hub (imported later, also by
transformers) reads HF_ENDPOINT and HF_HOME from here: every xdist worker gets its own local
Hub server (127.0.0.1, random port, started on first use), its own HF cache and its own
mergetui cache, and no test can reach the real Hub or see the developer's token.
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from hub_server import HubServer  # noqa: E402

_STATE = Path(tempfile.mkdtemp(prefix="mergetui-tests-"))
atexit.register(shutil.rmtree, _STATE, True)
for _key in (
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "HF_TOKEN_PATH",
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "HF_HUB_CACHE",
    "HUGGINGFACE_HUB_CACHE",
    "HF_ENDPOINT",
    "MERGETUI_HUB_TIMEOUT",
):
    os.environ.pop(_key, None)
os.environ.update(
    HF_HOME=str(_STATE / "hf-home"),
    HF_HUB_DISABLE_XET="1",
    HF_HUB_DISABLE_TELEMETRY="1",
    HF_HUB_DISABLE_PROGRESS_BARS="1",
    MERGETUI_CACHE_DIR=str(_STATE / "mergetui-cache"),
)
HUB = HubServer()  # binds now, so the URL is known before huggingface_hub is imported
os.environ["HF_ENDPOINT"] = HUB.url


@pytest.fixture(scope="session")
def hub() -> Iterator[HubServer]:
    """This worker's local Hub (see tests/hub_server.py); add repos with hub.add_repo(id, dir)."""
    import huggingface_hub.constants as constants

    assert constants.ENDPOINT == HUB.url, "huggingface_hub was imported before tests/conftest.py set HF_ENDPOINT"
    HUB.start()
    yield HUB


@pytest.fixture
def dead_endpoint() -> Iterator[str]:
    """URL of a socket on 127.0.0.1 that is listening but never answers."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    s.listen(8)  # connections complete in the kernel's backlog; nothing ever reads them
    try:
        yield f"http://127.0.0.1:{s.getsockname()[1]}"
    finally:
        s.close()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Build (once per worker and arguments) a tiny model with tests/tiny_models.make_model."""
    built: dict[tuple, Path] = {}
    root = tmp_path_factory.mktemp("tiny-models")

    def make(family: str = "llama", **kwargs: Any) -> Path:
        from tiny_models import make_model

        key = (family, tuple(sorted((k, str(v)) for k, v in kwargs.items())))
        if key not in built:
            built[key] = make_model(root / f"m{len(built)}-{family}", family, **kwargs)
        return built[key]

    return make


@pytest.fixture
def isolated_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh HF cache and mergetui cache for one test (for cold-start measurements)."""
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("MERGETUI_CACHE_DIR", str(tmp_path / "mergetui-cache"))
    return tmp_path
