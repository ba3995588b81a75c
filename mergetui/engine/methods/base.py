"""What a merge method is, what it receives, and the chunked helpers methods are built from.

A method sees one output tensor at a time: the input tensors in their stored dtype, and the
parameters already resolved for that tensor. Methods compute in float32 (or float64) over row
chunks, so scratch memory stays bounded whatever the size of the tensor, and cast once into
the output dtype.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Literal, Sequence

import torch

REQUIRED: Any = object()  # sentinel default: the user must give this parameter

BasePolicy = Literal["ignored", "required", "optional"]


@dataclass(frozen=True)
class ParamSpec:
    """One parameter a method takes, as named in mergekit YAML."""

    name: str
    default: Any = REQUIRED
    per_model: bool = False  # resolved once per input model (weight, density) or once per tensor (t)
    type: type = float
    help: str = ""

    @property
    def required(self) -> bool:
        """Whether the config must supply this parameter."""
        return self.default is REQUIRED


@dataclass(frozen=True)
class MethodSpec:
    """A merge method: its name, contract and pure merge function."""

    name: str
    description: str
    merge: Callable[["MergeInputs"], torch.Tensor]
    params: tuple[ParamSpec, ...] = ()
    base: BasePolicy = "ignored"
    min_models: int = 1  # counting every input, the base included
    max_models: int | None = None
    randomized: bool = False  # uses MergeInputs.generator (dare, della, ...)
    reference: str = ""

    def param(self, name: str) -> ParamSpec | None:
        """The spec of parameter `name`, or None if the method does not take it."""
        for p in self.params:
            if p.name == name:
                return p
        return None


@dataclass
class MergeInputs:
    """Everything a method needs to produce one output tensor."""

    name: str  # output tensor name, for messages
    tensors: Sequence[torch.Tensor]  # stored dtype, identical shapes, base included
    base_index: int | None
    model_params: Sequence[dict[str, Any]]  # one dict per tensor (per-model parameters)
    params: dict[str, Any]  # per-tensor (shared) parameters
    out_dtype: torch.dtype
    compute_dtype: torch.dtype = torch.float32
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    generator: torch.Generator | None = None
    chunk_elements: int = 1 << 22

    @property
    def shape(self) -> torch.Size:
        """Shape shared by every input and the output."""
        return self.tensors[0].shape

    @property
    def base(self) -> torch.Tensor | None:
        """The base model's tensor, if the merge has one."""
        return None if self.base_index is None else self.tensors[self.base_index]

    @property
    def others(self) -> list[int]:
        """Indices of the non-base inputs, in config order."""
        return [i for i in range(len(self.tensors)) if i != self.base_index]

    def values(self, key: str, indices: Sequence[int] | None = None) -> list[Any]:
        """Per-model parameter `key` for the given inputs (default: the non-base ones)."""
        idx = self.others if indices is None else indices
        return [self.model_params[i][key] for i in idx]

    def chunks(self) -> list[slice]:
        """Row slices (along dim 0) that keep each chunk near chunk_elements."""
        return row_chunks(self.shape, self.chunk_elements)

    def load(self, index: int, rows: slice | None = None) -> torch.Tensor:
        """Input `index` (optionally only `rows`) in the compute dtype on the compute device."""
        t = self.tensors[index]
        if rows is not None and t.ndim > 0:
            t = t[rows]
        return t.to(device=self.device, dtype=self.compute_dtype, non_blocking=False)


def row_chunks(shape: Sequence[int], chunk_elements: int) -> list[slice]:
    """Split dim 0 of `shape` into slices of about chunk_elements elements each."""
    if len(shape) == 0:
        return [slice(None)]
    rows = int(shape[0])
    per_row = 1
    for d in shape[1:]:
        per_row *= int(d)
    step = max(1, chunk_elements // max(1, per_row))
    return [slice(s, min(rows, s + step)) for s in range(0, max(rows, 1), step)] if rows else [slice(0, 0)]


def elementwise(
    inp: MergeInputs,
    fn: Callable[[list[torch.Tensor], slice], torch.Tensor],
    indices: Sequence[int] | None = None,
) -> torch.Tensor:
    """Apply `fn(chunks_of_inputs, rows)` chunk by chunk and assemble the output tensor.

    `fn` gets the chosen inputs (default: all) as compute-dtype chunks on the compute device
    and returns that chunk of the result; it is cast to out_dtype and copied to the CPU.
    """
    idx = list(range(len(inp.tensors))) if indices is None else list(indices)
    out = torch.empty(inp.shape, dtype=inp.out_dtype)
    for rows in inp.chunks():
        xs = [inp.load(i, rows) for i in idx]
        res = fn(xs, rows)
        if out.ndim == 0:
            out.copy_(res.to(inp.out_dtype).cpu())
        else:
            out[rows] = res.to(inp.out_dtype).cpu()
    return out


def chunked_sum(
    inp: MergeInputs, fn: Callable[[list[torch.Tensor], slice], torch.Tensor], indices: Sequence[int] | None = None
) -> torch.Tensor:
    """Sum over chunks of `fn(chunks, rows)` (a reduction such as a dot product), in float64."""
    idx = list(range(len(inp.tensors))) if indices is None else list(indices)
    total: torch.Tensor | None = None
    for rows in inp.chunks():
        part = fn([inp.load(i, rows) for i in idx], rows).to(torch.float64)
        total = part if total is None else total + part
    assert total is not None
    return total


def kth_largest(values: Callable[[slice], torch.Tensor], shape: Sequence[int], k: int, chunk_elements: int = 1 << 22) -> float:
    """The k-th largest (1-based) of the values `values(rows)` gives for row slices of `shape`.

    A threshold, not a sort: bounds around the k-th value are guessed from an evenly strided
    sample of rows, then one pass counts the values above the upper bound and gathers the few
    between the bounds, whose exact k-th value is then picked. If the guess misses, an exact
    radix select over the float32 bit patterns (two histogram passes) answers instead.
    Values must be non-negative (magnitudes).
    """
    if k <= 0:
        return float("inf")
    rows_total = int(shape[0]) if len(shape) else 1
    per_row = max(1, int(torch.Size(shape[1:]).numel())) if len(shape) else 1
    total = rows_total * per_row
    if k > total:
        return 0.0
    chunks = row_chunks(shape, chunk_elements)
    if total <= chunk_elements:  # small: direct
        v = values(chunks[0] if len(shape) else slice(None)).reshape(-1).float()
        return float(torch.topk(v, k).values[-1].item()) if k <= 1024 else float(torch.kthvalue(v.cpu(), total - k + 1).values.item())
    stride = max(1, rows_total // max(1, (1 << 20) // per_row))
    sample = values(slice(0, rows_total, stride)).reshape(-1).float().cpu()
    q = 1.0 - k / total  # quantile of the k-th largest
    n = sample.numel()
    margin = 4.0 * (q * (1 - q) * n) ** 0.5 + 16  # ~4 sigma in sample ranks
    lo_rank = max(0, int(q * n - margin))
    hi_rank = min(n - 1, int(q * n + margin))
    sorted_sample = torch.sort(sample).values
    lo = float(sorted_sample[lo_rank])
    hi = float(sorted_sample[hi_rank])
    above = 0
    band: list[torch.Tensor] = []
    band_size = 0
    for rows in chunks:
        v = values(rows).reshape(-1)
        above += int((v > hi).sum().item())
        sel = v[(v >= lo) & (v <= hi)]
        band_size += sel.numel()
        if band_size > 8 * chunk_elements:  # sample was unrepresentative: stop collecting
            band = []
            break
        band.append(sel.float().cpu())
    if band and above < k <= above + band_size:
        b = torch.cat(band)
        return float(torch.kthvalue(b, b.numel() - (k - above) + 1).values.item())
    return _radix_kth_largest(values, chunks, k)


def _radix_kth_largest(values: Callable[[slice], torch.Tensor], chunks: list[slice], k: int) -> float:
    """Exact k-th largest non-negative value by two 16-bit histogram passes."""
    hist_hi = torch.zeros(1 << 16, dtype=torch.int64)
    for rows in chunks:
        bits = values(rows).float().contiguous().view(torch.int32).reshape(-1).cpu()
        hist_hi += torch.bincount((bits >> 16).to(torch.int64), minlength=1 << 16)
    from_top = hist_hi.flip(0).cumsum(0)
    pos = int(torch.searchsorted(from_top, torch.tensor(k)).item())
    bucket = (1 << 16) - 1 - pos
    above = int(from_top[pos - 1].item()) if pos > 0 else 0
    hist_lo = torch.zeros(1 << 16, dtype=torch.int64)
    for rows in chunks:
        bits = values(rows).float().contiguous().view(torch.int32).reshape(-1).cpu()
        sel = bits[(bits >> 16) == bucket]
        if sel.numel():
            hist_lo += torch.bincount((sel & 0xFFFF).to(torch.int64), minlength=1 << 16)
    pos_lo = int(torch.searchsorted(hist_lo.flip(0).cumsum(0), torch.tensor(k - above)).item())
    low = (1 << 16) - 1 - pos_lo
    return float(torch.tensor([(bucket << 16) | low], dtype=torch.int32).view(torch.float32).item())
