"""Resources a merge config will need: output size, bytes to download, peak RAM / VRAM, disk.

The output is derived here from the config and the models' tensor headers, simply (whole-model
methods keep the base model's tensors; slices stack layer ranges, pre-layer tensors from the
first slice and post-layer tensors from the last).
HOOK: once mergetui/engine/plan.py lands, `summarize_output` should be built from
`build_plan(config, sources)` (its per-tensor entries and totals) so that the check, the dry
run and the executor agree by construction; the rest of this module only reads OutputSummary.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mergetui.engine.st_header import ST_DTYPE_SIZES
from mergetui.inspect.findings import ERROR, WARNING, Finding
from mergetui.inspect.profile import Profile

if TYPE_CHECKING:
    from mergetui.engine.config import MergeConfig  # pydantic: imported only when a config is checked

CONFIG_DTYPES = {"float32": "F32", "fp32": "F32", "float16": "F16", "fp16": "F16", "bfloat16": "BF16", "bf16": "BF16", "float64": "F64"}
IN_FLIGHT = 4  # output tensors the executor works on at once (engine default; keep in step)
PROCESS_BASE = 600 * 1024**2  # Python + torch + buffers before any tensor is read
COMPUTE_BYTES = 4  # tensors are combined in float32


@dataclass
class OutputSummary:
    """The merged model as the config describes it."""

    layers: int
    tensors: int
    parameters: int
    nbytes: int
    dtype: str
    inputs: int  # models combined into each tensor (at most)
    largest: list[int] = field(default_factory=list)  # numel of the IN_FLIGHT largest output tensors
    needed: dict[str, dict[str, int | None]] = field(default_factory=dict)  # model -> weight file -> size


@dataclass
class Estimate:
    """What a config's merge will cost, and what this machine has."""

    output: OutputSummary
    device: str
    download_bytes: int
    download_files: int
    cached_bytes: int  # needed bytes already in the HF cache (or local)
    peak_ram: int
    peak_vram: int
    ram_available: int | None
    vram_free: int | None
    out_dir: str
    out_free: int | None
    cache_dir: str
    cache_free: int | None
    same_volume: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


def _st_dtype(name: str | None) -> str | None:
    return CONFIG_DTYPES.get(name) if name else None


def summarize_output(config: MergeConfig, by_ref: dict[str, Profile]) -> OutputSummary:
    """Layer count, tensors, parameters, bytes and needed input files of the merge's output."""
    needed: dict[str, dict[str, int | None]] = {}

    def need(ref: str, names: list[str] | None) -> None:
        p = by_ref.get(ref)
        if p is None:
            return
        files = needed.setdefault(ref, {})
        if names is None or not p.tensors:  # whole model, or headers unknown (.bin)
            files.update(p.weight_files)
        else:
            for n in names:
                t = p.tensors.get(n)
                if t is not None:
                    files[t.file] = p.weight_files.get(t.file)

    shapes: list[tuple[int, str]] = []  # (numel, source dtype) per output tensor
    if config.slices:
        layers = 0
        inputs = 1
        for si, sl in enumerate(config.slices):
            srcs = sl.sources
            base = sl.base_model or config.base_model
            refs = [s.model for s in srcs] + ([base] if base and base not in {s.model for s in srcs} else [])
            inputs = max(inputs, len(refs))
            first = by_ref.get(srcs[0].model)
            a, b = srcs[0].layer_range
            layers += max(0, b - a)
            for ref, rng in [(s.model, s.layer_range) for s in srcs] + ([(base, srcs[0].layer_range)] if base else []):
                p = by_ref.get(ref)
                if p is None:
                    continue
                names = _layer_tensors(p, *rng)
                if si == 0:
                    names += _outside_tensors(p, pre=True)
                if si == len(config.slices) - 1:
                    names += _outside_tensors(p, pre=False)
                need(ref, names)
            if first is not None and first.tensors:
                names = _layer_tensors(first, a, b)
                if si == 0:
                    names += _outside_tensors(first, pre=True)
                if si == len(config.slices) - 1:
                    names += _outside_tensors(first, pre=False)
                shapes += [(_numel(first.tensors[n].shape), first.tensors[n].dtype) for n in names]
    else:
        refs = config.referenced_models()
        template = by_ref.get(config.base_model or "") or next((by_ref[r] for r in refs if r in by_ref), None)
        layers = template.layers or 0 if template else 0
        inputs = len(refs)
        for r in refs:
            need(r, None)
        if template is not None:
            shapes = [(_numel(t.shape), t.dtype) for t in template.tensors.values()]
            if not shapes and template.parameters:  # .bin: no headers, count only
                shapes = [(template.parameters, next(iter(template.dtypes), "F32"))]
    dtype = _st_dtype(config.out_dtype) or _st_dtype(config.dtype) or _dominant(shapes) or "F32"
    params = sum(n for n, _ in shapes)
    return OutputSummary(
        layers=layers,
        tensors=len(shapes),
        parameters=params,
        nbytes=params * ST_DTYPE_SIZES.get(dtype, 2),
        dtype=dtype,
        inputs=inputs,
        largest=sorted((n for n, _ in shapes), reverse=True)[:IN_FLIGHT],
        needed=needed,
    )


def _layer_tensors(p: Profile, a: int, b: int) -> list[str]:
    if not p.layer_prefix:
        return []
    pat = re.compile(rf"^{re.escape(p.layer_prefix)}\.(\d+)\.")
    out = []
    for n in p.tensors:
        m = pat.match(n)
        if m and a <= int(m.group(1)) < b:
            out.append(n)
    return out


def _outside_tensors(p: Profile, *, pre: bool) -> list[str]:
    """Non-layer tensors on the input side (pre) or the output side (post)."""
    from mergetui.engine.architecture import find_layers

    lm = find_layers(p.tensors, p.num_layers)
    return list(lm.pre if pre else lm.post)


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _dominant(shapes: list[tuple[int, str]]) -> str | None:
    count: dict[str, int] = {}
    for n, d in shapes:
        count[d] = count.get(d, 0) + n
    return max(count, key=count.__getitem__) if count else None


def estimate(
    config: MergeConfig,
    profiles: list[Profile],
    *,
    out_dir: str | Path | None = None,
    device: str = "cpu",
) -> Estimate:
    """Resource estimate of merging `config` with the models profiled in `profiles`."""
    by_ref = {p.ref: p for p in profiles}
    out = summarize_output(config, by_ref)
    download = cached = files = 0
    for ref, needed in out.needed.items():
        p = by_ref[ref]
        for name, size in needed.items():
            size = size or 0
            if p.kind == "hub" and p.repo_id and p.commit and _missing(p.repo_id, p.commit, name):
                download += size
                files += 1
            else:
                cached += size
    src_bytes = max((ST_DTYPE_SIZES.get(d, 2) for p in profiles for d in p.dtypes), default=2)
    out_bytes = ST_DTYPE_SIZES.get(out.dtype, 2)
    reads = sum(n * (out.inputs * src_bytes + out_bytes) for n in out.largest)
    compute = sum(n * (out.inputs + 1) * COMPUTE_BYTES for n in out.largest)
    gpu = device.startswith("cuda")
    peak_ram = PROCESS_BASE + reads + (0 if gpu else compute)
    peak_vram = compute if gpu else 0
    out_path = Path(out_dir) if out_dir else Path.cwd()
    cache_path = _hf_cache_dir()
    out_vol, cache_vol = _existing(out_path), _existing(cache_path)
    return Estimate(
        output=out,
        device=device,
        download_bytes=download,
        download_files=files,
        cached_bytes=cached,
        peak_ram=peak_ram,
        peak_vram=peak_vram,
        ram_available=_ram_available(),
        vram_free=_vram_free(device) if gpu else None,
        out_dir=str(out_path),
        out_free=_free(out_vol),
        cache_dir=str(cache_path),
        cache_free=_free(cache_vol),
        same_volume=_same_device(out_vol, cache_vol),
    )


def resource_findings(est: Estimate) -> list[Finding]:
    """Shortages the estimate shows: disk (error), RAM and VRAM (warnings)."""
    out: list[Finding] = []
    gb = human_bytes
    if est.same_volume:
        checks = [(est.out_dir, est.out_free, est.output.nbytes + est.download_bytes, "the output and the downloads (same volume)")]
    else:
        checks = [(est.out_dir, est.out_free, est.output.nbytes, "the output"), (est.cache_dir, est.cache_free, est.download_bytes, "the downloads (HF cache)")]
    for where, free, need, what in checks:
        if free is not None and need > free:
            out.append(
                Finding(
                    "disk-short",
                    ERROR,
                    f"not enough disk for {what}: {gb(need)} needed, {gb(free)} free at {where}",
                    "The merge would stop part-way when the disk fills up.",
                    "free some space, choose another output directory, or point HF_HOME / HF_HUB_CACHE at a larger volume",
                )
            )
    if est.ram_available is not None and est.peak_ram > est.ram_available:
        out.append(
            Finding(
                "ram-short",
                WARNING,
                f"peak RAM ~{gb(est.peak_ram)} may exceed the {gb(est.ram_available)} available",
                "The merge streams tensors, but the largest ones (embeddings) are held for every input at once.",
                "close other programs, or merge on a device with more memory (--device cuda)",
            )
        )
    if est.vram_free is not None and est.peak_vram > est.vram_free:
        out.append(
            Finding(
                "vram-short",
                WARNING,
                f"peak VRAM ~{gb(est.peak_vram)} may exceed the {gb(est.vram_free)} free on {est.device}",
                "The largest tensors are combined on the GPU in float32.",
                "free GPU memory, or merge on the CPU (--device cpu)",
            )
        )
    return out


def _missing(repo_id: str, commit: str, filename: str) -> bool:
    from mergetui.inspect.hub import cached_file

    return cached_file(repo_id, commit, filename) is None


def _hf_cache_dir() -> Path:
    from mergetui.inspect.hub import hf_cache_dir

    return hf_cache_dir()


def _existing(p: Path) -> Path:
    p = Path(os.path.abspath(os.path.expanduser(p)))
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _free(p: Path) -> int | None:
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return None


def _same_device(a: Path, b: Path) -> bool:
    try:
        return os.stat(a).st_dev == os.stat(b).st_dev
    except OSError:
        return False


def _ram_available() -> int | None:
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:  # psutil missing or unsupported platform: show "n/a", never fail
        return None


def _vram_free(device: str) -> int | None:
    """Free memory of the GPU `device` names, via NVML (no torch); None when unknown."""
    try:
        import pynvml

        index = int(device.split(":", 1)[1]) if ":" in device else 0
        pynvml.nvmlInit()
        try:
            return int(pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(index)).free)
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no NVIDIA driver / library: "n/a"
        return None


def human_bytes(n: int | None) -> str:
    """1234567890 -> '1.15 GiB'."""
    if n is None:
        return "n/a"
    x = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(x) < 1024 or unit == "TiB":
            return f"{x:.0f} {unit}" if unit == "B" else f"{x:.2f} {unit}"
        x /= 1024
    return f"{x:.2f} TiB"
