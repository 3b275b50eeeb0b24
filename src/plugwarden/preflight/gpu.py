"""The GPU pre-flight (docs/guides/states.md): tell apart no GPU, a broken driver and
a missing CUDA stack, before a ``requires_gpu`` plugin's code runs.

The probe itself runs in a subprocess (:mod:`plugwarden.preflight.gpu_probe`)
with a timeout, at most once per host start and only when some plugin needs
it; :func:`decide` turns its findings into a state and a reason, and is pure
so that every case can be tested on any machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from typing import Any

from plugwarden.exits import exit_reason
from plugwarden.plugin.lifecycle import State
from plugwarden.preflight.context import PreflightContext, Problem

__all__ = ["FAKE_GPUS", "FAKE_GPU_ENV", "GpuProbe", "check_gpu", "decide", "run_probe"]

PROBE_TIMEOUT_S = 120.0
CUDA_TORCH_FIX = (
    "Install a CUDA build of torch that matches your driver, e.g. pip install torch "
    "--index-url https://download.pytorch.org/whl/cu124"
)


@dataclass(frozen=True)
class GpuProbe:
    """What the probe saw. ``error`` is set when the probe itself failed."""

    pci_devices: tuple[str, ...] = ()
    dev_nodes: tuple[str, ...] = ()
    nvml: dict[str, Any] = field(default_factory=dict)
    torch: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def hardware(self) -> bool:
        return bool(self.pci_devices or self.dev_nodes or self.nvml.get("devices"))

    def to_dict(self) -> dict[str, Any]:
        return {
            "pci_devices": list(self.pci_devices),
            "dev_nodes": list(self.dev_nodes),
            "nvml": self.nvml,
            "torch": self.torch,
            "error": self.error,
        }


def run_probe(
    *,
    with_torch: bool = False,
    timeout_s: float = PROBE_TIMEOUT_S,
    command: list[str] | None = None,
) -> GpuProbe:
    """Run the probe subprocess; a hang or crash becomes ``GpuProbe.error``.
    ``command`` replaces the probe (tests use it to make one hang or crash)."""
    fake = os.environ.get(FAKE_GPU_ENV)
    if fake and command is None:
        return FAKE_GPUS.get(fake) or GpuProbe(
            error=f"{FAKE_GPU_ENV}={fake!r} is not one of {', '.join(FAKE_GPUS)}"
        )
    if command is None:
        command = [sys.executable, "-m", "plugwarden.preflight.gpu_probe"]
        if with_torch:
            command.append("--torch")
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired:
        return GpuProbe(
            error=f"GPU probe timed out after {timeout_s:g}s (importing torch or "
            "initialising CUDA hung)"
        )
    except OSError as exc:
        return GpuProbe(error=f"GPU probe could not start: {exc}")
    if done.returncode != 0:
        ended = exit_reason(done.returncode, "The probe process")
        return GpuProbe(error=f"GPU probe failed: {ended}{_last_line(done.stderr)}")
    try:
        data = json.loads(done.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        return GpuProbe(error=f"GPU probe printed no report{_last_line(done.stderr)}")
    return GpuProbe(
        tuple(data.get("pci_devices", ())),
        tuple(data.get("dev_nodes", ())),
        data.get("nvml", {}),
        data.get("torch", {}),
    )


def _last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return f" ({lines[-1]})" if lines else ""


def decide(probe: GpuProbe, plugin: str = "NAME") -> Problem | None:
    """None if a GPU plugin can run here, else the state and reason."""
    if probe.error is not None:
        return Problem(State.FAILED, f"GPU driver error: {probe.error}")
    nvml = probe.nvml
    if not probe.hardware:
        if nvml.get("loaded") is False and nvml.get("kind") == "driver":
            return Problem(
                State.FAILED,
                f"GPU driver error: {nvml.get('error')}. Reinstall or "
                "reload the NVIDIA driver (nvidia-smi must work).",
            )
        return Problem(
            State.UNAVAILABLE,
            "No GPU detected. Run this plugin on a machine with an NVIDIA GPU; or run it on "
            f"the CPU if it can ([plugins.{plugin}] requires_gpu = false, plus its own "
            f'setting, e.g. device = "cpu"), or disable it ([plugins.{plugin}] enabled = false).',
        )
    if not nvml.get("loaded"):
        return Problem(
            State.FAILED,
            f"GPU driver error: {nvml.get('error', 'NVML unavailable')}. "
            "The GPU is present but its driver is not working: install or reload the "
            "NVIDIA driver (nvidia-smi must work).",
        )
    torch = probe.torch
    if torch.get("skipped"):
        return None
    if not torch.get("installed"):
        return Problem(State.UNAVAILABLE, f"CUDA not installed: torch is missing. {CUDA_TORCH_FIX}")
    if torch.get("error"):
        return Problem(
            State.UNAVAILABLE,
            f"CUDA not installed: importing torch failed ({torch['error']}). {CUDA_TORCH_FIX}",
        )
    if not torch.get("cuda_build"):
        return Problem(
            State.UNAVAILABLE,
            f"CUDA not installed: torch {torch.get('version')} is "
            f"a CPU-only build. {CUDA_TORCH_FIX}",
        )
    if not torch.get("cuda_available"):
        detail = torch.get("cuda_error") or "torch.cuda.is_available() is False"
        return Problem(
            State.UNAVAILABLE,
            f"CUDA not installed: torch {torch.get('version')} "
            f"(CUDA {torch['cuda_build']}) cannot use the GPU ({detail}). "
            f"Check that the CUDA runtime matches driver {nvml.get('driver')}.",
        )
    return None


# For tests of GPU code paths on any machine: PLUGWARDEN_FAKE_GPU=<one of
# these> makes the probe report it instead of looking (plugwarden.testing's
# fake_gpu() sets it). Only the pre-flight is fooled, not the plugin's torch.
FAKE_GPU_ENV = "PLUGWARDEN_FAKE_GPU"
_FAKE_CARD = ("0000:00:04.0 NVIDIA Corporation (fake, PLUGWARDEN_FAKE_GPU)",)
_FAKE_NVML = {"loaded": True, "driver": "fake", "devices": [{"name": "Fake GPU"}]}
FAKE_GPUS = {
    "none": GpuProbe(nvml={"loaded": False, "kind": "library", "error": "no NVML (fake)"}),
    "present": GpuProbe(
        _FAKE_CARD,
        nvml=_FAKE_NVML,
        torch={"installed": True, "version": "fake", "cuda_build": "12.4", "cuda_available": True},
    ),
    "broken-driver": GpuProbe(
        _FAKE_CARD,
        nvml={"loaded": False, "kind": "driver", "error": "NVML_ERROR_DRIVER_NOT_LOADED (fake)"},
    ),
    "no-cuda": GpuProbe(
        _FAKE_CARD,
        nvml=_FAKE_NVML,
        torch={"installed": True, "version": "fake", "cuda_build": None},
    ),
}


_probe_lock = threading.Lock()


def check_gpu(context: PreflightContext) -> list[Problem]:
    """The pre-flight check: probes once per host start, only if needed."""
    if not context.manifest.requires_gpu:
        return []
    with _probe_lock:  # plugins are checked concurrently; one probe serves all
        probe = context.shared.get("gpu_probe")
        if probe is None:
            probe = context.shared["gpu_probe"] = run_probe()
    problem = decide(probe, context.source.name)
    return [] if problem is None else [problem]
