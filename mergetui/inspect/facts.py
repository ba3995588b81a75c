"""The raw facts about one model, gathered without reading a weight: files, config, tokenizer, headers.

ModelFacts is what gets cached per (repo, commit) and what a Profile is computed from. This
module gathers them for a local directory (a model folder, or a snapshot in the HF cache);
hub.py gathers them over HTTP.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mergetui.engine.errors import ModelError
from mergetui.engine.sources import SMALL_FILES, weight_files
from mergetui.engine.st_header import read_safetensors_header
from mergetui.inspect.tokenizer import TokenizerFacts, read_tokenizer

INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


@dataclass(frozen=True)
class TensorInfo:
    """A tensor as its header describes it."""

    name: str
    file: str  # relative to the model root
    dtype: str
    shape: tuple[int, ...]
    nbytes: int


@dataclass
class ModelFacts:
    """Everything known about a model before downloading its weights."""

    ref: str  # as the user wrote it
    kind: str  # "local" or "hub"
    repo_id: str | None = None
    revision: str | None = None
    commit: str | None = None
    root: str | None = None  # local directory (local models only)
    files: dict[str, int | None] = field(default_factory=dict)  # relative path -> size
    config: dict[str, Any] = field(default_factory=dict)
    generation_config: dict[str, Any] | None = None
    tokenizer: TokenizerFacts | None = None
    weight_format: str | None = None  # "safetensors", "bin" or None (no weights found)
    weight_files: list[str] = field(default_factory=list)
    tensors: dict[str, TensorInfo] = field(default_factory=dict)  # empty for .bin weights
    license: str | None = None
    gated: str | bool | None = None
    hub_parameters: dict[str, int] | None = None  # the Hub's own count per dtype, if any
    from_cache: bool = False  # not stored: whether this came from mergetui's cache

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tensors as compact rows)."""
        return {
            "ref": self.ref,
            "kind": self.kind,
            "repo_id": self.repo_id,
            "revision": self.revision,
            "commit": self.commit,
            "root": self.root,
            "files": self.files,
            "config": self.config,
            "generation_config": self.generation_config,
            "tokenizer": self.tokenizer.to_dict() if self.tokenizer else None,
            "weight_format": self.weight_format,
            "weight_files": self.weight_files,
            "tensors": [[t.name, t.file, t.dtype, list(t.shape), t.nbytes] for t in self.tensors.values()],
            "license": self.license,
            "gated": self.gated,
            "hub_parameters": self.hub_parameters,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelFacts":
        """Inverse of to_dict."""
        tensors = {r[0]: TensorInfo(r[0], r[1], r[2], tuple(r[3]), int(r[4])) for r in d.get("tensors", [])}
        tok = d.get("tokenizer")
        return cls(
            ref=d["ref"],
            kind=d["kind"],
            repo_id=d.get("repo_id"),
            revision=d.get("revision"),
            commit=d.get("commit"),
            root=d.get("root"),
            files=dict(d.get("files") or {}),
            config=dict(d.get("config") or {}),
            generation_config=d.get("generation_config"),
            tokenizer=TokenizerFacts.from_dict(tok) if tok else None,
            weight_format=d.get("weight_format"),
            weight_files=list(d.get("weight_files") or []),
            tensors=tensors,
            license=d.get("license"),
            gated=d.get("gated"),
            hub_parameters=d.get("hub_parameters"),
        )


def choose_weight_files(files: dict[str, int | None], read_index: Any) -> tuple[str | None, list[str]]:
    """(format, files) of the weights a loader would use, from a repo's file list.

    safetensors wins over .bin; an index names the shards (a repo may also hold e.g. a
    consolidated.safetensors that transformers ignores). `read_index(name)` returns an
    index file's parsed JSON.
    """
    for fmt, index, single in (
        ("safetensors", "model.safetensors.index.json", "model.safetensors"),
        ("bin", "pytorch_model.bin.index.json", "pytorch_model.bin"),
    ):
        if index in files:
            data = read_index(index)
            try:
                return fmt, sorted(set(data["weight_map"].values()))
            except (TypeError, KeyError, AttributeError):
                raise ModelError(f"{index}: malformed index file (no weight_map)", fix="re-download the model") from None
        if single in files:
            return fmt, [single]
    # No standard name: any top-level weight files of one format.
    for fmt, suffix in (("safetensors", ".safetensors"), ("bin", ".bin")):
        found = sorted(f for f in files if f.endswith(suffix) and "/" not in f and not f.startswith("training_args"))
        if found:
            return fmt, found
    return None, []


def local_facts(ref: str, root: Path, *, kind: str = "local") -> ModelFacts:
    """Facts of a model directory: config, tokenizer, safetensors headers (read locally)."""
    cfg_path = root / "config.json"
    if not cfg_path.is_file():
        raise ModelError(f"model {ref}: no config.json in {root}", fix="point at a Hugging Face model directory")
    files = {p.relative_to(root).as_posix(): p.stat().st_size for p in root.rglob("*") if p.is_file() and ".cache" not in p.parts}
    facts = ModelFacts(ref=ref, kind=kind, root=str(root), files=files)
    facts.config = _read_json(cfg_path, ref)
    gen = root / "generation_config.json"
    facts.generation_config = _read_json(gen, ref) if gen.is_file() else None
    facts.tokenizer = read_tokenizer({n: root / n for n in SMALL_FILES if (root / n).is_file()})
    facts.weight_format, facts.weight_files = choose_weight_files(files, lambda n: _read_json(root / n, ref))
    if not facts.weight_files:
        # weight_files() also knows the engine's rules; agree with it when it finds more.
        facts.weight_files = weight_files(root)
    if facts.weight_format == "safetensors":
        for f in facts.weight_files:
            p = root / f
            if not p.is_file():
                raise ModelError(f"model {ref}: the index names {f} but the file is missing", fix="re-download the model")
            for name, e in read_safetensors_header(p, strict_dtypes=False).items():
                facts.tensors[name] = TensorInfo(name, f, e.dtype, e.shape, e.end - e.start)
    facts.license = readme_license(root / "README.md")
    return facts


def _read_json(p: Path, ref: str) -> dict[str, Any]:
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise ModelError(f"model {ref}: cannot read {p.name} ({e.strerror or e})") from None
    except ValueError as e:
        raise ModelError(f"model {ref}: {p.name} is not valid JSON ({e})", fix="re-download the file") from None
    if not isinstance(data, dict):
        raise ModelError(f"model {ref}: {p.name} is not a JSON object", fix="re-download the file")
    return data


_LICENSE_RE = re.compile(r"^license:\s*['\"]?([\w.\-+]+)", re.MULTILINE)


def readme_license(p: Path) -> str | None:
    """The `license:` of a model card's YAML front matter, if any."""
    try:
        with open(p, encoding="utf-8", errors="replace") as f:
            head = f.read(8192)
    except OSError:
        return None
    if not head.startswith("---"):
        return None
    front = head.split("\n---", 1)[0]
    m = _LICENSE_RE.search(front)
    return m.group(1) if m else None


def expand(path: str) -> Path:
    """A user path with ~ expanded, made absolute."""
    return Path(os.path.expanduser(path)).resolve()
