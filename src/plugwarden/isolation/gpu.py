"""GPU memory per worker, from NVML, and the guard that holds a plugin to
its ``gpu_memory_mb`` (README, "GPU memory").

NVML is read in the host, never in the zygote: a process that touched NVML
must not fork (the zygote forks every worker). :class:`GpuWatch` reads each
process's used GPU memory (compute and graphics processes, every GPU) about
four times a second while some runner has a budget, adds up each worker
tree's, and kills a tree past its budget (``KillCause.GPU_MEMORY``): the
call in flight fails ``GpuMemoryLimitExceeded`` with the peak seen, as the
memory guard's does.

``PLUGWARDEN_FAKE_NVML=PATH`` replaces NVML by a JSON file (tests, on any
machine: ``plugwarden.testing.FakeNvml`` writes it): ``{"gpus": [{"name",
"total", "processes": {PID: BYTES}}]}``, read at each sweep.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from plugwarden.isolation.fates import KillCause
from plugwarden.isolation.process import containment

__all__ = [
    "FAKE_NVML_ENV",
    "SWEEP_S",
    "Device",
    "GpuReader",
    "GpuWatch",
    "Watched",
    "reader",
    "sticky_cuda_error",
]

log = logging.getLogger("plugwarden.gpu")

FAKE_NVML_ENV = "PLUGWARDEN_FAKE_NVML"
SWEEP_S = 0.25
RELEASE_POLL_S = 0.05  # how often a replacement looks whether its predecessor's memory is back


# CUDA errors after which a process's CUDA context is lost for good: every
# later CUDA call fails too. As CUDA (and torch, "CUDA error: ...") words them.
STICKY = (
    "an illegal memory access was encountered",
    "an illegal instruction was encountered",
    "misaligned address",
    "unspecified launch failure",
    "device-side assert triggered",
    "the launch timed out and was terminated",
    "hardware stack error",
    "invalid program counter",
    "uncorrectable ECC error encountered",
)


def sticky_cuda_error(error: str | None) -> str | None:
    """The sticky CUDA error ``error`` names, if it names one."""
    if not error or ("CUDA" not in error and "cuda" not in error):
        return None
    lowered = error.lower()
    return next((sticky for sticky in STICKY if sticky.lower() in lowered), None)


@dataclass(frozen=True, slots=True)
class Device:
    """One GPU as NVML shows it: its index, name and memory in bytes."""

    index: int
    name: str
    total: int
    used: int


class GpuReader(Protocol):
    def processes(self) -> dict[int, int]:
        """Used GPU memory per process id (as the host sees it), every GPU."""

    def devices(self) -> list[Device]:
        """Every GPU, with its memory."""


class Watched(Protocol):
    """A worker the watch holds to a budget (a WorkerProcess)."""

    pid: int
    gpu_bytes: int
    gpu_peak_bytes: int
    gpu_pids: dict[int, int]

    def kill(self, why: Any) -> None: ...


class _FakeNvml:
    """NVML as a JSON file says it is (PLUGWARDEN_FAKE_NVML)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def processes(self) -> dict[int, int]:
        try:
            with open(self.path, encoding="utf-8") as file:
                state = json.load(file)
        except (OSError, ValueError):
            return {}
        used: dict[int, int] = {}
        for gpu in state.get("gpus", []):
            for pid, amount in (gpu.get("processes") or {}).items():
                used[int(pid)] = used.get(int(pid), 0) + int(amount)
        return used

    def devices(self) -> list[Device]:
        try:
            with open(self.path, encoding="utf-8") as file:
                gpus = json.load(file).get("gpus", [])
        except (OSError, ValueError):
            return []
        return [
            Device(index, str(gpu.get("name", "Fake GPU")), int(gpu.get("total", 0)),
                   int(gpu.get("used", 0)) + sum(map(int, (gpu.get("processes") or {}).values())))
            for index, gpu in enumerate(gpus)
        ]  # fmt: skip


class _Nvml:
    """The driver's NVML (nvidia-ml-py), initialised on first use."""

    def __init__(self, nvml: Any) -> None:
        self._nvml = nvml
        nvml.nvmlInit()
        self._handles = [
            nvml.nvmlDeviceGetHandleByIndex(index) for index in range(nvml.nvmlDeviceGetCount())
        ]

    def processes(self) -> dict[int, int]:
        nvml, used = self._nvml, dict[int, int]()
        for handle in self._handles:
            for query in (
                nvml.nvmlDeviceGetComputeRunningProcesses,
                nvml.nvmlDeviceGetGraphicsRunningProcesses,
            ):
                try:
                    found = query(handle)
                except nvml.NVMLError:
                    continue
                for process in found:
                    amount = process.usedGpuMemory
                    if isinstance(amount, int) and amount >= 0:  # None: not readable here
                        used[process.pid] = used.get(process.pid, 0) + amount
        return used

    def devices(self) -> list[Device]:
        nvml, found = self._nvml, []
        for index, handle in enumerate(self._handles):
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            name = nvml.nvmlDeviceGetName(handle)
            name = name.decode() if isinstance(name, bytes) else str(name)
            found.append(Device(index, name, int(memory.total), int(memory.used)))
        return found


def reader() -> tuple[GpuReader | None, str]:
    """NVML (or its fake), and a line saying which, or why there is none."""
    fake = os.environ.get(FAKE_NVML_ENV)
    if fake:
        return _FakeNvml(fake), f"fake NVML ({fake})"
    try:
        import pynvml

        return _Nvml(pynvml), "NVML"
    # No driver, no library, no GPU: any of NVML's errors, or an import error.
    except Exception as exc:  # noqa: BLE001
        return None, f"NVML is not available here ({type(exc).__name__}: {exc})"


class GpuWatch:
    """Holds workers to their GPU memory budgets; one per host, its thread
    running while a worker is watched."""

    def __init__(
        self,
        make_reader: Callable[[], tuple[GpuReader | None, str]] = reader,
        release_timeout_s: float = 30.0,
    ) -> None:
        self._make_reader = make_reader
        self.release_timeout_s = release_timeout_s
        self._reader: GpuReader | None = None
        self.state = "not started"  # which NVML, or why none
        self._watched: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False

    def watch(self, worker: Watched, budget_bytes: int) -> str:
        """Hold ``worker`` to ``budget_bytes``; what enforces it, or why nothing does."""
        with self._lock:
            if self._reader is None and self.state == "not started":
                self._reader, self.state = self._make_reader()
            if self._reader is None:
                return self.state
            self._watched[worker] = budget_bytes
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(
                    target=self._run, name="plugwarden-gpu-watch", daemon=True
                )
                self._thread.start()
        return f"enforced ({self.state})"

    def sweep(self) -> None:
        """Read NVML once and kill every watched tree past its budget."""
        with self._lock:
            watched = list(self._watched.items())
            source = self._reader
        if not watched or source is None:
            return
        try:
            used = source.processes()
        # NVML may fail in any way mid-run (a GPU fallen off the bus).
        except Exception:
            log.warning("reading GPU memory failed", exc_info=True)
            return
        for worker, budget in watched:
            pids = {worker.pid, *containment.tree(worker.pid)}
            held = {pid: used[pid] for pid in pids if used.get(pid)}
            total = sum(held.values())
            worker.gpu_pids = held
            worker.gpu_bytes = total
            worker.gpu_peak_bytes = max(worker.gpu_peak_bytes, total)
            if total > budget:
                with self._lock:
                    self._watched.pop(worker, None)
                log.warning("worker %s: %d GPU bytes over its %d budget", worker.pid, total, budget)
                worker.kill(KillCause.GPU_MEMORY)

    def await_release(self, held: dict[int, int]) -> str:
        """Wait for the GPU memory of a lost worker's processes (``held``:
        pid -> bytes) to come back; how that went, for the history."""
        left = self.wait_released(held)
        if not left:
            return f"after its {sum(held.values()) / 2**20:.0f} MB of GPU memory came back"
        pids = ", ".join(str(pid) for pid in sorted(left))
        return (
            f"although its GPU memory was not released within {self.release_timeout_s:g}s: "
            f"NVML still shows {sum(left.values()) / 2**20:.0f} MB held by pid {pids}; the "
            "replacement started anyway (a process outside the worker's tree, or the driver, "
            "holds it)"
        )

    def wait_released(self, held: dict[int, int]) -> dict[int, int]:
        """Wait (at most ``release_timeout_s``) until NVML shows none of the
        processes in ``held`` (pid -> bytes, of a killed worker) holding GPU
        memory; what is still held then (empty: all released)."""
        source = self._reader
        deadline = time.monotonic() + self.release_timeout_s
        left = dict(held)
        while left and source is not None:
            try:
                used = source.processes()
            # NVML may fail in any way mid-run: nothing more to wait for.
            except Exception:  # noqa: BLE001
                return {}
            left = {pid: used[pid] for pid in left if used.get(pid)}
            if not left or time.monotonic() > deadline:
                break
            time.sleep(RELEASE_POLL_S)
        return left

    def place(
        self, allowed: tuple[int, ...] | None, budget: int, placed: list[tuple[int, int, int]]
    ) -> tuple[int | None, str]:
        """The GPU for a new worker: of ``allowed`` (None: all), the one with
        the most memory free once ``placed`` workers (GPU, budget, used)
        have their budgets; it must fit ``budget``. (None, why) when none does,
        or (None, "") when there is no NVML to place by."""
        with self._lock:
            if self._reader is None and self.state == "not started":
                self._reader, self.state = self._make_reader()
            source = self._reader
        if source is None:
            return None, ""
        try:
            devices = [d for d in source.devices() if allowed is None or d.index in allowed]
        # NVML may fail in any way mid-run: place nothing, as with none.
        except Exception:  # noqa: BLE001
            return None, ""
        if not devices:
            return None, f"none of the GPUs {list(allowed or [])} is on this machine"

        def free(device: Device) -> int:
            reserved = sum(max(0, b - u) for i, b, u in placed if i == device.index)
            return device.total - device.used - reserved

        count = {d.index: sum(1 for i, _, _ in placed if i == d.index) for d in devices}
        best = max(devices, key=lambda d: (free(d), -count[d.index], -d.index))
        if budget and free(best) < budget:
            return None, (
                f"Its gpu_memory_mb ({budget / 2**20:.0f} MB) fits no GPU: the most free is "
                f"{max(0, free(best)) / 2**20:.0f} MB on GPU {best.index} ({best.name}). Free "
                "GPU memory, lower gpu_memory_mb, or allow it more GPUs ([plugins.NAME] gpus)."
            )
        return best.index, ""

    def _run(self) -> None:
        while not self._closed:
            self.sweep()
            self._wake.wait(SWEEP_S)

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(2.0)
        with contextlib.suppress(Exception), self._lock:
            self._watched.clear()
