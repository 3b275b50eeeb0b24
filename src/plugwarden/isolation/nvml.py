"""NVML as plugwarden reads it (docs/guides/gpu.md): per-process GPU memory,
each GPU's memory, utilisation, ECC counts and memory repairs (retired
pages, remapped rows), and Xid events; from the driver's library
(nvidia-ml-py) or, for tests on any machine, a JSON file
(``PLUGWARDEN_FAKE_NVML``, written by ``plugwarden.testing.FakeNvml``):
``{"gpus": [{"name", "bus", "total", "used", "processes": {PID: BYTES},
"utilization", "ecc_uncorrected", "retired_pages", "remapped_rows",
"remap_pending", "remap_failed", "retire_pending"}], "events": [{"gpu",
"xid"}], "kernel_log": PATH}``. NVML's Xid events name no process; the
driver's line in the kernel log does (:mod:`plugwarden.isolation.xidlog`).
Also what a CUDA error or an Xid means."""

from __future__ import annotations

import ctypes
import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from plugwarden.preflight.gpu_probe import memory_fault, memory_repairs

__all__ = [
    "FAKE_NVML_ENV",
    "RESET_XIDS",
    "XIDS",
    "Device",
    "GpuReader",
    "XidEvent",
    "cuda_visible",
    "foreign_pids",
    "pci_bus",
    "per_process",
    "reader",
    "sticky_cuda_error",
    "xid_meaning",
]

log = logging.getLogger("plugwarden.gpu")

FAKE_NVML_ENV = "PLUGWARDEN_FAKE_NVML"
INIT_PID_NAMESPACE = 0xEFFFFFFC  # the kernel's fixed inode number of the machine's PID namespace
# NVIDIA's Xid catalogue (https://docs.nvidia.com/deploy/xid-errors/): the
# ones a plugin host meets, and which call for a GPU reset.
XIDS = {
    13: "Graphics Engine Exception", 31: "GPU memory page fault", 43: "GPU stopped processing",
    45: "Preemptive cleanup, due to previous errors", 48: "Double Bit ECC Error",
    61: "Internal micro-controller breakpoint/warning", 62: "Internal micro-controller halt",
    63: "ECC page retirement or row remapping recording event",
    64: "ECC page retirement or row remapper recording failure", 74: "NVLink Error",
    79: "GPU has fallen off the bus", 92: "High single-bit ECC error rate",
    94: "Contained ECC error", 95: "Uncontained ECC error", 119: "GSP RPC timeout",
    120: "GSP error",
}  # fmt: skip
RESET_XIDS = frozenset({48, 62, 64, 74, 79, 95, 119, 120})


def xid_meaning(xid: int) -> str:
    return f"Xid {xid} ({XIDS.get(xid, 'see NVIDIA Xid errors')})"


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
    """One GPU as NVML shows it (memory in bytes; None: not readable)."""

    index: int
    name: str
    total: int
    used: int
    utilization: int | None = None  # percent of the last sample period
    ecc_uncorrected: int | None = None  # volatile uncorrected ECC errors
    retired_pages: int | None = None
    processes: dict[int, int] = field(default_factory=dict)  # pid -> its bytes on this GPU
    bus: str = ""  # PCI domain:bus:device, as the kernel log names it ("0000:3b:00")
    remapped_rows: int | None = None  # rows remapped for ECC errors (Ampere and later)
    memory_fault: str | None = None  # why its memory repairs take it out of service
    uuid: str = ""  # "GPU-8f6c...", as CUDA_VISIBLE_DEVICES may name it


@dataclass(frozen=True, slots=True)
class XidEvent:
    """An Xid error NVML reported on GPU ``gpu`` (``pid``: the process the
    driver's kernel log line names, where it names one)."""

    gpu: int
    xid: int
    pid: int | None = None


def pci_bus(address: str) -> str:
    """A PCI address as the kernel log names a GPU ("0000:3b:00") from NVML's
    ("00000000:3B:00.0") or the kernel's own; "" when it is neither."""
    parts = address.split(".")[0].split(":")
    try:
        domain, bus, device = (int(part, 16) for part in parts[-3:])
    except ValueError:
        return ""
    return f"{domain:04x}:{bus:02x}:{device:02x}"


def cuda_visible(spec: str | None, devices: Iterable[Device]) -> set[int] | None:
    """The GPUs (NVML indexes) a ``CUDA_VISIBLE_DEVICES`` value leaves
    visible: indexes (NVML's PCI bus order, which CUDA_DEVICE_ORDER=PCI_BUS_ID
    makes CUDA's) or UUIDs (``GPU-...``, or a unique start of one), read as
    CUDA reads them, up to the first it cannot; None when unset (all)."""
    if spec is None:
        return None
    listed = {device.index: device for device in devices}
    found: set[int] = set()
    for token in (part.strip() for part in spec.split(",")):
        uuid = token.startswith("GPU-")
        named = [i for i, device in listed.items() if uuid and device.uuid.startswith(token)]
        if token.isdigit() and int(token) in listed:
            found.add(int(token))
        elif len(named) == 1:
            found.add(named[0])
        else:
            break
    return found


def per_process(parts: Iterable[dict[int, int]]) -> dict[int, int]:
    """Each process's GPU memory summed over ``parts`` (pid -> bytes, a GPU each)."""
    used: dict[int, int] = {}
    for part in parts:
        for pid, amount in part.items():
            used[pid] = used.get(pid, 0) + amount
    return used


class GpuReader(Protocol):
    def processes(self) -> dict[int, int]:
        """Used GPU memory per process id (as the host sees it), every GPU."""

    def devices(self) -> list[Device]:
        """Every GPU, with its memory, utilisation and ECC counts."""

    def events(self) -> list[XidEvent]:
        """The Xid events since the last call."""

    def kernel_log(self) -> tuple[str | None, str]:
        """Where the driver's Xid lines can be read, or (None, why not)."""


class _FakeNvml:
    """NVML as a JSON file says it is (PLUGWARDEN_FAKE_NVML)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._seen = 0  # events already read

    def _state(self) -> dict[str, Any]:
        try:
            with open(self.path, encoding="utf-8") as file:
                state = json.load(file)
        except (OSError, ValueError):
            return {}
        return state if isinstance(state, dict) else {}

    def processes(self) -> dict[int, int]:
        return per_process(device.processes for device in self.devices())

    def devices(self) -> list[Device]:
        found = []
        for index, gpu in enumerate(self._state().get("gpus", [])):
            processes = {int(pid): int(n) for pid, n in (gpu.get("processes") or {}).items()}
            used = int(gpu.get("used", 0)) + sum(processes.values())
            found.append(Device(
                index, str(gpu.get("name", "Fake GPU")), int(gpu.get("total", 0)), used,
                gpu.get("utilization"), gpu.get("ecc_uncorrected"), gpu.get("retired_pages"),
                processes, str(gpu.get("bus", "")), gpu.get("remapped_rows"),
                memory_fault(bool(gpu.get("remap_pending")), bool(gpu.get("remap_failed")),
                             bool(gpu.get("retire_pending"))),
                str(gpu.get("uuid", "")),
            ))  # fmt: skip
        return found

    def events(self) -> list[XidEvent]:
        events = self._state().get("events", [])
        new, self._seen = events[self._seen :], len(events)
        return [XidEvent(int(e["gpu"]), int(e["xid"])) for e in new]  # as NVML: no process

    def kernel_log(self) -> tuple[str | None, str]:
        path = self._state().get("kernel_log")
        return (str(path), "") if path else (None, "the fake NVML names no kernel log")


class _Nvml:
    """The driver's NVML (nvidia-ml-py), initialised on first use."""

    def __init__(self, nvml: Any) -> None:
        self._nvml = nvml
        nvml.nvmlInit()
        self._handles = [
            nvml.nvmlDeviceGetHandleByIndex(index) for index in range(nvml.nvmlDeviceGetCount())
        ]
        self._buses = [self._bus(handle) for handle in self._handles]
        self._uuids = [self._uuid(handle) for handle in self._handles]
        self._events: Any = None
        try:
            self._events = nvml.nvmlEventSetCreate()
            for handle in self._handles:
                nvml.nvmlDeviceRegisterEvents(handle, nvml.nvmlEventTypeXidCriticalError,
                                              self._events)  # fmt: skip
        except nvml.NVMLError as exc:  # not supported here (some GPUs, some containers)
            self._events = None
            log.warning("NVML delivers no Xid events here (%s): GPU faults go unseen", exc)

    def _bus(self, handle: Any) -> str:
        try:
            bus = self._nvml.nvmlDeviceGetPciInfo(handle).busId  # "00000000:3B:00.0"
        except self._nvml.NVMLError:
            return ""
        return pci_bus(bus.decode() if isinstance(bus, bytes) else str(bus))

    def _uuid(self, handle: Any) -> str:
        try:
            uuid = self._nvml.nvmlDeviceGetUUID(handle)
        except self._nvml.NVMLError:
            return ""
        return uuid.decode() if isinstance(uuid, bytes) else str(uuid)

    def processes(self) -> dict[int, int]:
        return per_process(self._processes_on(handle) for handle in self._handles)

    def _processes_on(self, handle: Any) -> dict[int, int]:
        nvml, used = self._nvml, dict[int, int]()
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
            rows, fault = memory_repairs(nvml, handle)
            found.append(Device(
                index, name, int(memory.total), int(memory.used),
                self._read(lambda h=handle: nvml.nvmlDeviceGetUtilizationRates(h).gpu),
                self._read(lambda h=handle: nvml.nvmlDeviceGetTotalEccErrors(
                    h, nvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, nvml.NVML_VOLATILE_ECC)),
                self._read(lambda h=handle: len(nvml.nvmlDeviceGetRetiredPages(
                    h, nvml.NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR))),
                self._processes_on(handle), self._buses[index], rows, fault,
                self._uuids[index],
            ))  # fmt: skip
        return found

    def _read(self, query: Any) -> int | None:
        try:
            return int(query())
        except self._nvml.NVMLError:  # not supported by this GPU
            return None

    def events(self) -> list[XidEvent]:
        nvml, found = self._nvml, []
        while self._events is not None:
            try:
                data = nvml.nvmlEventSetWait_v2(self._events, 0)
            except nvml.NVMLError:  # a timeout: none waiting
                break
            # A handle is a ctypes pointer: a new object each time, equal only by address.
            device = _address(data.device)
            index = next((i for i, h in enumerate(self._handles) if _address(h) == device), -1)
            if index < 0:
                log.warning("NVML reported Xid %s on a GPU it did not list", data.eventData)
                continue
            found.append(XidEvent(index, int(data.eventData)))
        return found

    def kernel_log(self) -> tuple[str | None, str]:
        foreign = foreign_pids()
        return (None, foreign) if foreign else ("/dev/kmsg", "")


def foreign_pids(namespace: str = "/proc/self/ns/pid") -> str:
    """Why NVML's (and the driver's) process ids are not this host's, if
    they are not: NVML names processes by the machine's ids, and a host in
    a PID namespace of its own (a container) sees other ones."""
    try:
        if os.stat(namespace).st_ino == INIT_PID_NAMESPACE:
            return ""
    except OSError:
        return ""
    return (
        "this host runs in a PID namespace of its own, and NVML names processes by the "
        "machine's ids, so its workers' GPU memory reads 0 (run it in the machine's PID "
        "namespace: docker --pid=host, Kubernetes hostPID)"
    )


def _address(handle: Any) -> int | None:
    return ctypes.cast(handle, ctypes.c_void_p).value


def reader() -> tuple[GpuReader | None, str]:
    """NVML (or its fake), and a line saying which, or why there is none."""
    fake = os.environ.get(FAKE_NVML_ENV)
    if fake:
        return _FakeNvml(fake), f"fake NVML ({fake})"
    try:
        import pynvml

        foreign = foreign_pids()
        return _Nvml(pynvml), f"NVML; {foreign}" if foreign else "NVML"
    # No driver, no library, no GPU: any of NVML's errors, or an import error.
    except Exception as exc:  # noqa: BLE001
        return None, f"NVML is not available here ({type(exc).__name__}: {exc})"
