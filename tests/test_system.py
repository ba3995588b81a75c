"""System sampling: never raises, NVML absent reads "no GPU", disk and process numbers."""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path

import pytest

from mergetui.inspect import system
from mergetui.inspect.system import SystemSampler, bytes_on_disk, nearest_existing


def test_sample_without_nvml(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    broken = types.ModuleType("pynvml")

    def fail() -> None:
        raise RuntimeError("NVML Shared Library Not Found")

    broken.nvmlInit = fail  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pynvml", broken)
    s = SystemSampler().sample(pid=os.getpid(), out_dir=str(tmp_path / "not" / "yet"))
    assert s.gpus == () and s.gpu_status == "no GPU"
    assert 0 < s.ram_used <= s.ram_total
    assert s.proc_rss and s.proc_rss > 1_000_000
    assert s.disk_free and s.disk_free > 0  # measured on the nearest existing parent
    assert s.written is None  # nothing there yet


def test_nvml_device_errors_read_na(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("pynvml")
    fake.nvmlInit = lambda: None  # type: ignore[attr-defined]
    fake.nvmlDeviceGetCount = lambda: 2  # type: ignore[attr-defined]
    fake.nvmlDeviceGetHandleByIndex = lambda i: i  # type: ignore[attr-defined]
    fake.nvmlDeviceGetName = lambda h: b"Fake GPU"  # type: ignore[attr-defined]

    def mem(h: int) -> object:
        if h == 1:
            raise RuntimeError("GPU is lost")
        return types.SimpleNamespace(used=3 << 30, total=80 << 30)

    fake.nvmlDeviceGetMemoryInfo = mem  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    s = SystemSampler().sample()
    assert [(g.used, g.total) for g in s.gpus] == [(3 << 30, 80 << 30), (None, None)]
    assert s.gpus[0].name == "Fake GPU" and s.gpu_status == ""


def test_vanished_process_is_none() -> None:
    s = SystemSampler().sample(pid=2**22 + 12345)
    assert s.proc_rss is None


def test_bytes_written_counts_partial_dir(tmp_path: Path) -> None:
    out = tmp_path / "merged"
    partial = tmp_path / ".merged.mergetui-partial"
    partial.mkdir()
    (partial / "a.bin").write_bytes(b"x" * 100_000)
    s = SystemSampler().sample(out_dir=str(out))
    assert s.written is not None and s.written >= 100_000
    assert bytes_on_disk([tmp_path / "none"]) is None
    assert nearest_existing(tmp_path / "a" / "b") == tmp_path


def test_history_is_bounded() -> None:
    h = system.History(size=3)
    for v in range(5):
        h.push(v)
    assert h.values == [2, 3, 4]
