"""What a merge method is, what it receives, and the chunked helpers methods are built from.

A method sees one output tensor at a time: the input tensors in their stored dtype, and the
parameters already resolved for that tensor. Methods compute in float32 (or float64) over row
chunks, so scratch memory stays bounded whatever the size of the tensor, and cast once into
the output dtype.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Sequence

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
    # per-model but asked only of the non-base models (mergekit's PerNonBase: a base listed
    # without parameters is fine); the base's dict may then lack it
    non_base: bool = False

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
    min_others: int = 0  # counting the inputs besides the base (nuslerp: 2, model_stock: 2+)
    max_others: int | None = None
    randomized: bool = False  # uses MergeInputs.generator (dare, della, ...)
    reference: str = ""
    # For a tensor whose output is byte-for-byte one input (passthrough without scale): given
    # (params, model_params), the index of that input, else None. Lets the executor copy
    # bytes file to file instead of computing.
    copy_of: Callable[[dict[str, Any], Sequence[dict[str, Any]]], int | None] | None = None

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
    # 256K elements (1 MiB of fp32 per buffer) keeps a method's scratch in the CPU caches: on a
    # 2-core box a ties merge of 32000x2048 bf16 tensors ran 2x faster than with 4M-element chunks
    chunk_elements: int = 1 << 18

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

    def vector_chunks(self) -> list[slice]:
        """Row slices that hold whole last-dim vectors: the whole tensor when it has < 2 dims."""
        # a 1-D tensor is one vector (mergekit's per-row methods unsqueeze it); they are small
        return self.chunks() if len(self.shape) >= 2 else [slice(None)]

    def load(self, index: int, rows: slice | None = None, writable: bool = False) -> torch.Tensor:
        """Input `index` (optionally only `rows`) in the compute dtype on the compute device.

        Without `writable` the result may share memory with the input (an fp32 input on the
        compute device); with it, the result is always a fresh tensor safe to modify in place.
        """
        t = self.tensors[index]
        if rows is not None and t.ndim > 0:
            t = t[rows]
        return t.to(device=self.device, dtype=self.compute_dtype, copy=writable)


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
    chunks: Sequence[slice] | None = None,
) -> torch.Tensor:
    """Apply `fn(chunks_of_inputs, rows)` chunk by chunk and assemble the output tensor.

    `fn` gets the chosen inputs (default: all) as fresh compute-dtype chunks on the compute
    device, which it may modify in place, and returns that chunk of the result; it is cast to
    out_dtype and copied to the CPU. `chunks` overrides the row slices (default: inp.chunks()).
    """
    idx = list(range(len(inp.tensors))) if indices is None else list(indices)
    out = torch.empty(inp.shape, dtype=inp.out_dtype)
    for rows in inp.chunks() if chunks is None else chunks:
        xs = [inp.load(i, rows, writable=True) for i in idx]
        res = fn(xs, rows)
        # copy_ casts and moves in one step, without a temporary in out_dtype
        (out if out.ndim == 0 else out[rows]).copy_(res)
        del xs, res
    return out


def chunked_sum(
    inp: MergeInputs,
    fn: Callable[[list[torch.Tensor], slice], torch.Tensor],
    indices: Sequence[int] | None = None,
    chunks: Sequence[slice] | None = None,
) -> torch.Tensor:
    """Sum over chunks of `fn(chunks, rows)` (a reduction such as a dot product), in float64.

    As in elementwise, `fn` gets fresh chunks it may modify in place.
    """
    idx = list(range(len(inp.tensors))) if indices is None else list(indices)
    total: torch.Tensor | None = None
    for rows in inp.chunks() if chunks is None else chunks:
        part = fn([inp.load(i, rows, writable=True) for i in idx], rows).to(torch.float64)
        total = part if total is None else total + part
    assert total is not None
    return total


@dataclass(frozen=True)
class TopK:
    """The k largest of a tensor's values, held as a threshold and two counts.

    Members are the values above `threshold` plus the first `k - above` values equal to it in
    flat (row-major) order, so exactly k values are selected even when many are tied, and the
    choice does not depend on how the tensor is chunked.
    """

    k: int
    threshold: float  # the k-th largest value (inf when k == 0)
    above: int  # values strictly greater than threshold
    equal: int  # values equal to threshold

    def selector(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """A one-pass function: each chunk's values, in flat order, to its member mask.

        The mask is 1.0 for members and 0.0 otherwise, as float32: float masks are what merges
        multiply by, and torch's bool-to-float paths are several times slower. Values are
        ranked as float32, like top_k ranks them.
        """
        thr, quota = self.threshold, self.k - self.above
        if self.above + self.equal <= self.k:  # every tie is a member: a plain comparison
            cmp = torch.ge if quota > 0 else torch.gt

            def plain(v: torch.Tensor) -> torch.Tensor:
                v = v.float()
                return cmp(v, thr, out=torch.empty_like(v))

            return plain
        seen = 0

        def select(v: torch.Tensor) -> torch.Tensor:
            nonlocal seen
            v = v.float()
            keep = torch.gt(v, thr, out=torch.empty_like(v))
            left = quota - seen
            if left <= 0:
                return keep
            eq = v == thr
            n_eq = _count(eq)
            if 0 < n_eq <= left:
                keep.masked_fill_(eq, 1.0)
            elif n_eq > left:  # this chunk holds the last member ties: take the first `left` of them
                rank = eq.reshape(-1).cumsum(0, dtype=torch.int32).reshape(eq.shape)
                keep.masked_fill_(eq & (rank <= left), 1.0)
            seen += n_eq
            return keep

        return select


_SAMPLE = 1 << 17  # values in the sample that brackets a threshold
_BAND_SLACK = 3  # give up collecting a band this many times larger than the sample predicts


def top_k(
    values: Callable[[slice], Sequence[torch.Tensor]],
    shape: Sequence[int],
    ks: Sequence[Sequence[int]],
    chunk_elements: int = 1 << 22,
) -> list[list[TopK]]:
    """Exact TopK thresholds for several value series in one pass over the data.

    `values(rows)` gives, for a row slice of `shape`, one tensor per series (e.g. |delta| of each
    model); `ks[s]` lists the k's wanted for series s. Values must be non-negative (magnitudes);
    they are ranked as float32 (a no-op for the usual float32 compute dtype).
    Bounds around each k-th value are read from an evenly strided sample of rows; one pass then
    counts the values above the upper bound and gathers the few between the bounds, whose exact
    k-th value is picked. If the sample misled, an exact radix select over the float32 bit
    patterns (two histogram passes) answers instead. Nothing is sorted but the sample and bands.
    """
    total = 1
    for d in shape:
        total *= int(d)
    chunks = row_chunks(shape, chunk_elements)
    out: list[list[TopK | None]] = [[None] * len(series) for series in ks]
    todo: list[tuple[int, int, int]] = []  # (series, position, k)
    for s, series in enumerate(ks):
        for j, k in enumerate(series):
            if k <= 0 or total == 0:
                out[s][j] = TopK(0, float("inf"), 0, 0)
            else:
                todo.append((s, j, min(int(k), total)))
    if not todo:
        return out  # type: ignore[return-value]

    if total <= chunk_elements:  # small: select directly
        vs = [v.reshape(-1).float() for v in values(chunks[0])]
        for s, j, k in todo:
            v = vs[s]
            thr = float(torch.kthvalue(v.cpu(), total - k + 1).values)
            out[s][j] = TopK(k, thr, _count(v > thr), _count(v == thr))
        return out  # type: ignore[return-value]

    rows_total = int(shape[0])
    per_row = max(1, total // max(1, rows_total))
    # a sample of ~1/16 of the values, 16K to 128K of them: bounds from a smaller one widen the band
    want = min(_SAMPLE, max(1 << 14, total // 16))
    stride = max(1, rows_total // max(1, want // per_row))
    samples = [v.reshape(-1).float().cpu() for v in values(slice(0, rows_total, stride))]
    bounds: dict[tuple[int, int], tuple[float, float]] = {}
    caps: dict[tuple[int, int], int] = {}
    for s, j, k in todo:
        sample = samples[s]
        n = sample.numel()
        q = 1.0 - k / total  # quantile of the k-th largest value
        margin = 4.0 * (q * (1 - q) * n) ** 0.5 + 16  # ~4 sigma in sample ranks
        lo_rank, hi_rank = int(q * n - margin), int(q * n + margin)
        # two selections (kthvalue is 1-based, ascending) cost a quarter of sorting the sample
        lo = float(torch.kthvalue(sample, lo_rank + 1).values) if lo_rank > 0 else float("-inf")
        hi = float(torch.kthvalue(sample, hi_rank + 1).values) if hi_rank < n - 1 else float("inf")
        bounds[(s, j)] = (lo, hi)
        # a band several times wider than the sample predicts means the sample misled
        caps[(s, j)] = int(_BAND_SLACK * (hi_rank - lo_rank + 1) / n * total) + chunk_elements

    above = {key: 0 for key in bounds}
    equal = {key: 0 for key in bounds}
    band: dict[tuple[int, int], list[torch.Tensor] | None] = {key: [] for key in bounds}
    band_size = {key: 0 for key in bounds}
    for rows in chunks:
        vs = [v.reshape(-1).float() for v in values(rows)]
        for s, j, _k in todo:
            key = (s, j)
            lo, hi = bounds[key]
            v = vs[s]
            above[key] += _count(v > hi)
            if lo == hi:  # the sample says the k-th value is one heavily tied value
                equal[key] += _count(v == hi)
                continue
            parts = band[key]
            if parts is None:
                continue
            # index through nonzero(): much faster than boolean-mask indexing for a sparse mask
            sel = v[torch.nonzero((v >= lo) & (v <= hi)).squeeze(1)]
            band_size[key] += sel.numel()
            if band_size[key] > caps[key]:  # sample was unrepresentative: radix select instead
                band[key] = None
            else:
                parts.append(sel.float().cpu())

    for s, j, k in todo:
        key = (s, j)
        lo, hi = bounds[key]
        res: TopK | None = None
        if lo == hi:
            if above[key] < k <= above[key] + equal[key]:
                res = TopK(k, hi, above[key], equal[key])
        elif band[key] is not None and above[key] < k <= above[key] + band_size[key]:
            b = torch.cat(band[key]) if band[key] else torch.empty(0)
            thr = float(torch.kthvalue(b, b.numel() - (k - above[key]) + 1).values)
            res = TopK(k, thr, above[key] + _count(b > thr), _count(b == thr))
        if res is None:
            res = _radix_top_k(lambda rows, s=s: values(rows)[s], chunks, k)
        out[s][j] = res
    return out  # type: ignore[return-value]


def _count(mask: torch.Tensor) -> int:
    """Number of True elements of a bool mask."""
    # summing the bytes into int32 is ~1.7x faster than count_nonzero or a bool sum on CPU
    dtype = torch.int32 if mask.numel() < 2**31 else torch.int64
    return int(mask.contiguous().view(torch.uint8).sum(dtype=dtype))


def kth_largest(values: Callable[[slice], torch.Tensor], shape: Sequence[int], k: int, chunk_elements: int = 1 << 22) -> float:
    """The k-th largest (1-based) of the non-negative values `values(rows)` gives for row slices of `shape`.

    Exact (equal to torch.kthvalue over all values); k > numel is clamped, k <= 0 gives inf.
    See top_k for the method.
    """
    return top_k(lambda rows: [values(rows)], shape, [[k]], chunk_elements)[0][0].threshold


def _radix_top_k(values: Callable[[slice], torch.Tensor], chunks: list[slice], k: int) -> TopK:
    """Exact TopK of non-negative values by two 16-bit histogram passes over the float32 bits."""

    def bits_of(rows: slice) -> torch.Tensor:
        # +0.0 for -0.0, so every bit pattern reads as a non-negative int32, ordered like the value
        return values(rows).float().abs().contiguous().view(torch.int32).reshape(-1).cpu()

    hist_hi = torch.zeros(1 << 16, dtype=torch.int64)
    for rows in chunks:
        hist_hi += torch.bincount((bits_of(rows) >> 16).to(torch.int64), minlength=1 << 16)
    from_top = hist_hi.flip(0).cumsum(0)
    pos = int(torch.searchsorted(from_top, torch.tensor(k)).item())
    bucket = (1 << 16) - 1 - pos
    above_bucket = int(from_top[pos - 1].item()) if pos > 0 else 0
    hist_lo = torch.zeros(1 << 16, dtype=torch.int64)
    for rows in chunks:
        bits = bits_of(rows)
        sel = bits[torch.nonzero((bits >> 16) == bucket).squeeze(1)]
        if sel.numel():
            hist_lo += torch.bincount((sel & 0xFFFF).to(torch.int64), minlength=1 << 16)
    lo_from_top = hist_lo.flip(0).cumsum(0)
    pos_lo = int(torch.searchsorted(lo_from_top, torch.tensor(k - above_bucket)).item())
    low = (1 << 16) - 1 - pos_lo
    above = above_bucket + (int(lo_from_top[pos_lo - 1].item()) if pos_lo > 0 else 0)
    thr = float(torch.tensor([(bucket << 16) | low], dtype=torch.int32).view(torch.float32).item())
    return TopK(k, thr, above, int(hist_lo[low].item()))
