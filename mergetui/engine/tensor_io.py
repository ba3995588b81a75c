"""Reading single tensors from safetensors / .bin files, and writing shards at fixed offsets.

Reads use pread into a fresh buffer instead of mmap, so a merge's resident memory holds only
the tensors in flight, never pages of whole input files. Writes place each tensor's bytes at
the offset the shard header (written first) promised, so tensors can finish in any order.
"""

from __future__ import annotations

import json
import os
import struct
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from mergetui.engine.errors import ModelError

ST_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
TORCH_TO_ST = {v: k for k, v in ST_DTYPES.items()}
MAX_HEADER = 100 * 1024 * 1024


def dtype_size(st_dtype: str) -> int:
    """Bytes per element of a safetensors dtype code."""
    return torch.empty((), dtype=ST_DTYPES[st_dtype]).element_size()


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor lives: file, dtype, shape and absolute byte range."""

    name: str
    file: Path
    dtype: str  # safetensors code: BF16, F32, ...
    shape: tuple[int, ...]
    start: int  # absolute offset in file; -1 for .bin entries
    end: int

    @property
    def nbytes(self) -> int:
        """Size of the tensor's data in bytes."""
        n = 1
        for d in self.shape:
            n *= d
        return n * dtype_size(self.dtype)

    @property
    def numel(self) -> int:
        """Number of elements."""
        n = 1
        for d in self.shape:
            n *= d
        return n


def read_safetensors_header(path: Path) -> dict[str, TensorEntry]:
    """Parse and validate a safetensors header; raise ModelError for a corrupt file."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) < 8:
                raise ModelError(f"{path}: not a safetensors file (shorter than 8 bytes)", fix="re-download the file")
            (hlen,) = struct.unpack("<Q", raw)
            if hlen > MAX_HEADER or 8 + hlen > size:
                raise ModelError(f"{path}: corrupt or truncated safetensors header", fix="re-download the file")
            header = json.loads(f.read(hlen))
    except (OSError, ValueError, UnicodeDecodeError) as e:
        if isinstance(e, ModelError):
            raise
        raise ModelError(f"{path}: cannot read safetensors header ({e})", fix="re-download the file") from None
    return entries_from_header(header, path, 8 + hlen, size)


def entries_from_header(header: dict[str, Any], path: Path, data_start: int, file_size: int | None) -> dict[str, TensorEntry]:
    """TensorEntry per tensor of a parsed header, checked against the file's size."""
    out: dict[str, TensorEntry] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = info["dtype"]
            shape = tuple(int(d) for d in info["shape"])
            b, e = (int(x) for x in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise ModelError(f"{path}: corrupt safetensors header entry for tensor {name!r}", fix="re-download the file") from None
        if dtype not in ST_DTYPES:
            raise ModelError(f"{path}: tensor {name!r} has unsupported dtype {dtype}", fix="use fp16, bf16 or fp32 weights")
        entry = TensorEntry(name, path, dtype, shape, data_start + b, data_start + e)
        if e - b != entry.nbytes or (file_size is not None and data_start + e > file_size):
            raise ModelError(
                f"{path}: tensor {name!r} runs past the end of the file (truncated download?)",
                fix="re-download the file",
            )
        out[name] = entry
    return out


def read_tensor(entry: TensorEntry) -> torch.Tensor:
    """Read one tensor's bytes with pread into its own buffer."""
    if entry.start < 0:
        return _read_bin_tensor(entry)
    buf = torch.empty(entry.nbytes, dtype=torch.uint8)
    if entry.nbytes:
        view = memoryview(buf.numpy())
        fd = os.open(entry.file, os.O_RDONLY)
        try:
            got = 0
            while got < entry.nbytes:
                n = os.preadv(fd, [view[got:]], entry.start + got)
                if n <= 0:
                    raise ModelError(f"{entry.file}: truncated while reading tensor {entry.name!r}", fix="re-download the file")
                got += n
        finally:
            os.close(fd)
    return buf.view(ST_DTYPES[entry.dtype]).reshape(entry.shape)


# .bin checkpoints: torch.load with mmap, one state dict per file, kept for the merge.
_bin_cache: dict[Path, dict[str, torch.Tensor]] = {}
_bin_lock = threading.Lock()


def load_bin_index(path: Path) -> dict[str, TensorEntry]:
    """Entries of a PyTorch .bin checkpoint (loaded lazily with mmap, weights only)."""
    sd = _bin_state_dict(path)
    out = {}
    for name, t in sd.items():
        if not isinstance(t, torch.Tensor) or t.dtype not in TORCH_TO_ST:
            continue
        out[name] = TensorEntry(name, path, TORCH_TO_ST[t.dtype], tuple(t.shape), -1, -1)
    return out


def _bin_state_dict(path: Path) -> dict[str, torch.Tensor]:
    with _bin_lock:
        sd = _bin_cache.get(path)
        if sd is None:
            try:
                sd = torch.load(path, mmap=True, weights_only=True, map_location="cpu")
            except Exception as e:  # torch raises many types for a bad pickle
                raise ModelError(f"{path}: cannot load PyTorch checkpoint ({type(e).__name__}: {e})", fix="re-download the file or convert it to safetensors") from None
            if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
                sd = sd["state_dict"]
            _bin_cache[path] = sd
        return sd


def _read_bin_tensor(entry: TensorEntry) -> torch.Tensor:
    return _bin_state_dict(entry.file)[entry.name].clone()


@dataclass(frozen=True)
class ShardLayout:
    """Names, dtypes, shapes and offsets of one output shard, fixed before writing."""

    filename: str
    header: bytes  # 8-byte length + padded JSON
    offsets: dict[str, int]  # absolute byte offset of each tensor
    size: int  # total file size


def layout_shard(filename: str, tensors: Sequence[tuple[str, str, tuple[int, ...]]], metadata: dict[str, str] | None = None) -> ShardLayout:
    """Compute a shard's header and offsets from (name, st_dtype, shape) in file order."""
    header: dict[str, Any] = {"__metadata__": metadata or {"format": "pt"}}
    pos = 0
    rel: dict[str, int] = {}
    for name, dtype, shape in tensors:
        n = 1
        for d in shape:
            n *= d
        nbytes = n * dtype_size(dtype)
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [pos, pos + nbytes]}
        rel[name] = pos
        pos += nbytes
    js = json.dumps(header, separators=(",", ":")).encode()
    js += b" " * (-len(js) % 8)  # data must start 8-byte aligned
    start = 8 + len(js)
    return ShardLayout(filename, struct.pack("<Q", len(js)) + js, {k: start + v for k, v in rel.items()}, start + pos)


class ShardWriter:
    """An output shard opened with its header written and its size reserved."""

    def __init__(self, path: Path, layout: ShardLayout, fresh: bool = True) -> None:
        self.path = path
        self.layout = layout
        flags = os.O_RDWR | os.O_CREAT
        self.fd = os.open(path, flags, 0o644)
        if fresh:
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, layout.header, 0)
            os.ftruncate(self.fd, layout.size)

    def write(self, name: str, tensor: torch.Tensor) -> int:
        """Write a finished tensor at its reserved offset; returns bytes written."""
        data = tensor.detach().contiguous().cpu()
        nbytes = data.numel() * data.element_size()
        if nbytes == 0:
            return 0
        mv = memoryview(data.view(torch.uint8).reshape(-1).numpy())
        off = self.layout.offsets[name]
        done = 0
        while done < nbytes:
            done += os.pwrite(self.fd, mv[done:], off + done)
        return nbytes

    def close(self) -> None:
        """Flush to disk and close."""
        if self.fd >= 0:
            os.fsync(self.fd)
            os.close(self.fd)
            self.fd = -1
