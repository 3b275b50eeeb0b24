"""The GPU pre-flight: no GPU, broken driver, missing CUDA, healthy."""

from __future__ import annotations

import sys

import pytest

from plugwarden import State
from plugwarden.preflight.gpu import GpuProbe, decide, run_probe
from tests.conftest import ECHO

NVML_OK = {"loaded": True, "driver": "550.54", "devices": [{"name": "H100", "memory_mb": 81559}]}
TORCH_OK = {
    "installed": True,
    "version": "2.5.1+cu124",
    "cuda_build": "12.4",
    "cuda_available": True,
    "device_count": 1,
}


class TestDecide:
    def test_no_hardware_is_unavailable_no_gpu_detected(self):
        probe = GpuProbe(
            nvml={"loaded": False, "kind": "library", "error": "NVML Shared Library Not Found"}
        )
        problem = decide(probe, "tracker")
        assert problem.state is State.UNAVAILABLE
        assert problem.reason.startswith("No GPU detected.")
        assert "[plugins.tracker] enabled = false" in problem.reason
        # The CPU opt-in is named too.
        assert "[plugins.tracker] requires_gpu = false" in problem.reason

    def test_hardware_with_broken_driver_is_failed(self):
        probe = GpuProbe(
            pci_devices=("0000:3b:00.0",),
            nvml={"loaded": False, "kind": "driver", "error": "Driver Not Loaded"},
        )
        problem = decide(probe)
        assert problem.state is State.FAILED
        assert problem.reason.startswith("GPU driver error: Driver Not Loaded")

    def test_hardware_without_driver_library_is_failed(self):
        probe = GpuProbe(
            dev_nodes=("/dev/nvidia0",),
            nvml={"loaded": False, "kind": "library", "error": "NVML Shared Library Not Found"},
        )
        assert decide(probe).state is State.FAILED

    @pytest.mark.parametrize(
        ("torch", "detail"),
        [
            ({"installed": False}, "torch is missing"),
            ({"installed": True, "version": "2.13.0+cpu", "cuda_build": None}, "a CPU-only build"),
            (
                {"installed": True, "error": "OSError: libcudart.so.12: cannot open"},
                "importing torch failed",
            ),
            (
                {
                    **TORCH_OK,
                    "cuda_available": False,
                    "cuda_error": "CUDA driver version is insufficient",
                },
                "cannot use the GPU",
            ),
        ],
        ids=["torch-missing", "cpu-build", "cuda-lib-missing", "cuda-unusable"],
    )
    def test_gpu_without_cuda_stack_is_unavailable_cuda_not_installed(self, torch, detail):
        problem = decide(GpuProbe(pci_devices=("0000:3b:00.0",), nvml=NVML_OK, torch=torch))
        assert problem.state is State.UNAVAILABLE
        assert problem.reason.startswith("CUDA not installed")
        assert detail in problem.reason
        assert "pip install torch" in problem.reason or "driver 550.54" in problem.reason

    def test_healthy_gpu_passes(self):
        assert decide(GpuProbe(pci_devices=("0000:3b:00.0",), nvml=NVML_OK, torch=TORCH_OK)) is None

    def test_probe_failure_is_a_reason(self):
        problem = decide(GpuProbe(error="GPU probe timed out after 5s"))
        assert problem.state is State.FAILED
        assert "timed out" in problem.reason


class TestProbe:
    def test_hanging_probe_is_a_reason_not_a_hang(self):
        probe = run_probe(
            command=[sys.executable, "-c", "import time; time.sleep(600)"], timeout_s=0.5
        )
        assert probe.error == (
            "GPU probe timed out after 0.5s (importing torch or initialising CUDA hung)"
        )

    def test_crashing_probe_is_a_reason(self):
        code = "import ctypes; ctypes.string_at(0)"
        probe = run_probe(command=[sys.executable, "-c", code])
        assert "SIGSEGV" in probe.error

    def test_real_probe_on_this_machine(self):
        """The probe runs here; without NVIDIA hardware it says "No GPU detected"."""
        probe = run_probe()
        assert probe.error is None
        if probe.hardware:
            pytest.skip("this machine has NVIDIA hardware")
        assert decide(probe).reason.startswith("No GPU detected")
        assert probe.torch == {"skipped": True}  # no GPU: torch is not even imported


def test_gpu_plugin_without_gpu_never_imports_torch_in_the_host(plugwarden_plugin, plugwarden_host):
    """requires_gpu on a machine without a GPU: UNAVAILABLE, and the host
    process has neither imported torch nor the plugin."""
    if run_probe().hardware:
        pytest.skip("this machine has NVIDIA hardware")
    plugwarden_plugin("tracker", "import torch\n" + ECHO, manifest={"requires_gpu": True})
    plugwarden_plugin("cpu", ECHO)
    host = plugwarden_host()
    status = host.status("tracker")
    assert status.state is State.UNAVAILABLE
    assert status.reason.startswith("No GPU detected")
    assert host.status("cpu").state is State.INITIALIZED
    assert "torch" not in sys.modules


GPU_PLUGIN = """
from plugwarden import hookimpl
import torch

_device = None

@hookimpl
def init(config):
    global _device
    _device = torch.device("cuda")
    torch.ones(1, device=_device)

@hookimpl
def validate():
    return torch.cuda.is_available()

@hookimpl
def run(tool, args):
    x = torch.arange(args.get("n", 10), device=_device, dtype=torch.float32)
    return {"sum": float(x.sum().item()), "device": torch.cuda.get_device_name(0)}
"""


@pytest.mark.gpu
def test_gpu_plugin_is_initialized_on_a_cuda_machine(plugwarden_plugin, plugwarden_host):
    """On a machine with CUDA (and a CUDA build of torch), a requires_gpu plugin loads and runs
    in its worker."""
    plugwarden_plugin("cuda", GPU_PLUGIN, manifest={"requires_gpu": True})
    host = plugwarden_host({"plugins": {"cuda": {"memory_mb": 16384}}})
    status = host.status("cuda")
    assert status.state is State.INITIALIZED, status.reason
    result = host.call("cuda", "sum", {"n": 10})
    assert result.ok, result.error
    assert result.result["sum"] == 45.0
    print(f"GPU plugin ran on {result.result['device']}")


class TestOperatorOverrides:
    def test_requires_gpu_false_runs_a_gpu_plugin_without_the_gpu_check(
        self, plugwarden_plugin, plugwarden_host, plugwarden_fake_gpu
    ):
        from tests.conftest import ECHO

        plugwarden_fake_gpu("none")
        plugwarden_plugin("cam", ECHO, manifest={"requires_gpu": True})
        refused = plugwarden_host()
        assert refused.status("cam").reason.startswith("No GPU detected")
        allowed = plugwarden_host({"plugins": {"cam": {"requires_gpu": False, "device": "cpu"}}})
        assert allowed.status("cam").available

    def test_a_model_file_the_operator_provides_is_checked_before_loading(
        self, plugwarden_plugin, plugwarden_host, tmp_path
    ):
        from tests.conftest import ECHO

        plugwarden_plugin("cam", ECHO)
        missing = tmp_path / "weights.pth"
        host = plugwarden_host({"plugins": {"cam": {"models": {"extra": str(missing)}}}})
        assert host.status("cam").reason == f"Model file not found: {missing}"


class TestDoctorLines:
    def test_each_gpu_shows_its_memory_used_of_total_and_uncorrected_ecc_errors(self):
        from plugwarden.cli.doctor import gpu_lines

        nvml = {"loaded": True, "driver": "580.1", "devices": [
            {"name": "H100", "memory_mb": 81559, "used_mb": 2048, "ecc_uncorrected": 3},
            {"name": "H100", "memory_mb": 81559}]}  # fmt: skip
        driver = dict(gpu_lines(GpuProbe(nvml=nvml, torch={"skipped": True})))["driver"]
        assert "H100 (2048 of 81559 MB used, 3 uncorrected ECC errors)" in driver
        assert "H100 (81559 MB)" in driver

    def test_memory_repairs_show_the_rows_remapped_and_what_the_gpu_needs(self):
        from plugwarden.cli.doctor import gpu_lines

        fault = "a memory row remapping is pending: it needs a reset (nvidia-smi -r, or a reboot)"
        nvml = {"loaded": True, "driver": "580.1", "devices": [
            {"name": "H100", "memory_mb": 81559, "used_mb": 0, "remapped_rows": 2,
             "memory_fault": fault}]}  # fmt: skip
        driver = dict(gpu_lines(GpuProbe(nvml=nvml, torch={"skipped": True})))["driver"]
        assert f"H100 (0 of 81559 MB used, 2 memory rows remapped; {fault})" in driver
