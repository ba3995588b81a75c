"""Runs a MoE plan: router rows first, then every tensor written at its offset, one at a time.

Expert and base tensors whose bytes do not change are copied file to file (no buffers);
noise, residual scaling or a dtype change read one tensor, transform it and write it. Like a
merge, everything goes into a hidden sibling directory renamed into place when complete; a
failed or cancelled assembly leaves nothing behind (there is no resume: it is a copy job).
"""

from __future__ import annotations

import os
import shutil
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from mergetui.engine.errors import DiskSpaceError, MergeCancelled, MergeError
from mergetui.engine.events import EventSink, make_event
from mergetui.engine.executor import (
    MemoryBudget,
    ShardTracker,
    budget_for_largest,
    fanout,
    fetch_entries,
    partial_dir,
    publish,
    resolve_device,
    run_pool,
)
from mergetui.engine.moe.output import write_moe_metadata
from mergetui.engine.moe.plan import MoEPlan, MoETensor
from mergetui.engine.moe.router import gate_vectors
from mergetui.engine.tensor_io import ST_DTYPES, ShardWriter, TensorEntry, layout_shard, read_tensor


@dataclass
class MoEOptions:
    """How to run a MoE plan."""

    device: str = "cpu"  # where gate_mode hidden runs the base model: cpu | cuda | auto
    random_seed: int | None = None  # gate_mode random and experts' noise_scale; default 0
    overwrite: bool = False
    workers: int | None = None
    config_text: str | None = None  # the YAML as the user wrote it, saved next to the model
    events: list[EventSink] = field(default_factory=list)
    cancel: threading.Event = field(default_factory=threading.Event)
    log: Callable[[str], None] | None = None  # one-line status messages (the slow router step)


def run_moe(plan: MoEPlan, out_dir: str | Path, opts: MoEOptions | None = None) -> dict[str, Any]:
    """Assemble `plan` into `out_dir`; returns the finished event."""
    opts = opts or MoEOptions()
    out = Path(out_dir).resolve()
    emit = fanout(opts.events)
    t0 = time.time()
    try:
        return _run(plan, out, opts, emit, t0)
    except MergeCancelled as e:
        shutil.rmtree(partial_dir(out), ignore_errors=True)
        emit(make_event("cancelled", message=str(e) or "cancelled", out_dir=str(out)))
        raise
    except MergeError as e:
        shutil.rmtree(partial_dir(out), ignore_errors=True)
        emit(make_event("error", message=str(e)))
        raise
    except Exception as e:  # unexpected: nothing to resume, so clean up and tell the watcher
        shutil.rmtree(partial_dir(out), ignore_errors=True)
        emit(make_event("error", message=f"{type(e).__name__}: {e}"))
        raise


def _run(plan: MoEPlan, out: Path, opts: MoEOptions, emit: Callable[[dict[str, Any]], None], t0: float) -> dict[str, Any]:
    if out.exists() and any(out.iterdir()) and not opts.overwrite:
        raise MergeError(f"output directory {out} already exists and is not empty", fix="choose another OUT directory or pass --overwrite")
    device = resolve_device(opts.device)
    need = plan.total_bytes
    free = shutil.disk_usage(_existing_parent(out)).free
    if need > free:
        raise DiskSpaceError(f"not enough free disk in {out.parent}: the MoE needs {need / 1e9:.2f} GB, {free / 1e9:.2f} GB free",
                             fix="free some space or choose an output directory on another volume")
    seed = opts.random_seed if opts.random_seed is not None else 0

    # the router first: gate_mode hidden is the slow, fallible step, and nothing is on disk yet
    if opts.log:
        opts.log(f"computing router rows (gate_mode {plan.config.gate_mode}) for {plan.num_gates} expert(s)")
    gates = gate_vectors(plan.config.gate_mode, plan.config.all_experts(), plan.sources[plan.config.base_model],
                         plan.num_layers, plan.hidden_size, device=device, seed=seed, labels=plan.expert_labels())
    entries = _input_entries(plan)

    work = partial_dir(out)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    by_name = {t.name: t for t in plan.tensors}
    layouts = {fname: layout_shard(fname, [(n, by_name[n].dtype, by_name[n].shape) for n in names]) for fname, names in plan.shards}
    writers = {fname: ShardWriter(work / fname, layouts[fname]) for fname in layouts}
    emit(make_event("plan", tensors=len(plan.tensors), bytes=need, shards=len(plan.shards), out_dir=str(out), method="moe",
                    family=plan.family.name, experts=len(plan.config.experts), pid=os.getpid(), already_done=0,
                    already_done_bytes=0, device=str(device)))

    budget = MemoryBudget(budget_for_largest(max(_working_bytes(t) for t in plan.tensors)))
    tracker = ShardTracker(writers, layouts, plan.shards, emit)

    def work_one(t: MoETensor) -> None:
        if opts.cancel.is_set():
            raise MergeCancelled("cancelled")
        nbytes = _write_tensor(t, writers[t.shard], entries, gates, seed, budget, opts.cancel)
        tracker.finished(t.name, t.shard, nbytes)

    # by input file and offset: each source file is read front to back
    order = sorted(plan.tensors, key=lambda t: _locality_key(t, entries))
    try:
        run_pool(order, work_one, opts.workers, opts.cancel, device, "moe")
    finally:
        for w in writers.values():
            w.close()

    write_moe_metadata(plan, work, opts.config_text)
    publish(work, out)
    ev = make_event("finished", out_dir=str(out), tensors=len(plan.tensors), bytes=need, seconds=round(time.time() - t0, 3))
    emit(ev)
    return ev


def _write_tensor(t: MoETensor, writer: ShardWriter, entries: dict[str, dict[str, TensorEntry]], gates: torch.Tensor,
                  seed: int, budget: MemoryBudget, cancel: threading.Event) -> int:
    """Produce one output tensor and write it at its offset; returns bytes written."""
    out_dtype = ST_DTYPES[t.dtype]
    if t.gate is not None:
        layer, lo, hi = t.gate
        return writer.write(t.name, gates[layer, lo:hi].to(out_dtype))
    if t.zeros:
        return writer.write(t.name, torch.zeros(t.shape, dtype=out_dtype))
    assert t.model is not None and t.tensor is not None
    src = entries[t.model][t.tensor]
    if t.noise is None and t.scale is None and src.dtype == t.dtype and src.start >= 0:
        return writer.copy_from(t.name, src)  # unchanged bytes: file to file, no tensor in memory
    need = _working_bytes(t)
    budget.acquire(need, cancel)
    try:
        x = read_tensor(src).float()
        if t.noise:
            gen = torch.Generator().manual_seed((seed * 1_000_003 + zlib.crc32(t.name.encode())) & 0x7FFF_FFFF_FFFF_FFFF)
            x.add_(torch.randn(x.shape, generator=gen), alpha=t.noise)
        if t.scale is not None:
            x.mul_(t.scale)
        return writer.write(t.name, x.to(out_dtype))
    finally:
        budget.release(need)


def _working_bytes(t: MoETensor) -> int:
    """Memory to transform one tensor: stored input, float32 copy, noise, output."""
    numel = t.nbytes // ST_DTYPES[t.dtype].itemsize
    return t.nbytes * 2 + numel * 8 if t.model else t.nbytes


def _input_entries(plan: MoEPlan) -> dict[str, dict[str, TensorEntry]]:
    """Make the needed weight files local (Hub: only the shards holding them) and index them."""
    needed: dict[str, set[str]] = {}
    for t in plan.tensors:
        if t.model:
            needed.setdefault(t.model, set()).add(t.tensor or "")
    return fetch_entries(plan.sources, needed)


def _locality_key(t: MoETensor, entries: dict[str, dict[str, TensorEntry]]) -> tuple:
    if t.model is None:
        return ("", 0)
    e = entries[t.model][t.tensor or ""]
    return (str(e.file), e.start)


def _existing_parent(p: Path) -> Path:
    while not p.exists() and p != p.parent:
        p = p.parent
    return p
