"""Runs a Plan: reads inputs lazily, merges, writes shards in place, reports events.

Worker threads each take one output tensor at a time (ordered by input file and offset so
reads stay sequential), under a memory budget that bounds the tensors in flight. torch
kernels and pread/pwrite release the GIL, so reading, computing and writing overlap.
Everything goes into a hidden sibling directory that is renamed into place only when
complete; `resume` reuses it when the plan is the same.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
import zlib
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from mergetui.engine.errors import DiskSpaceError, MergeCancelled, MergeError, ModelError
from mergetui.engine.events import EventSink, make_event
from mergetui.engine.methods.base import MergeInputs
from mergetui.engine.output import write_metadata_files
from mergetui.engine.plan import Plan, PlannedTensor
from mergetui.engine.sources import ModelSource
from mergetui.engine.tensor_io import ST_DTYPES, ShardLayout, ShardWriter, TensorEntry, layout_shard, read_tensor
from mergetui.engine.vocab import align

PROGRESS_FILE = "mergetui-progress.json"
DONE_LOG = "mergetui-done.log"


@dataclass
class MergeOptions:
    """How to run a plan."""

    device: str = "cpu"  # cpu | cuda | auto
    max_memory: int | None = None  # bytes; default: a safe share of available RAM
    workers: int | None = None
    chunk_elements: int = 1 << 18  # measured: 256K-element chunks beat 4M (less scratch, faster)
    random_seed: int | None = None
    resume: bool = False
    overwrite: bool = False
    events: list[EventSink] = field(default_factory=list)
    cancel: threading.Event = field(default_factory=threading.Event)


class ResumeMismatch(MergeError):
    """--resume found a partial merge of a different plan (left untouched)."""


def partial_dir(out_dir: Path) -> Path:
    """The hidden sibling directory a merge writes into before the final rename."""
    return out_dir.parent / f".{out_dir.name}.mergetui-partial"


def resolve_device(device: str) -> torch.device:
    """cpu, cuda or auto (cuda when available)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise MergeError("--device cuda: no CUDA device is available to torch", fix="use --device cpu, or install a CUDA build of torch")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise MergeError(f"--device {device}: unknown device", fix="use cpu, cuda or auto")
    return torch.device(device)


def default_memory_budget(plan: Plan, chunk_elements: int = 1 << 18) -> int:
    """The default budget for a plan: see budget_for_largest()."""
    return budget_for_largest(max((plan.tensor_working_bytes(t, chunk_elements) for t in plan.tensors), default=0))


def budget_for_largest(largest: int) -> int:
    """A safe share of free RAM that also keeps peak memory independent of model size.

    On 2-4 cores more than about one and a half of the largest tensors in flight buys no
    speed, only memory; so the budget is 1.5x the largest tensor's working set (at least
    512 MiB), capped at half of the RAM available now.
    """
    import psutil

    return min(psutil.virtual_memory().available // 2, max(512 << 20, int(largest * 1.5)))


class MemoryBudget:
    """Bytes of tensors in flight; a tensor larger than the whole budget runs alone."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.cv = threading.Condition()

    def acquire(self, n: int, cancel: threading.Event) -> None:
        with self.cv:
            while self.used and self.used + n > self.limit:
                if cancel.is_set():
                    raise MergeCancelled("cancelled")
                self.cv.wait(0.2)
            self.used += n

    def release(self, n: int) -> None:
        with self.cv:
            self.used -= n
            self.cv.notify_all()


def run_plan(plan: Plan, out_dir: str | Path, opts: MergeOptions | None = None) -> dict[str, Any]:
    """Execute `plan` into `out_dir`; returns the finished event."""
    opts = opts or MergeOptions()
    out = Path(out_dir).resolve()
    emit = fanout(opts.events)
    t0 = time.time()
    device = resolve_device(opts.device)
    try:
        result = _run(plan, out, opts, device, emit, t0)
    except MergeCancelled as e:
        emit(make_event("cancelled", message=str(e) or "cancelled", out_dir=str(out)))
        raise
    except MergeError as e:
        # the input must change before a retry, so nothing here could be resumed
        if not isinstance(e, ResumeMismatch):
            shutil.rmtree(partial_dir(out), ignore_errors=True)
        emit(make_event("error", message=str(e)))
        raise
    except Exception as e:  # unexpected: still tell the watcher before re-raising
        emit(make_event("error", message=f"{type(e).__name__}: {e}"))
        raise
    return result


def fanout(sinks: list[EventSink]) -> Callable[[dict[str, Any]], None]:
    """One sink that forwards each event to every sink in `sinks`."""

    def emit(ev: dict[str, Any]) -> None:
        for s in sinks:
            s(ev)
    return emit


def _run(plan: Plan, out: Path, opts: MergeOptions, device: torch.device, emit: Callable, t0: float) -> dict[str, Any]:
    if out.exists() and any(out.iterdir()) and not opts.overwrite:
        raise MergeError(f"output directory {out} already exists and is not empty", fix="choose another OUT_DIR or pass --overwrite")
    work = partial_dir(out)
    by_name = {t.name: t for t in plan.tensors}
    layouts = {fname: layout_shard(fname, [(n, by_name[n].dtype, by_name[n].shape) for n in names]) for fname, names in plan.shards}
    for fname, names in plan.shards:
        for name in names:
            by_name[name].offset = layouts[fname].offsets[name]
    fingerprint = plan.fingerprint()

    done: set[str] = set()
    fresh = True
    if opts.resume and (work / PROGRESS_FILE).exists():
        try:
            prog = json.loads((work / PROGRESS_FILE).read_text())
        except ValueError:
            prog = {}
        if prog.get("fingerprint") == fingerprint:
            fresh = False
            if (work / DONE_LOG).exists():
                done = {ln for ln in (work / DONE_LOG).read_text().splitlines() if ln}
        else:
            raise ResumeMismatch(
                f"cannot resume: {work} holds a different merge (config, models or options changed)",
                fix="run again without --resume to start over",
            )
    if fresh:
        if work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True)
        (work / PROGRESS_FILE).write_text(json.dumps({"fingerprint": fingerprint, "started": t0}))

    remaining = [t for t in plan.tensors if t.name not in done]
    # shard files are sized up front (sparse), so what is left to write is what must fit
    need = sum(t.nbytes for t in remaining)
    free = shutil.disk_usage(work).free
    if need > free:
        if fresh:
            shutil.rmtree(work, ignore_errors=True)
        raise DiskSpaceError(
            f"not enough free disk in {out.parent}: the output needs {_gb(need)}, {_gb(free)} free",
            fix="free some space or choose an output directory on another volume",
        )

    # make the needed weight files local (Hub models: only the shards holding needed tensors)
    entries = _input_entries(plan)

    writers = {fname: ShardWriter(work / fname, layouts[fname], fresh=fresh) for fname in layouts}
    total_bytes = plan.total_bytes
    emit(make_event(
        "plan", tensors=len(plan.tensors), bytes=total_bytes, shards=len(plan.shards), out_dir=str(out),
        method=plan.method.name, pid=os.getpid(), already_done=len(done),
        already_done_bytes=sum(t.nbytes for t in plan.tensors if t.name in done), device=str(device),
    ))

    budget = MemoryBudget(opts.max_memory or default_memory_budget(plan, opts.chunk_elements))
    done_log = open(work / DONE_LOG, "a")

    def log_done(name: str) -> None:
        done_log.write(name + "\n")
        done_log.flush()

    tracker = ShardTracker(writers, layouts, plan.shards, emit, done, sum(t.nbytes for t in plan.tensors if t.name in done), log_done)

    def work_one(t: PlannedTensor) -> None:
        if opts.cancel.is_set():
            raise MergeCancelled("cancelled")
        src = _copy_source(plan, t, entries)
        if src is not None:  # unchanged bytes: kernel-side copy, no buffers, no compute
            nbytes = writers[t.shard].copy_from(t.name, src)
        else:
            need_bytes = plan.tensor_working_bytes(t, opts.chunk_elements)
            budget.acquire(need_bytes, opts.cancel)
            try:
                result = merge_tensor(plan, t, entries, device, opts)
                nbytes = writers[t.shard].write(t.name, result)
                del result
            finally:
                budget.release(need_bytes)
        tracker.finished(t.name, t.shard, nbytes)

    order = sorted(remaining, key=lambda t: _locality_key(t, entries))
    try:
        run_pool(order, work_one, opts.workers, opts.cancel, device, "merge")
    finally:
        done_log.close()
        for w in writers.values():
            w.close()

    write_metadata_files(plan, work, layouts)
    for name in (PROGRESS_FILE, DONE_LOG):
        (work / name).unlink(missing_ok=True)
    publish(work, out)
    ev = make_event("finished", out_dir=str(out), tensors=len(plan.tensors), bytes=total_bytes, seconds=round(time.time() - t0, 3))
    emit(ev)
    return ev


class ShardTracker:
    """Counts finished tensors: emits tensor_done, and closes each shard (shard_written) once full."""

    def __init__(self, writers: dict[str, ShardWriter], layouts: dict[str, ShardLayout], shards: list[tuple[str, list[str]]],
                 emit: Callable[[dict[str, Any]], None], done: set[str] | frozenset[str] = frozenset(), done_bytes: int = 0,
                 on_done: Callable[[str], None] | None = None) -> None:
        self.writers, self.layouts, self.emit, self.on_done = writers, layouts, emit, on_done
        self.left = {fname: sum(1 for n in names if n not in done) for fname, names in shards}
        self.done, self.bytes = len(done), done_bytes
        self.lock = threading.Lock()

    def finished(self, name: str, shard: str, nbytes: int) -> None:
        """Record one written tensor (thread-safe)."""
        with self.lock:
            if self.on_done:
                self.on_done(name)
            self.done += 1
            self.bytes += nbytes
            self.left[shard] -= 1
            shard_done = self.left[shard] == 0
            ev = make_event("tensor_done", name=name, bytes=nbytes, done=self.done, done_bytes=self.bytes, shard=shard)
        self.emit(ev)
        if shard_done:
            self.writers[shard].close()
            self.emit(make_event("shard_written", file=shard, bytes=self.layouts[shard].size))


def run_pool(items: list[Any], fn: Callable[[Any], None], workers: int | None, cancel: threading.Event,
             device: torch.device, name: str) -> None:
    """Run fn(item) for every item on worker threads; the first error cancels the rest and is raised."""
    workers = workers or max(2, min(8, os.cpu_count() or 2))
    # one tensor per core beats torch's intra-op threads on chunk-sized ops (measured: linear
    # 1.1B on 2 cores 5.1 s vs 6.5-7.5 s); restored afterwards for callers in this process
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name) as pool:
            futures = [pool.submit(fn, item) for item in items]
            finished, _ = wait(futures, return_when=FIRST_EXCEPTION)
            for f in finished:
                if f.exception() is not None:
                    cancel.set()
                    for g in futures:
                        g.cancel()
                    raise f.exception()  # type: ignore[misc]
    finally:
        torch.set_num_threads(threads)


def merge_tensor(plan: Plan, t: PlannedTensor, entries: dict[str, dict[str, TensorEntry]], device: torch.device, opts: MergeOptions) -> torch.Tensor:
    """Read one output tensor's inputs and merge them."""
    tensors = [read_tensor(entries[i.model][i.tensor]) for i in t.inputs]
    if t.align is not None:  # embedding / lm_head rows moved into the output vocabulary first
        tensors = align(tensors, t.align)
    gen = None
    if plan.method.randomized:
        seed = opts.random_seed if opts.random_seed is not None else 0
        gen = torch.Generator(device=device)
        gen.manual_seed((seed * 1_000_003 + zlib.crc32(t.name.encode())) & 0x7FFF_FFFF_FFFF_FFFF)
    out_dtype = ST_DTYPES[t.dtype]
    compute = torch.float64 if out_dtype == torch.float64 or plan.config.dtype == "float64" else torch.float32
    inp = MergeInputs(
        name=t.name, tensors=tensors, base_index=t.base_index, model_params=t.model_params, params=t.params,
        out_dtype=out_dtype, compute_dtype=compute, device=device, generator=gen, chunk_elements=opts.chunk_elements,
    )
    try:
        result = plan.method.merge(inp)
    except ValueError as e:  # methods raise ValueError for inputs they cannot merge
        msg = str(e) if t.name in str(e) else f"{t.name}: {e}"
        raise MergeError(f"{plan.method.name}: {msg}", fix="check the method's parameters for this tensor") from None
    if tuple(result.shape) != t.shape or result.dtype != out_dtype:
        raise RuntimeError(f"{plan.method.name} returned {tuple(result.shape)} {result.dtype} for {t.name}, planned {t.shape} {out_dtype}")
    return result


def _copy_source(plan: Plan, t: PlannedTensor, entries: dict[str, dict[str, TensorEntry]]) -> TensorEntry | None:
    """The input entry to copy verbatim, when the method says the output is that input."""
    if plan.method.copy_of is None or t.align is not None:
        return None
    i = plan.method.copy_of(t.params, t.model_params)
    if i is None:
        return None
    e = entries[t.inputs[i].model][t.inputs[i].tensor]
    return e if e.start >= 0 and e.dtype == t.dtype else None


def _input_entries(plan: Plan) -> dict[str, dict[str, TensorEntry]]:
    needed: dict[str, set[str]] = {}
    for t in plan.tensors:
        for i in t.inputs:
            needed.setdefault(i.model, set()).add(i.tensor)
    return fetch_entries(plan.sources, needed)


def fetch_entries(sources: dict[str, ModelSource], needed: dict[str, set[str]]) -> dict[str, dict[str, TensorEntry]]:
    """Make the files holding `needed` tensors local (Hub: only those shards) and index them."""
    out = {}
    for ref, names in needed.items():
        src = sources[ref]
        metas = src.tensors()
        src.fetch({metas[n].file for n in names})
        entries = src.local_entries()
        missing = [n for n in names if n not in entries]
        if missing:
            raise ModelError(f"model {ref}: tensor {missing[0]!r} is missing from the local files", fix="re-download the model")
        out[ref] = entries
    return out


def _locality_key(t: PlannedTensor, entries: dict[str, dict[str, TensorEntry]]) -> tuple:
    e = entries[t.inputs[0].model][t.inputs[0].tensor]
    return (str(e.file), e.start)


def publish(work: Path, out: Path) -> None:
    """Move the finished directory into place (replacing an old one only now)."""
    if out.exists():
        old = out.parent / f".{out.name}.mergetui-old"
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
        work.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        work.rename(out)


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB"


