"""System sampling for the gauges: GPU memory through NVML, RAM and disk through psutil.

Sampling never raises: NVML missing or failing becomes "no GPU" or "n/a" (as nvitop and
gpustat do), a vanished process or path becomes None. Call `sample()` from a thread; it
may take a few milliseconds per GPU.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil


@dataclass(frozen=True)
class GpuSample:
    """One GPU's memory; used/total are None when NVML could not read them ("n/a")."""

    index: int
    name: str
    used: int | None
    total: int | None


@dataclass(frozen=True)
class SystemSample:
    """Everything the gauges show at one instant."""

    time: float
    gpus: tuple[GpuSample, ...] = ()
    gpu_status: str = ""  # "" when GPUs were read, else "no GPU" / "n/a"
    ram_used: int = 0
    ram_total: int = 0
    proc_rss: int | None = None  # the merge process, when one runs
    disk_free: int | None = None  # on the output volume
    disk_total: int | None = None
    written: int | None = None  # bytes the merge has put on disk so far


class _Nvml:
    """Lazy, fail-soft NVML handle: initialised once, errors remembered, never raised."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ok: bool | None = None
        self._nv = None
        self.status = ""

    def _init(self) -> bool:
        if self._ok is None:
            try:
                import pynvml  # nvidia-ml-py

                pynvml.nvmlInit()
                self._nv = pynvml
                self._ok = True
            except Exception:  # library missing, no driver, no device: all mean "no GPU"
                self._ok = False
                self.status = "no GPU"
        return bool(self._ok)

    def read(self) -> tuple[tuple[GpuSample, ...], str]:
        """Memory of every GPU, and a status ("" / "no GPU" / "n/a")."""
        with self._lock:
            if not self._init():
                return (), self.status
            nv = self._nv
            try:
                count = nv.nvmlDeviceGetCount()
            except Exception:
                return (), "n/a"
            if count == 0:
                return (), "no GPU"
            out = []
            for i in range(count):
                name, used, total = f"GPU{i}", None, None
                try:
                    h = nv.nvmlDeviceGetHandleByIndex(i)
                    try:
                        raw = nv.nvmlDeviceGetName(h)
                        name = raw.decode() if isinstance(raw, bytes) else str(raw)
                    except Exception:
                        pass
                    mem = nv.nvmlDeviceGetMemoryInfo(h)
                    used, total = int(mem.used), int(mem.total)
                except Exception:  # one GPU failing (lost, MIG, permissions) reads "n/a"
                    pass
                out.append(GpuSample(i, name, used, total))
            return tuple(out), ""

    def close(self) -> None:
        """Shut NVML down if it was started."""
        with self._lock:
            if self._ok and self._nv is not None:
                try:
                    self._nv.nvmlShutdown()
                except Exception:
                    pass
            self._ok = None


def nearest_existing(path: str | Path) -> Path:
    """`path` or its closest existing parent (an output dir may not exist yet)."""
    p = Path(os.path.expanduser(str(path))).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def bytes_on_disk(paths: list[Path]) -> int | None:
    """Allocated bytes of the files under `paths` (sparse shards count only what was written)."""
    total, seen = 0, False
    for root in paths:
        if not root.is_dir():
            continue
        seen = True
        for dirpath, _dirs, files in os.walk(root):
            for f in files:
                try:
                    st = os.stat(os.path.join(dirpath, f))
                except OSError:
                    continue
                blocks = getattr(st, "st_blocks", None)
                total += min(st.st_size, blocks * 512) if blocks is not None else st.st_size
    return total if seen else None


class SystemSampler:
    """Takes SystemSamples; one instance per app, safe to call from a worker thread."""

    def __init__(self) -> None:
        self._nvml = _Nvml()

    def sample(self, pid: int | None = None, out_dir: str | Path | None = None) -> SystemSample:
        """A sample; `pid` adds the merge process's RSS, `out_dir` its volume and bytes written."""
        gpus, status = self._nvml.read()
        try:
            vm = psutil.virtual_memory()
            ram_used, ram_total = int(vm.total - vm.available), int(vm.total)
        except Exception:
            ram_used = ram_total = 0
        rss = None
        if pid:
            try:
                rss = int(psutil.Process(pid).memory_info().rss)
            except Exception:  # gone, or not ours to read
                rss = None
        free = total = written = None
        if out_dir:
            try:
                du = psutil.disk_usage(str(nearest_existing(out_dir)))
                free, total = int(du.free), int(du.total)
            except Exception:
                pass
            out = Path(os.path.expanduser(str(out_dir))).absolute()
            # the partial dir is engine.executor.partial_dir(out), named here to keep torch unimported
            written = bytes_on_disk([out, out.parent / f".{out.name}.mergetui-partial"])
        return SystemSample(time.time(), gpus, status, ram_used, ram_total, rss, free, total, written)

    def close(self) -> None:
        """Release NVML."""
        self._nvml.close()


@dataclass
class History:
    """The last N values of one gauge, for sparklines."""

    size: int = 60
    values: list[float] = field(default_factory=list)

    def push(self, value: float) -> None:
        """Append a value, dropping the oldest past `size`."""
        self.values.append(value)
        del self.values[: -self.size]
