"""The host's watch over GPU workers (docs/guides/gpu.md): their GPU memory
budgets, their placement, the faults that recycle them.

NVML (:mod:`plugwarden.isolation.nvml`) is read in the host, never in the
zygote: a process that touched NVML must not fork (the zygote forks every
worker). :class:`GpuWatch` reads it about four times a second while a GPU
worker is watched: each process's used GPU memory, added up per worker
tree (a tree past its budget is killed, ``KillCause.GPU_MEMORY``: the call
in flight fails ``GpuMemoryLimitExceeded`` with the peak seen), the Xid
events (the worker whose process the driver's kernel log line names, else
every worker on that GPU, is recycled, ``KillCause.GPU_FAULT``; an Xid that
calls for a reset marks the GPU unhealthy, and no worker is placed there
again), and each GPU's memory, utilisation, ECC counts and memory repairs
(a row remapping or page retirement waiting for a reset, or a failed one,
keeps workers off the GPU while NVML says so).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, Protocol

from plugwarden.isolation.fates import KillCause
from plugwarden.isolation.nvml import (
    RESET_XIDS,
    Device,
    GpuReader,
    cuda_visible,
    per_process,
    reader,
    xid_meaning,
)
from plugwarden.isolation.process import containment
from plugwarden.isolation.xidlog import XidAttribution

__all__ = ["SWEEP_S", "GpuWatch", "Watched"]

log = logging.getLogger("plugwarden.gpu")

SWEEP_S = 0.25
RELEASE_POLL_S = 0.05  # how often a replacement looks whether its predecessor's memory is back


class Watched(Protocol):
    """A worker the watch holds to a budget, or watches for GPU faults (a WorkerProcess)."""

    pid: int
    gpu_bytes: int
    gpu_peak_bytes: int
    gpu_pids: dict[int, int]
    gpu_index: int | None
    gpu_fault: str | None

    def kill(self, why: Any) -> None: ...


class GpuWatch:
    """Holds workers to their GPU memory budgets and recycles those an Xid
    hit; knows each GPU's health. One per host, its thread running while a
    worker is watched."""

    def __init__(
        self,
        make_reader: Callable[[], tuple[GpuReader | None, str]] = reader,
        release_timeout_s: float = 30.0,
    ) -> None:
        self._make_reader = make_reader
        # The host's own CUDA_VISIBLE_DEVICES: the operator's bound on every placement.
        self.host_visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        self.release_timeout_s = release_timeout_s
        self._reader: GpuReader | None = None
        self.state = "not started"  # which NVML, or why none
        self._watched: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
        self.unhealthy: dict[int, str] = {}  # GPU -> why no worker is placed there (an Xid)
        self.repairs: dict[int, str] = {}  # GPU -> its memory repairs' fault, as last read
        self._attribution: XidAttribution | None = None
        self.xids: collections.Counter[tuple[int, int]] = collections.Counter()  # (GPU, Xid)
        # The processes of lost workers that still held GPU memory when their
        # replacement stopped waiting, until NVML shows them holding none.
        self.stranded: set[int] = set()
        self._devices: list[Device] = []  # as last read
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False

    def _source(self) -> GpuReader | None:
        with self._lock:
            if self._reader is None and self.state == "not started":
                self._reader, self.state = self._make_reader()
                if self._reader is not None:
                    with contextlib.suppress(Exception):  # NVML may fail in any way
                        self._attribution = XidAttribution(*self._reader.kernel_log())
            return self._reader

    def watch(self, worker: Watched, budget_bytes: int) -> str:
        """Hold ``worker`` to ``budget_bytes`` (0: watch it for GPU faults
        only); what enforces it, or why nothing does."""
        if self._source() is None:
            return self.state
        with self._lock:
            self._watched[worker] = budget_bytes
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(
                    target=self._run, name="plugwarden-gpu-watch", daemon=True
                )
                self._thread.start()
        return f"enforced ({self.state})"

    def sweep(self) -> None:
        """Read NVML once: kill every tree past its budget, recycle the
        workers an Xid hit, note each GPU's state."""
        with self._lock:
            watched = list(self._watched.items())
            source, attribution = self._reader, self._attribution
        if source is None:
            return
        try:
            events = source.events()
            self._devices = devices = source.devices()
        # NVML may fail in any way mid-run (a GPU fallen off the bus).
        except Exception:
            log.warning("reading NVML failed", exc_info=True)
            return
        self._note_repairs(devices)
        if attribution is not None:
            events = attribution.resolve(events, {d.index: d.bus for d in devices})
        used = per_process(device.processes for device in devices)  # NVML read once a sweep
        trees = {worker: {worker.pid, *containment.tree(worker.pid)} for worker, _ in watched}
        for event in events:
            self._xid(event.gpu, event.xid, event.pid, trees)
        self.stranded = {pid for pid in self.stranded if used.get(pid)}
        for worker, budget in watched:
            held = {pid: used[pid] for pid in trees[worker] if used.get(pid)}
            worker.gpu_pids = held
            worker.gpu_bytes = total = sum(held.values())
            worker.gpu_peak_bytes = max(worker.gpu_peak_bytes, total)
            if budget and total > budget:
                self._forget(worker)
                log.warning("worker %s: %d GPU bytes over its %d budget", worker.pid, total, budget)
                worker.kill(KillCause.GPU_MEMORY)

    def _xid(self, gpu: int, xid: int, pid: int | None, trees: dict[Any, set[int]]) -> None:
        """An Xid on ``gpu``: the workers it hit recycled; a GPU it leaves
        needing a reset marked unhealthy (no worker is placed there) and
        drained: every worker on it is recycled, to be placed elsewhere."""
        meaning = xid_meaning(xid)
        self.xids[(gpu, xid)] += 1
        log.warning("GPU %d reported %s (process %s)", gpu, meaning, pid)
        drain = xid in RESET_XIDS
        if drain:
            self.unhealthy[gpu] = f"{meaning}: it needs a reset (nvidia-smi -r, or a reboot)"
        for worker, tree in trees.items():
            if worker.gpu_index == gpu and (drain or pid is None or pid in tree):
                worker.gpu_fault = f"GPU {gpu} reported {meaning}"
                self._forget(worker)
                worker.kill(KillCause.GPU_FAULT)

    def _note_repairs(self, devices: list[Device]) -> None:
        repairs = {d.index: d.memory_fault for d in devices if d.memory_fault}
        for index in repairs.keys() - self.repairs.keys():
            log.warning("GPU %d taken out of placement: %s", index, repairs[index])
        self.repairs = repairs

    def why_unhealthy(self, index: int) -> str | None:
        """Why no worker is placed on GPU ``index`` (None: it is healthy)."""
        return self.unhealthy.get(index) or self.repairs.get(index)

    def _forget(self, worker: Watched) -> None:
        with self._lock:
            self._watched.pop(worker, None)

    def status(self) -> list[dict[str, Any]]:
        """Each GPU as last read: memory, utilisation, ECC, health, Xids, and
        the memory lost workers' processes still hold (``stranded``)."""
        if self._source() is not None and not self._devices:
            with contextlib.suppress(Exception):
                self._devices = self._reader.devices() if self._reader else []
                self._note_repairs(self._devices)
        attribution = self._attribution.state if self._attribution else self.state
        return [
            {
                "index": d.index, "name": d.name, "memory_used_bytes": d.used,
                "memory_total_bytes": d.total, "utilization": d.utilization,
                "ecc_uncorrected": d.ecc_uncorrected, "retired_pages": d.retired_pages,
                "remapped_rows": d.remapped_rows,
                "healthy": self.why_unhealthy(d.index) is None,
                "reason": self.why_unhealthy(d.index), "xid_attribution": attribution,
                "xids": {str(x): n for (g, x), n in sorted(self.xids.items()) if g == d.index},
                "stranded_bytes": sum(n for p, n in d.processes.items() if p in self.stranded),
                "stranded_pids": sorted(p for p in d.processes if p in self.stranded),
            }
            for d in self._devices
        ]  # fmt: skip

    def place(
        self, allowed: tuple[int, ...] | None, budget: int, placed: list[tuple[int, int, int]]
    ) -> tuple[int | None, str]:
        """The GPU for a new worker: of ``allowed`` (None: all) and healthy,
        the one with the most memory free once ``placed`` workers (GPU,
        budget, used) have their budgets; it must fit ``budget``. (None,
        why) when none does, or (None, "") when there is no NVML to place by."""
        source = self._source()
        if source is None:
            return None, ""
        try:
            every = source.devices()
        # NVML may fail in any way mid-run: place nothing, as with none.
        except Exception:  # noqa: BLE001
            return None, ""
        self._note_repairs(every)
        visible = cuda_visible(self.host_visible, every)
        devices = [d for d in every if allowed is None or d.index in allowed]
        if visible is not None and devices:
            devices = [d for d in devices if d.index in visible]
            if not devices:
                return None, (
                    f"The host's CUDA_VISIBLE_DEVICES ({self.host_visible!r}, GPUs "
                    f"{sorted(visible)} by NVML's numbering) leaves it none of the GPUs it may "
                    "use. Start the host with the GPUs it should use visible, or change "
                    "[plugins.NAME] gpus."
                )
        if not devices:
            return None, f"None of the GPUs {list(allowed or [])} it may use is on this machine."
        healthy = [d for d in devices if self.why_unhealthy(d.index) is None]
        if not healthy:
            why = "; ".join(f"GPU {d.index}: {self.why_unhealthy(d.index)}" for d in devices)
            return None, f"Every GPU it may use is unhealthy ({why})."

        def free(device: Device) -> int:
            reserved = sum(max(0, b - u) for i, b, u in placed if i == device.index)
            return device.total - device.used - reserved

        count = {d.index: sum(1 for i, _, _ in placed if i == d.index) for d in healthy}
        best = max(healthy, key=lambda d: (free(d), -count[d.index], -d.index))
        if budget and free(best) < budget:
            return None, (
                f"Its gpu_memory_mb ({budget / 2**20:.0f} MB) fits no GPU: the most free is "
                f"{max(0, free(best)) / 2**20:.0f} MB on GPU {best.index} ({best.name}). Free "
                "GPU memory, lower gpu_memory_mb, or allow it more GPUs ([plugins.NAME] gpus)."
            )
        return best.index, ""

    def await_release(self, held: dict[int, int]) -> str:
        """Wait for the GPU memory of a lost worker's processes (``held``:
        pid -> bytes) to come back; how that went, for the history."""
        left = self.wait_released(held)
        self.stranded |= set(left)  # its GPU's record names it until it lets go
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
            if self._attribution is not None:
                self._attribution.close()
