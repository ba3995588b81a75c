"""Model references: a local directory or a Hub repo `org/name[@revision]`.

A source answers, before any weight is read, the model's config and every tensor's name,
dtype, shape and file (from safetensors headers: local reads, or HTTP range reads on the
Hub). `fetch()` then makes the files a merge needs present locally (the HF cache for Hub
repos, only the shards that hold needed tensors).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from mergetui.engine.errors import ModelError
from mergetui.engine.st_header import TensorEntry, read_safetensors_header  # torch-free: check/inspect use this module

# Small files copied next to the merged weights (tokenizer and generation settings).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
)
SMALL_FILES = ("config.json", "generation_config.json") + TOKENIZER_FILES

_REPO_RE = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


@dataclass(frozen=True)
class TensorMeta:
    """A tensor as known from headers: which file holds it, dtype and shape."""

    name: str
    file: str  # path relative to the model root
    dtype: str
    shape: tuple[int, ...]


def split_ref(ref: str) -> tuple[str, str | None]:
    """`org/name@rev` -> ("org/name", "rev"); local paths keep any '@'."""
    if "@" in ref and not Path(ref).exists():
        name, _, rev = ref.rpartition("@")
        return name, rev or None
    return ref, None


def looks_like_repo_id(ref: str) -> bool:
    """Whether `ref` reads as a Hub repo id rather than a path."""
    name, _ = split_ref(ref)
    return bool(_REPO_RE.match(name)) and not name.startswith((".", "/", "~"))


class ModelSource:
    """Interface shared by local and Hub models."""

    ref: str

    @property
    def label(self) -> str:
        """Short human name for messages."""
        return self.ref

    def config(self) -> dict[str, Any]:
        """The parsed config.json."""
        raise NotImplementedError

    def tensors(self) -> dict[str, TensorMeta]:
        """Every tensor's metadata, in file order."""
        raise NotImplementedError

    def fetch(self, files: set[str] | None = None) -> Path:
        """Make `files` (default: all weights) and the small files present locally; return the root."""
        raise NotImplementedError

    def local_entries(self) -> dict[str, TensorEntry]:
        """TensorEntry per tensor for reading; only valid after fetch() of its file."""
        root = self.fetch(set())
        out: dict[str, TensorEntry] = {}
        files = sorted({m.file for m in self.tensors().values()})
        for f in files:
            p = root / f
            if not p.exists():
                continue
            out.update(read_weight_file(p))
        return out


def read_weight_file(p: Path) -> dict[str, TensorEntry]:
    """Entries of one weight file, safetensors or .bin."""
    if p.suffix == ".safetensors":
        return read_safetensors_header(p)
    from mergetui.engine.tensor_io import load_bin_index  # torch only for .bin checkpoints

    return load_bin_index(p)


def weight_files(root: Path) -> list[str]:
    """Weight files of a local model dir: safetensors preferred, .bin otherwise."""
    for index_name, pattern in (
        ("model.safetensors.index.json", "*.safetensors"),
        ("pytorch_model.bin.index.json", "*.bin"),
    ):
        idx = root / index_name
        if idx.exists():
            try:
                wm = json.loads(idx.read_text())["weight_map"]
            except (ValueError, KeyError):
                raise ModelError(f"{idx}: malformed index file", fix="re-download the model") from None
            return sorted(set(wm.values()))
        found = sorted(p.name for p in root.glob(pattern) if p.is_file() and not p.name.startswith("training_args"))
        if found:
            return found
    return []


class LocalSource(ModelSource):
    """A model directory on disk."""

    def __init__(self, ref: str) -> None:
        self.ref = ref
        self.root = Path(os.path.expanduser(ref)).resolve()

    def config(self) -> dict[str, Any]:
        return self._config

    @cached_property
    def _config(self) -> dict[str, Any]:
        p = self.root / "config.json"
        if not p.exists():
            raise ModelError(f"model {self.ref}: no config.json in {self.root}", fix="point at a Hugging Face model directory")
        try:
            return json.loads(p.read_text())
        except ValueError as e:
            raise ModelError(f"{p}: malformed JSON ({e})") from None

    def tensors(self) -> dict[str, TensorMeta]:
        return self._metas

    @cached_property
    def _metas(self) -> dict[str, TensorMeta]:
        # built once: the planner and the memory budget ask for it per tensor
        return {n: TensorMeta(n, e.file.name, e.dtype, e.shape) for n, e in self._entries.items()}

    @cached_property
    def _entries(self) -> dict[str, TensorEntry]:
        files = weight_files(self.root)
        if not files:
            raise ModelError(
                f"model {self.ref}: no weights in {self.root} (no *.safetensors or *.bin)",
                fix="download the model's weight files, or check the path",
            )
        out: dict[str, TensorEntry] = {}
        for f in files:
            p = self.root / f
            if not p.exists():
                raise ModelError(f"model {self.ref}: index names {f} but the file is missing", fix="re-download the model")
            out.update(read_weight_file(p))
        return out

    def fetch(self, files: set[str] | None = None) -> Path:
        return self.root

    def local_entries(self) -> dict[str, TensorEntry]:
        return self._entries


def open_source(ref: str) -> ModelSource:
    """The source for a config's model reference: an existing path, else a Hub repo id."""
    name, _ = split_ref(ref)
    p = Path(os.path.expanduser(name))
    if p.exists():
        if not p.is_dir():
            raise ModelError(f"model {ref}: {p} is a file, not a model directory", fix="point at the directory holding config.json")
        return LocalSource(name)
    if looks_like_repo_id(ref):
        from mergetui.engine.hub_source import HubSource  # huggingface_hub only when needed

        return HubSource(ref)
    raise ModelError(f"model {ref}: no such directory, and not a Hub repo id (org/name)", fix="check the path or the repo id")
