"""A Hub repo as a ModelSource: plan from headers, then download only the files the merge reads.

The config and every tensor's metadata come from mergetui.inspect.hub (cached per commit,
range reads, no weight bytes). The source is pinned to the commit it was planned from, so
the files downloaded later are exactly the ones that were checked. Downloads go into the
standard HF cache with hf_hub_download, one file at a time, so a frankenmerge that uses
layers 0-7 of a sharded model fetches only the shards holding them.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

from mergetui.engine.errors import ModelError
from mergetui.engine.sources import SMALL_FILES, ModelSource, TensorMeta, read_weight_file
from mergetui.engine.st_header import TensorEntry


class HubSource(ModelSource):
    """Model `org/name[@revision]` on the Hugging Face Hub (or in its local cache when offline)."""

    def __init__(self, ref: str) -> None:
        self.ref = ref

    @cached_property
    def _facts(self) -> Any:
        from mergetui.inspect.hub import hub_facts

        return hub_facts(self.ref)

    @property
    def repo_id(self) -> str:
        """The repo id without revision."""
        return self._facts.repo_id

    @property
    def commit(self) -> str:
        """The commit every file is read at."""
        return self._facts.commit

    def config(self) -> dict[str, Any]:
        return self._facts.config

    def tensors(self) -> dict[str, TensorMeta]:
        return self._tensors

    @cached_property
    def _tensors(self) -> dict[str, TensorMeta]:
        facts = self._facts
        if facts.weight_format == "safetensors":
            return {n: TensorMeta(n, t.file, t.dtype, t.shape) for n, t in facts.tensors.items()}
        if facts.weight_format == "bin":
            # .bin checkpoints have no readable header: their shapes are known only once downloaded.
            root = self.fetch(None)
            out: dict[str, TensorMeta] = {}
            for f in facts.weight_files:
                for n, e in read_weight_file(root / f).items():
                    out[n] = TensorMeta(n, f, e.dtype, e.shape)
            return out
        raise ModelError(f"model {self.ref}: no weight files (*.safetensors or *.bin) in the repo", fix="use a full transformers checkpoint")

    def weight_files(self) -> dict[str, int | None]:
        """The weight files a loader uses, with sizes."""
        return {f: self._facts.files.get(f) for f in self._facts.weight_files}

    def missing_bytes(self, files: set[str] | None = None) -> int:
        """Bytes of `files` (default: all weights) that still have to be downloaded."""
        from mergetui.inspect.hub import missing_bytes

        wanted = self.weight_files() if files is None else {f: self._facts.files.get(f) for f in files}
        return missing_bytes(self.repo_id, self.commit, wanted)

    def fetch(self, files: set[str] | None = None) -> Path:
        from mergetui.inspect.hub import cached_file, download, hub_errors, snapshot_dir

        facts = self._facts
        wanted = set(facts.weight_files) if files is None else set(files)
        unknown = wanted - set(facts.files)
        if unknown:
            raise ModelError(f"model {self.ref}: no file {sorted(unknown)[0]} in the repo", fix="re-run `mergetui check`; the repo may have changed")
        small = [f for f in SMALL_FILES if f in facts.files]
        todo = [f for f in small + sorted(wanted) if cached_file(facts.repo_id, facts.commit, f) is None]
        with hub_errors(facts.repo_id, facts.revision):
            for f in todo:
                # progress bars only for weight files: the small ones finish before a bar could draw
                download(facts.repo_id, facts.commit, f, quiet=f in small)
        return snapshot_dir(facts.repo_id, facts.commit)

    def local_entries(self) -> dict[str, TensorEntry]:
        root = snapshot_dir_of(self)
        out: dict[str, TensorEntry] = {}
        for f in sorted({m.file for m in self.tensors().values()}):
            p = root / f
            if p.exists():
                out.update(read_weight_file(p))
        return out


def snapshot_dir_of(src: HubSource) -> Path:
    """The HF cache snapshot directory a HubSource downloads into."""
    from mergetui.inspect.hub import snapshot_dir

    return snapshot_dir(src.repo_id, src.commit)
