"""The GPU probe's subprocess side: ``python -m plugwarden.preflight.gpu_probe [--torch]``.

Prints one JSON object and exits. It runs in a short-lived process of its own
so that the host never imports torch, never initialises CUDA (a process that
has must not fork), and survives a probe that hangs or crashes.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import json
import shutil
import subprocess
import sys
from typing import Any

NVIDIA_VENDOR = "0x10de"


def memory_fault(
    remap_pending: bool = False, remap_failed: bool = False, retire_pending: bool = False
) -> str | None:
    """Why a GPU's memory repairs take it out of service, if they do: a row
    remapping (Ampere and later) or page retirement (before) that waits for a
    reset, or a remapping that failed."""
    if remap_failed:
        return (
            "remapping a failed memory row did not succeed: the GPU needs service "
            "(nvidia-smi -q -d ROW_REMAPPER)"
        )
    if remap_pending or retire_pending:
        what = "memory row remapping" if remap_pending else "memory page retirement"
        return f"a {what} is pending: it needs a reset (nvidia-smi -r, or a reboot)"
    return None


def memory_repairs(nvml: Any, handle: Any) -> tuple[int | None, str | None]:
    """A GPU's remapped rows (Ampere and later; None before, where pages are
    retired instead), and whether its repairs take it out of service, read
    with the driver's library ``nvml`` (nvidia-ml-py)."""
    try:
        corrected, uncorrected, pending, failed = nvml.nvmlDeviceGetRemappedRows(handle)
    except nvml.NVMLError:  # no row remapper: page retirement, where there is ECC
        try:
            retiring = nvml.nvmlDeviceGetRetiredPagesPendingStatus(handle)
        except nvml.NVMLError:  # no ECC at all
            return None, None
        return None, memory_fault(retire_pending=retiring == nvml.NVML_FEATURE_ENABLED)
    return int(corrected) + int(uncorrected), memory_fault(bool(pending), bool(failed))


def pci_devices() -> list[str]:
    """NVIDIA display/3D controllers on the PCI bus (seen with no driver at all)."""
    found = []
    for device in glob.glob("/sys/bus/pci/devices/*"):
        try:
            with open(f"{device}/vendor") as vendor, open(f"{device}/class") as klass:
                if vendor.read().strip() == NVIDIA_VENDOR and klass.read().startswith("0x03"):
                    found.append(device.rsplit("/", 1)[-1])
        except OSError:
            continue
    return found


def nvml() -> dict[str, Any]:
    try:
        import pynvml
    except ImportError as exc:
        return {
            "loaded": False,
            "error": f"nvidia-ml-py not importable ({exc})",
            "kind": "bindings",
        }
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        kind = "library" if isinstance(exc, pynvml.NVMLError_LibraryNotFound) else "driver"
        return {"loaded": False, "error": str(exc), "kind": kind}
    try:
        count = pynvml.nvmlDeviceGetCount()
        devices = []
        for index in range(count):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            name = pynvml.nvmlDeviceGetName(handle)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            device = {
                "name": name.decode() if isinstance(name, bytes) else name,
                "memory_mb": int(memory.total) // 2**20,
                "used_mb": int(memory.used) // 2**20,
            }
            with contextlib.suppress(pynvml.NVMLError):  # not every GPU counts them
                device["ecc_uncorrected"] = int(
                    pynvml.nvmlDeviceGetTotalEccErrors(
                        handle, pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, pynvml.NVML_VOLATILE_ECC
                    )
                )
            device["remapped_rows"], device["memory_fault"] = memory_repairs(pynvml, handle)
            devices.append(device)
        driver = pynvml.nvmlSystemGetDriverVersion()
        return {
            "loaded": True,
            "driver": driver.decode() if isinstance(driver, bytes) else driver,
            "devices": devices,
        }
    except pynvml.NVMLError as exc:
        return {"loaded": False, "error": str(exc), "kind": "driver"}
    finally:
        with contextlib.suppress(pynvml.NVMLError):
            pynvml.nvmlShutdown()


def nvidia_smi() -> dict[str, Any] | None:
    """The fallback when the NVML bindings cannot load."""
    binary = shutil.which("nvidia-smi")
    if binary is None:
        return None
    query = [
        binary,
        "--query-gpu=name,memory.total,driver_version",
        "--format=csv,noheader,nounits",
    ]
    try:
        done = subprocess.run(query, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"loaded": False, "error": f"nvidia-smi failed: {exc}", "kind": "driver"}
    if done.returncode != 0:
        message = (done.stdout + done.stderr).strip().splitlines()
        return {
            "loaded": False,
            "error": message[0] if message else "nvidia-smi failed",
            "kind": "driver",
        }
    devices, driver = [], None
    for line in done.stdout.strip().splitlines():
        name, memory, driver = (part.strip() for part in line.split(","))
        devices.append({"name": name, "memory_mb": int(float(memory))})
    return {"loaded": True, "driver": driver, "devices": devices, "source": "nvidia-smi"}


def torch_report() -> dict[str, Any]:
    if importlib.util.find_spec("torch") is None:
        return {"installed": False}
    try:
        import torch
    # Importing torch can fail in many ways (a missing CUDA library is an OSError).
    except Exception as exc:  # noqa: BLE001
        return {"installed": True, "error": f"{type(exc).__name__}: {exc}"}
    report: dict[str, Any] = {
        "installed": True,
        "version": torch.__version__,
        "cuda_build": torch.version.cuda,
    }
    try:
        report["cuda_available"] = bool(torch.cuda.is_available())
        report["device_count"] = int(torch.cuda.device_count()) if report["cuda_available"] else 0
    # CUDA initialisation errors come in many types across torch versions.
    except Exception as exc:  # noqa: BLE001
        report["cuda_available"] = False
        report["cuda_error"] = f"{type(exc).__name__}: {exc}"
    return report


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    gpu = nvml()
    if not gpu["loaded"] and gpu.get("kind") == "bindings":
        gpu = nvidia_smi() or gpu
    pci = pci_devices()
    has_devices = bool(gpu.get("devices")) or bool(pci)
    # torch costs seconds to import: only when asked (doctor), or when there is
    # a GPU whose CUDA stack must be checked.
    wants_torch = "--torch" in args or has_devices
    result = {
        "pci_devices": pci,
        "dev_nodes": sorted(glob.glob("/dev/nvidia[0-9]*")),
        "nvml": gpu,
        "torch": torch_report() if wants_torch else {"skipped": True},
    }
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
