"""NVML as plugwarden reads it (plugwarden.isolation.nvml), from the
driver's library: nvidia-ml-py's own types and errors, with a stand-in for
the driver behind them (this machine has none; the gpu-marked tests read a
real one). A device handle is a ctypes pointer, a new object each time the
library hands one out, as the real library does."""

from __future__ import annotations

import copy
import ctypes
import os
import shutil
import subprocess
import sys
from types import SimpleNamespace
from typing import Any

import pynvml
import pytest

from plugwarden.isolation.nvml import Device, XidEvent, cuda_visible, foreign_pids, reader
from plugwarden.preflight import gpu_probe

MIB = 2**20


class Driver:
    """The part of nvidia-ml-py plugwarden calls, over GPUs described as
    dicts: name, bus, total, used, compute/graphics processes, remapper."""

    NVMLError = pynvml.NVMLError
    NVMLError_LibraryNotFound = pynvml.NVMLError_LibraryNotFound

    def __init__(self, gpus: list[dict[str, Any]]) -> None:
        self.gpus = copy.deepcopy(gpus)  # a test changes its own
        self._structs = [pynvml.struct_c_nvmlDevice_t() for _ in gpus]
        self.pending: list[tuple[int, int]] = []  # (GPU, Xid) events not yet waited for
        for name in dir(pynvml):
            if name.startswith(("NVML_", "nvmlEventType")):
                setattr(self, name, getattr(pynvml, name))

    def _gpu(self, handle: Any) -> dict[str, Any]:
        address = ctypes.cast(handle, ctypes.c_void_p).value
        (index,) = [i for i, s in enumerate(self._structs) if ctypes.addressof(s) == address]
        return self.gpus[index]

    def _fail(self, code: int = pynvml.NVML_ERROR_NOT_SUPPORTED) -> None:
        raise pynvml.NVMLError(code)

    def nvmlInit(self) -> None:
        pass

    def nvmlShutdown(self) -> None:
        pass

    def nvmlSystemGetDriverVersion(self) -> str:
        return "580.65.06"

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any:
        return ctypes.pointer(self._structs[index])  # a new pointer object each call

    def nvmlEventSetCreate(self) -> object:
        return object()

    def nvmlDeviceRegisterEvents(self, handle: Any, types: int, events: object) -> None:
        if self.gpus[0].get("no_events"):
            self._fail()

    def nvmlEventSetWait_v2(self, events: object, timeout_ms: int) -> Any:
        if not self.pending:
            self._fail(pynvml.NVML_ERROR_TIMEOUT)
        gpu, xid = self.pending.pop(0)
        data = pynvml.c_nvmlEventData_t()
        data.device = ctypes.pointer(self._structs[gpu])
        data.eventType, data.eventData = pynvml.nvmlEventTypeXidCriticalError, xid
        return data

    def nvmlDeviceGetPciInfo(self, handle: Any) -> Any:
        info = pynvml.nvmlPciInfo_t()
        info.busId = self._gpu(handle)["bus"].encode()
        return info

    def nvmlDeviceGetUUID(self, handle: Any) -> Any:
        return self._gpu(handle)["uuid"]

    def nvmlDeviceGetName(self, handle: Any) -> Any:
        return self._gpu(handle)["name"]

    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> Any:
        gpu, memory = self._gpu(handle), pynvml.c_nvmlMemory_t()
        memory.total, memory.used = gpu["total"], gpu["used"]
        memory.free = gpu["total"] - gpu["used"]
        return memory

    def nvmlDeviceGetUtilizationRates(self, handle: Any) -> Any:
        rates = pynvml.c_nvmlUtilization_t()
        rates.gpu, rates.memory = 37, 12
        return rates

    def nvmlDeviceGetTotalEccErrors(self, handle: Any, kind: int, counter: int) -> int:
        return int(self._gpu(handle).get("ecc", 0))

    def nvmlDeviceGetRetiredPages(self, handle: Any, cause: int) -> list[int]:
        if "remapper" in self._gpu(handle):  # Ampere and later retire no pages
            self._fail()
        return [0x1000, 0x2000]

    def nvmlDeviceGetRetiredPagesPendingStatus(self, handle: Any) -> int:
        pending = self._gpu(handle).get("retire_pending")
        return pynvml.NVML_FEATURE_ENABLED if pending else pynvml.NVML_FEATURE_DISABLED

    def nvmlDeviceGetRemappedRows(self, handle: Any) -> tuple[int, int, int, int]:
        remapper = self._gpu(handle).get("remapper")
        if remapper is None:
            self._fail()
        return remapper

    def _processes(self, handle: Any, kind: str) -> list[Any]:
        found = self._gpu(handle).get(kind, {}).items()
        return [SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in found]

    def nvmlDeviceGetComputeRunningProcesses(self, handle: Any) -> list[Any]:
        return self._processes(handle, "compute")

    def nvmlDeviceGetGraphicsRunningProcesses(self, handle: Any) -> list[Any]:
        return self._processes(handle, "graphics")


H100 = {
    "name": "NVIDIA H100 80GB HBM3", "bus": "00000000:1B:00.0", "total": 81559 * MIB,
    "used": 4096 * MIB, "compute": {101: 3072 * MIB, 102: None}, "graphics": {101: 1024 * MIB},
    "remapper": (2, 1, 1, 0), "ecc": 1, "uuid": "GPU-8f6c1e2a-61c4-53b1-0e4b-1a2b3c4d5e6f",
}  # fmt: skip
V100 = {
    "name": b"Tesla V100-SXM2-16GB", "bus": "00000000:86:00.0", "total": 16384 * MIB,
    "used": 0, "retire_pending": True, "uuid": b"GPU-0d9e1f7c-2b3a-4c5d-8e9f-a0b1c2d3e4f5",
}  # fmt: skip


@pytest.fixture
def driver(monkeypatch):
    made = Driver([H100, V100])
    monkeypatch.setitem(sys.modules, "pynvml", made)
    return made


class TestDevices:
    def test_each_gpu_is_read_with_its_memory_bus_and_processes(self, driver):
        source, state = reader()
        assert source is not None and state == "NVML"
        h100, v100 = source.devices()
        assert (h100.index, h100.name, h100.total, h100.used) == (
            0, "NVIDIA H100 80GB HBM3", 81559 * MIB, 4096 * MIB,
        )  # fmt: skip
        assert (h100.bus, v100.bus, v100.name) == (
            "0000:1b:00",
            "0000:86:00",
            "Tesla V100-SXM2-16GB",
        )
        assert h100.processes == {101: 4096 * MIB}  # compute and graphics; unreadable left out
        assert source.processes() == {101: 4096 * MIB}
        assert (h100.utilization, h100.ecc_uncorrected) == (37, 1)
        assert (h100.uuid, v100.uuid) == (H100["uuid"], V100["uuid"].decode())

    def test_repairs_are_remapped_rows_from_ampere_on_and_retired_pages_before(self, driver):
        source, _ = reader()
        h100, v100 = source.devices()
        assert (h100.retired_pages, h100.remapped_rows) == (None, 3)
        assert "a memory row remapping is pending: it needs a reset" in h100.memory_fault
        assert (v100.retired_pages, v100.remapped_rows) == (2, None)
        assert "a memory page retirement is pending" in v100.memory_fault

    def test_a_failed_remapping_says_the_gpu_needs_service(self, driver):
        driver.gpus[0]["remapper"] = (0, 512, 0, 1)
        (h100, _) = reader()[0].devices()
        assert "the GPU needs service" in h100.memory_fault

    def test_a_gpu_without_repairs_waiting_has_no_fault(self, driver):
        driver.gpus[0]["remapper"] = (3, 0, 0, 0)
        driver.gpus[1]["retire_pending"] = False
        assert [device.memory_fault for device in reader()[0].devices()] == [None, None]


class TestEvents:
    def test_an_xid_is_reported_on_the_gpu_whose_handle_the_event_carries(self, driver):
        source, _ = reader()
        driver.pending += [(1, 79), (0, 31)]
        assert source.events() == [XidEvent(1, 79), XidEvent(0, 31)]
        assert source.events() == []
        assert source.kernel_log() == ("/dev/kmsg", "")

    def test_a_gpu_that_delivers_no_xid_events_is_said_in_the_log(self, driver, caplog):
        driver.gpus[0]["no_events"] = True
        source, _ = reader()
        assert source is not None and source.events() == []
        assert "NVML delivers no Xid events here (Not Supported)" in caplog.text


class TestPidNamespace:
    def test_a_host_in_the_machines_pid_namespace_reads_nvmls_ids_as_its_own(self):
        assert foreign_pids() == ""

    @pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root")
    def test_a_host_in_a_pid_namespace_of_its_own_says_nvmls_ids_are_not_its(self):
        code = "from plugwarden.isolation.nvml import foreign_pids; print(foreign_pids())"
        done = subprocess.run(
            ["unshare", "--pid", "--fork", sys.executable, "-c", code],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        assert "this host runs in a PID namespace of its own" in done.stdout
        assert "Kubernetes hostPID" in done.stdout


class TestProbe:
    def test_the_gpu_probe_reads_each_gpus_memory_repairs_as_the_watch_does(self, driver):
        """What ``plugwarden doctor`` shows (its probe runs in a process of its own)."""
        found = gpu_probe.nvml()
        assert found["loaded"] and found["driver"] == "580.65.06"
        h100, v100 = found["devices"]
        assert (h100["memory_mb"], h100["used_mb"], h100["remapped_rows"]) == (81559, 4096, 3)
        assert "a memory row remapping is pending" in h100["memory_fault"]
        assert v100["remapped_rows"] is None
        assert "a memory page retirement is pending" in v100["memory_fault"]


THREE = tuple(Device(i, "H100", 1, 0, uuid=f"GPU-{i}a7e-5f0c") for i in range(3))


class TestCudaVisible:
    @pytest.mark.parametrize(
        ("spec", "visible"),
        [
            (None, None),
            ("", set()),
            ("2", {2}),
            ("0,GPU-1a7e,7,2", {0, 1}),  # as CUDA: up to the first it cannot read
            ("GPU-", set()),  # names more than one: CUDA stops there
            ("MIG-4f1e", set()),
        ],
    )
    def test_as_cuda_reads_it(self, spec, visible):
        assert cuda_visible(spec, THREE) == visible
