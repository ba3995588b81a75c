"""safetensors headers without torch: dtype sizes, TensorEntry, header parsing.

Split out of tensor_io so `mergetui check` / `inspect` can read headers (local files or
HTTP range reads) without importing torch; tensor_io re-exports everything here.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mergetui.engine.errors import ModelError

# Element sizes of the dtypes a merge can read and write.
ST_DTYPE_SIZES: dict[str, int] = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
}
# Further dtypes found in quantized checkpoints: known to inspection, refused by the merge.
OTHER_DTYPE_SIZES: dict[str, int] = {"F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8}
MAX_HEADER = 100 * 1024 * 1024


def dtype_size(st_dtype: str) -> int:
    """Bytes per element of a safetensors dtype code."""
    size = ST_DTYPE_SIZES.get(st_dtype) or OTHER_DTYPE_SIZES.get(st_dtype)
    if size is None:
        raise ModelError(f"unsupported safetensors dtype {st_dtype}", fix="use fp16, bf16 or fp32 weights")
    return size


def numel(shape: tuple[int, ...]) -> int:
    """Number of elements of a shape."""
    n = 1
    for d in shape:
        n *= d
    return n


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
        if self.start >= 0 and self.dtype not in ST_DTYPE_SIZES:
            return self.end - self.start  # sub-byte / exotic dtypes: trust the offsets
        return numel(self.shape) * dtype_size(self.dtype)

    @property
    def numel(self) -> int:
        """Number of elements."""
        return numel(self.shape)


def header_length(prefix: bytes, where: str) -> int:
    """The JSON header length from a file's first 8 bytes; ModelError if implausible."""
    if len(prefix) < 8:
        raise ModelError(f"{where}: not a safetensors file (shorter than 8 bytes)", fix="re-download the file")
    (hlen,) = struct.unpack("<Q", prefix[:8])
    if hlen > MAX_HEADER:
        raise ModelError(f"{where}: corrupt safetensors header (claims {hlen} bytes)", fix="re-download the file")
    return hlen


def parse_header_json(raw: bytes, where: str) -> dict[str, Any]:
    """The header's JSON object; ModelError if it is not one."""
    try:
        header = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise ModelError(f"{where}: cannot read safetensors header ({e})", fix="re-download the file") from None
    if not isinstance(header, dict):
        raise ModelError(f"{where}: corrupt safetensors header (not a JSON object)", fix="re-download the file")
    return header


def read_safetensors_header(path: Path, *, strict_dtypes: bool = True) -> dict[str, TensorEntry]:
    """Parse and validate a safetensors header; raise ModelError for a corrupt file."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            hlen = header_length(f.read(8), str(path))
            if 8 + hlen > size:
                raise ModelError(f"{path}: corrupt or truncated safetensors header", fix="re-download the file")
            header = parse_header_json(f.read(hlen), str(path))
    except OSError as e:
        raise ModelError(f"{path}: cannot read safetensors header ({e.strerror or e})", fix="re-download the file") from None
    return entries_from_header(header, path, 8 + hlen, size, strict_dtypes=strict_dtypes)


def entries_from_header(
    header: dict[str, Any],
    path: Path,
    data_start: int,
    file_size: int | None,
    *,
    strict_dtypes: bool = True,
) -> dict[str, TensorEntry]:
    """TensorEntry per tensor of a parsed header, checked against the file's size.

    With strict_dtypes=False, dtypes a merge cannot use (FP8, packed ints) are kept so
    inspection can report a quantized model instead of failing on it.
    """
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
        known = dtype in ST_DTYPE_SIZES
        if strict_dtypes and not known:
            raise ModelError(f"{path}: tensor {name!r} has unsupported dtype {dtype}", fix="use fp16, bf16 or fp32 weights")
        entry = TensorEntry(name, path, dtype, shape, data_start + b, data_start + e)
        if (known and e - b != entry.nbytes) or e < b or (file_size is not None and data_start + e > file_size):
            raise ModelError(
                f"{path}: tensor {name!r} runs past the end of the file (truncated download?)",
                fix="re-download the file",
            )
        out[name] = entry
    return out
