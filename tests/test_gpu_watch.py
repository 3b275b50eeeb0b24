"""The GPU memory guard (plugwarden.isolation.gpu) against a fake NVML:
a worker tree past ``gpu_memory_mb`` is killed and replaced, during a call
or between calls; one within it is left alone; no NVML, no pretence."""

from __future__ import annotations

import contextlib
import os
import threading
import time

import pytest

from plugwarden import ErrorType, HostConfig, State
from plugwarden.isolation.nvml import reader as nvml_reader
from plugwarden.plugin.manifest import GuardSettings, Manifest
from plugwarden.settings import resolve
from plugwarden.testing import FakeNvml, fake_gpu
from plugwarden.web.page import render_page
from plugwarden.web.prometheus import collector_registry, exposition
from tests.conftest import plugin_source, wait_for

# run() says it started, then waits for the test's word (or 30 s).
HOLDS = plugin_source(
    """
import os, time
if tool == "born":
    return BORN
open(args["started"], "w").close()
deadline = time.monotonic() + 30
while not os.path.exists(args["stop"]) and time.monotonic() < deadline:
    time.sleep(0.01)
return "done"
""",
    prelude="import time\nBORN = time.time()  # when this worker imported it",
)
BUDGET = {"plugins": {"cuda": {"gpu_memory_mb": 2048, "restart_backoff_s": 0.05}}}


@pytest.fixture
def nvml(tmp_path):
    with FakeNvml(tmp_path / "nvml.json") as fake:
        yield fake


@pytest.fixture
def gpu_host(nvml, plugwarden_plugin, plugwarden_host):
    plugwarden_plugin("cuda", HOLDS)
    return plugwarden_host(BUDGET)


def holding(host, tmp_path):
    """A call that waits in the plugin; (thread, its result list, stop file)."""
    started, stop = tmp_path / "started", tmp_path / "stop"
    results: list = []
    args = {"started": str(started), "stop": str(stop)}
    thread = threading.Thread(target=lambda: results.append(host.call("cuda", "hold", args)))
    thread.start()
    wait_for(started.exists, 30)
    return thread, results, stop


class TestBudget:
    def test_a_worker_past_its_budget_during_a_call_is_killed_and_replaced(
        self, gpu_host, nvml, tmp_path
    ):
        (pid,) = gpu_host.worker_pids("cuda")
        assert gpu_host.status("cuda").info.protections["gpu_memory"].startswith("enforced")
        thread, results, _ = holding(gpu_host, tmp_path)
        nvml.use(pid, 3072)
        thread.join(30)
        (result,) = results
        assert result.error_type == ErrorType.GPU_MEMORY_LIMIT and result.guard == "gpu_memory"
        assert "exceeded 2048 MB GPU memory limit (peak seen by NVML 3072 MB)" in result.error
        assert gpu_host.status("cuda").metrics["guard_trips"]["gpu_memory"] == 1
        nvml.use(pid, 0)  # the driver gives it back
        wait_for(lambda: gpu_host.worker_pids("cuda") not in ([], [pid]), 30)
        stop = tmp_path / "stop"
        stop.touch()
        assert gpu_host.call(
            "cuda", "hold", {"started": str(tmp_path / "s2"), "stop": str(stop)}
        ).ok

    def test_a_worker_past_its_budget_between_calls_is_replaced_saying_why(self, gpu_host, nvml):
        (pid,) = gpu_host.worker_pids("cuda")
        nvml.use(pid, 4096)
        wait_for(lambda: gpu_host.worker_pids("cuda") == [], 30)
        nvml.use(pid, 0)  # the driver gives it back
        wait_for(lambda: gpu_host.worker_pids("cuda") not in ([], [pid]), 30)
        reasons = [t.reason for t in gpu_host.status("cuda").history]
        assert any("GPU memory limit" in r and "between calls" in r for r in reasons), reasons

    def test_a_worker_within_its_budget_is_left_alone(self, gpu_host, nvml, tmp_path):
        (pid,) = gpu_host.worker_pids("cuda")
        nvml.use(pid, 1024)
        thread, results, stop = holding(gpu_host, tmp_path)
        wait_for(lambda: gpu_host.gpu_bytes("cuda") == 1024 * 2**20, 30)  # a sweep saw it
        stop.touch()
        thread.join(30)
        assert results[0].ok and gpu_host.worker_pids("cuda") == [pid]

    def test_without_nvml_the_budget_is_shown_not_enforced(
        self, plugwarden_plugin, plugwarden_host, monkeypatch
    ):
        monkeypatch.setenv("PLUGWARDEN_FAKE_NVML", "")
        monkeypatch.setattr("pynvml.nvmlInit", _no_driver)
        plugwarden_plugin("cuda", HOLDS)
        host = plugwarden_host(BUDGET)
        shown = host.status("cuda").info.protections["gpu_memory"]
        assert shown.startswith("NVML is not available here"), shown

    def test_an_inline_plugins_budget_is_shown_not_enforced(
        self, nvml, plugwarden_plugin, plugwarden_host
    ):
        """NVML counts GPU memory per process: the host's own holds no budget."""
        plugwarden_plugin("cuda", HOLDS)
        host = plugwarden_host({"plugins": {"cuda": {**BUDGET["plugins"]["cuda"],
                                                     "isolation": "inline"}}})  # fmt: skip
        shown = host.status("cuda").info.protections["gpu_memory"]
        assert shown.startswith("not enforced: isolation = inline"), shown


def _no_driver() -> None:
    import pynvml

    raise pynvml.NVMLError(pynvml.NVML_ERROR_DRIVER_NOT_LOADED)


class TestRelease:
    def test_a_replacement_waits_until_the_killed_workers_memory_is_back(self, gpu_host, nvml):
        (pid,) = gpu_host.worker_pids("cuda")
        nvml.use(pid, 4096)  # over budget: killed; NVML still shows its memory
        wait_for(lambda: gpu_host.worker_pids("cuda") == [], 30)
        wait_for(lambda: _noted(gpu_host, "exceeded 2048 MB GPU memory limit"), 30)
        released_at = time.time()
        nvml.use(pid, 0)
        wait_for(lambda: gpu_host.worker_pids("cuda") not in ([], [pid]), 30)
        assert gpu_host.call("cuda", "born", {}).result >= released_at  # it waited
        wait_for(lambda: _noted(gpu_host, "after its 4096 MB of GPU memory came back"), 30)

    def test_memory_that_does_not_come_back_is_named(
        self, nvml, plugwarden_plugin, plugwarden_host
    ):
        plugwarden_plugin("cuda", HOLDS)
        host = plugwarden_host({**BUDGET, "server": {"gpu_release_timeout_s": 0.5}})
        (pid,) = host.worker_pids("cuda")
        nvml.use(pid, 4096)
        wait_for(lambda: host.worker_pids("cuda") not in ([], [pid]), 30)
        wait_for(lambda: _noted(host, "not released within 0.5s"), 30)
        assert _noted(host, f"NVML still shows 4096 MB held by pid {pid}")
        (gpu,) = host.gpus()
        assert (gpu["stranded_bytes"], gpu["stranded_pids"]) == (4096 * 2**20, [pid])
        page = render_page(host.statuses(), [], host.memory_seen(), [], host.gpus())
        assert f"4096 MB still held by pid {pid} of a lost worker" in page
        text = exposition(collector_registry(host))[0].decode()
        assert 'plugwarden_gpu_memory_bytes{gpu="0",kind="stranded"} 4.294967296e+09' in text
        nvml.use(pid, 0)  # the driver lets go at last: the GPU's record forgets it
        wait_for(lambda: host.gpus()[0]["stranded_bytes"] == 0, 30)


SEES = plugin_source("import os\nreturn os.environ.get('CUDA_VISIBLE_DEVICES')")


class TestPlacement:
    """A GPU plugin's workers each see one GPU, chosen by memory free."""

    @pytest.fixture
    def placing(self, tmp_path, plugwarden_plugin, plugwarden_host):
        def make(gpus_mb, others=(), **plugin):
            fake = FakeNvml(tmp_path / "nvml.json", gpus_mb)
            stack.enter_context(fake)
            for gpu, mb in others:
                fake.others(gpu, mb)
            stack.enter_context(fake_gpu("present"))  # the pre-flight sees a GPU
            plugwarden_plugin("seer", SEES)
            settings = {"requires_gpu": True, **plugin}
            return plugwarden_host({"plugins": {"seer": settings}})

        with contextlib.ExitStack() as stack:
            yield make

    @staticmethod
    def placed(host) -> list[int]:
        """The GPUs the plugin's (two) workers are on, each once."""
        assert len(host.worker_pids("seer")) == 2
        return [gpu["index"] for gpu in host.worker_gpus("seer")]

    def test_workers_spread_over_gpus_by_memory_free(self, placing):
        assert self.placed(placing((16384, 16384), workers=2)) == [0, 1]

    def test_the_gpu_with_room_for_the_budget_takes_every_worker(self, placing):
        host = placing((16384, 81920), others=[(0, 8192)], workers=2, gpu_memory_mb=10240)
        assert self.placed(host) == [1]

    def test_a_listed_gpu_is_the_only_one_used_and_the_only_one_it_sees(self, placing):
        host = placing((16384, 81920), workers=2, gpus=[0])
        assert self.placed(host) == [0]
        assert {host.call("seer", "t", {}).result for _ in range(4)} == {"0"}

    @pytest.mark.parametrize("visible", ["1", "GPU-00000001", "GPU-00000001-fake-4000,0"])
    def test_the_hosts_cuda_visible_devices_bounds_every_placement(
        self, placing, monkeypatch, visible
    ):
        """An operator who starts the host with CUDA_VISIBLE_DEVICES set keeps
        its plugins to those GPUs (indexes, or UUIDs as CUDA reads them)."""
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
        expected = [0, 1] if visible.endswith(",0") else [1]
        assert self.placed(placing((16384, 16384), workers=2)) == expected

    def test_a_host_that_sees_none_of_its_gpus_makes_it_unavailable_saying_why(
        self, placing, monkeypatch
    ):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
        status = placing((16384, 16384), workers=2).status("seer")
        assert status.state is State.UNAVAILABLE
        assert status.reason.startswith("The host's CUDA_VISIBLE_DEVICES ('', GPUs [] by NVML")

    def test_a_placed_worker_numbers_gpus_as_nvml_does(
        self, tmp_path, plugwarden_plugin, plugwarden_host
    ):
        """NVML numbers GPUs in PCI bus order; CUDA, unless told, fastest first."""
        order = plugin_source("import os\nreturn os.environ.get('CUDA_DEVICE_ORDER')")
        with FakeNvml(tmp_path / "nvml.json"), fake_gpu("present"):
            plugwarden_plugin("order", order)
            host = plugwarden_host({"plugins": {"order": {"requires_gpu": True}}})
            assert host.call("order", "t", {}).result == "PCI_BUS_ID"

    def test_a_budget_that_fits_no_gpu_is_unavailable_naming_the_most_free(self, placing):
        host = placing((16384, 24576), others=[(1, 4096)], gpu_memory_mb=40960)
        status = host.status("seer")
        assert status.state is State.UNAVAILABLE
        assert "fits no GPU: the most free is 20480 MB on GPU 1" in status.reason

    def test_a_plugin_that_needs_no_gpu_is_not_placed(self, tmp_path, nvml, plugwarden_plugin,
                                                       plugwarden_host):  # fmt: skip
        plugwarden_plugin("seer", SEES)
        assert plugwarden_host().call("seer", "t", {}).result is None


@pytest.fixture
def seers(tmp_path, plugwarden_plugin, plugwarden_host):
    """``make(gpus_mb=(16384, 16384), kernel_log=True) -> (fake NVML, host)``:
    a host whose GPU plugin ``seer`` has two workers, on a fake NVML."""

    def make(gpus_mb=(16384, 16384), kernel_log=True):
        fake = FakeNvml(tmp_path / "nvml.json", gpus_mb, kernel_log=kernel_log)
        stack.enter_context(fake)
        stack.enter_context(fake_gpu("present"))
        plugwarden_plugin("seer", SEES)
        settings = {"requires_gpu": True, "workers": 2, "restart_backoff_s": 0.05}
        return fake, plugwarden_host({"plugins": {"seer": settings}})

    with contextlib.ExitStack() as stack:
        yield make


@pytest.fixture
def two_gpus(seers):
    return seers()


class TestXid:
    def test_an_xid_on_its_gpu_recycles_the_worker_naming_it(self, two_gpus):
        fake, host = two_gpus
        before = set(host.worker_pids("seer"))
        fake.xid(0, 31)
        wait_for(lambda: len(set(host.worker_pids("seer")) - before) == 1, 30)
        reasons = [t.reason for t in host.status("seer").history]
        assert any("GPU 0 reported Xid 31 (GPU memory page fault)" in r for r in reasons), reasons
        assert host.status("seer").metrics["guard_trips"]["gpu_fault"] == 1
        (gpu0, gpu1) = host.gpus()
        assert (gpu0["healthy"], gpu0["xids"], gpu1["xids"]) == (True, {"31": 1}, {})

    def test_an_xid_that_needs_a_reset_marks_the_gpu_unhealthy(self, two_gpus):
        fake, host = two_gpus
        before = set(host.worker_pids("seer"))
        fake.xid(1, 79)
        wait_for(lambda: len(set(host.worker_pids("seer")) - before) == 1, 30)
        assert not host.gpus()[1]["healthy"]
        assert "Xid 79 (GPU has fallen off the bus)" in host.gpus()[1]["reason"]
        sees = {host.call("seer", "t", {}).result for _ in range(8)}
        assert sees == {"0"}  # no worker is placed on GPU 1 again

    def test_gpus_in_metrics_and_on_the_page(self, two_gpus):
        fake, host = two_gpus
        assert [gpu["index"] for gpu in host.worker_gpus("seer")] == [0, 1]
        fake.xid(0, 31)
        wait_for(lambda: host.gpus()[0]["xids"] == {"31": 1}, 30)
        text = exposition(collector_registry(host))[0].decode()
        assert 'plugwarden_gpu_xid_total{gpu="0",xid="31"} 1.0' in text
        assert 'plugwarden_gpu_memory_bytes{gpu="1",kind="total"} 1.7179869184e+10' in text
        assert 'plugwarden_gpu_healthy{gpu="0"} 1.0' in text
        page = render_page(host.statuses(), [], gpus=host.gpus())
        assert "<h2>GPUs</h2>" in page and "Xid 31 &times;1" in page and "Fake GPU 1" in page

    def test_an_xid_naming_a_process_recycles_only_its_worker(self, two_gpus):
        fake, host = two_gpus
        pids = host.worker_pids("seer")
        fake.xid(0, 13, pid=pids[0])
        fake.xid(1, 13, pid=pids[0])  # whichever GPU it was placed on
        wait_for(lambda: pids[0] not in host.worker_pids("seer"), 30)
        assert pids[1] in host.worker_pids("seer")


class TestXidOnASharedGpu:
    """Two workers on one GPU: the driver's kernel log line says which
    process an Xid hit; without it, both are recycled."""

    @pytest.fixture
    def sharing(self, seers):
        return lambda kernel_log: seers((81920,), kernel_log)

    def test_the_kernel_logs_line_recycles_only_the_worker_it_names(self, sharing):
        fake, host = sharing(kernel_log=True)
        pids = host.worker_pids("seer")
        fake.xid(0, 31, pid=pids[1])
        wait_for(lambda: pids[1] not in host.worker_pids("seer"), 30)
        wait_for(lambda: len(host.worker_pids("seer")) == 2, 30)
        assert pids[0] in host.worker_pids("seer")
        assert host.status("seer").metrics["guard_trips"]["gpu_fault"] == 1
        assert host.gpus()[0]["xid_attribution"].startswith("per process")

    def test_an_xid_that_needs_a_reset_drains_the_gpu_whoever_caused_it(self, sharing):
        """The GPU is lost to every worker on it, not only the named one:
        all are recycled, and none is placed there again."""
        fake, host = sharing(kernel_log=True)
        pids = host.worker_pids("seer")
        fake.xid(0, 95, pid=pids[1])
        wait_for(lambda: not set(pids) & set(host.worker_pids("seer")), 30)
        wait_for(lambda: host.status("seer").state is State.UNAVAILABLE, 30)
        assert "Every GPU it may use is unhealthy (GPU 0: Xid 95 (Uncontained ECC error)" in (
            host.status("seer").reason
        )

    def test_without_the_kernel_log_an_xid_recycles_every_worker_on_its_gpu(self, sharing):
        fake, host = sharing(kernel_log=False)
        pids = host.worker_pids("seer")
        fake.xid(0, 31, pid=pids[1])
        wait_for(lambda: not set(pids) & set(host.worker_pids("seer")), 30)
        assert host.status("seer").metrics["guard_trips"]["gpu_fault"] == 2
        attribution = host.gpus()[0]["xid_attribution"]
        assert attribution.startswith("per GPU: the driver's Xid lines cannot be read")
        page = render_page(host.statuses(), [], gpus=host.gpus())
        assert "Xids recycle workers per GPU: the driver&#x27;s Xid lines" in page


class TestMemoryRepairs:
    """A GPU whose memory repairs wait for a reset, or failed, takes no new
    worker while NVML says so; its counts are shown."""

    def test_a_pending_row_remapping_keeps_workers_off_the_gpu_until_it_is_done(self, two_gpus):
        fake, host = two_gpus
        fake.repairs(1, remapped_rows=2, pending=True)
        wait_for(lambda: not host.gpus()[1]["healthy"], 30)
        gpu = host.gpus()[1]
        assert "a memory row remapping is pending: it needs a reset" in gpu["reason"]
        assert gpu["remapped_rows"] == 2
        assert host.restart("seer").state is State.INITIALIZED
        assert [g["index"] for g in host.worker_gpus("seer")] == [0]
        fake.repairs(1, remapped_rows=2)  # reset: the rows are remapped
        wait_for(lambda: host.gpus()[1]["healthy"], 30)
        assert host.restart("seer").state is State.INITIALIZED
        assert [g["index"] for g in host.worker_gpus("seer")] == [0, 1]

    def test_a_failed_remapping_says_the_gpu_needs_service(self, two_gpus):
        fake, host = two_gpus
        fake.repairs(0, remapped_rows=512, failed=True)
        fake.repairs(1, remapped_rows=512, failed=True)
        wait_for(lambda: not any(gpu["healthy"] for gpu in host.gpus()), 30)
        status = host.restart("seer")
        assert status.state is State.UNAVAILABLE
        assert "Every GPU it may use is unhealthy (GPU 0: remapping a failed memory row" in (
            status.reason
        )
        assert "the GPU needs service" in status.reason
        page = render_page(host.statuses(), [], gpus=host.gpus())
        assert "<th>ECC</th>" in page and "512 remapped rows" in page


def _noted(host, text: str) -> bool:
    return any(text in transition.reason for transition in host.status("cuda").history)


FAULTY = plugin_source(
    """
import os
if tool == "pid":
    return os.getpid()
raise RuntimeError(args["error"])
"""
)


class TestStickyErrors:
    @pytest.mark.parametrize(
        ("error", "sticky"),
        [
            (
                "CUDA error: an illegal memory access was encountered\nCompile with "
                "`TORCH_USE_CUDA_DSA` to enable device-side assertions.",
                True,
            ),
            ("CUDA error: device-side assert triggered", True),
            ("CUDA error: unspecified launch failure", True),
            ("CUDA out of memory. Tried to allocate 2.00 GiB", False),
            ("an illegal memory access, said a plugin with no GPU", False),
        ],
        ids=["illegal-address", "device-assert", "launch-failure", "oom", "not-cuda"],
    )
    def test_a_sticky_cuda_error_recycles_its_worker_at_once(
        self, plugwarden_plugin, plugwarden_host, error, sticky
    ):
        """A worker whose CUDA context is lost would fail every later call:
        it is replaced at once; any other error leaves it serving."""
        plugwarden_plugin("faulty", FAULTY)
        host = plugwarden_host({"plugins": {"faulty": {"restart_backoff_s": 0.05}}})
        (pid,) = host.worker_pids("faulty")
        result = host.call("faulty", "fail", {"error": error})
        assert not result.ok and result.error_type == "RuntimeError"
        if sticky:
            assert result.guard == "gpu_fault" and "it was recycled" in result.error
            wait_for(lambda: host.worker_pids("faulty") not in ([], [pid]), 30)
            assert host.status("faulty").metrics["guard_trips"]["gpu_fault"] == 1
        else:
            assert result.guard is None and host.worker_pids("faulty") == [pid]
        assert host.call("faulty", "pid", {}).ok


class TestSettings:
    def test_a_manifest_budget_is_capped_only_by_an_operator_default(self):
        asked = Manifest(guards=GuardSettings(gpu_memory_mb=8192))
        assert resolve("p", asked, HostConfig.from_dict({})).limits.gpu_memory_mb == 8192
        capped = HostConfig.from_dict({"defaults": {"gpu_memory_mb": 4096}})
        assert resolve("p", asked, capped).limits.gpu_memory_mb == 4096


# A plugin that takes GPU memory with torch: ``hog`` allocates args["mb"]
# MiB and holds it while the call waits.
TORCH_HOG = plugin_source(
    """
import time
import torch
if tool == "hog":
    block = torch.empty(args["mb"] * 2**20, dtype=torch.uint8, device="cuda")
    block.fill_(1)
    torch.cuda.synchronize()
    time.sleep(args.get("hold_s", 10))
    return int(block.numel())
return torch.cuda.get_device_name(0)
"""
)


@pytest.mark.gpu
def test_on_a_real_gpu_a_plugin_past_its_budget_is_killed_and_its_memory_comes_back(
    plugwarden_plugin, plugwarden_host
):
    """Real NVML, a real CUDA allocation: past gpu_memory_mb the worker is
    killed, and its replacement starts once NVML shows the memory released."""
    plugwarden_plugin("hog", TORCH_HOG, manifest={"requires_gpu": True})
    host = plugwarden_host(
        {"plugins": {"hog": {"gpu_memory_mb": 1024, "memory_mb": 16384, "timeout_s": 120,
                             "load_timeout_s": 120, "restart_backoff_s": 0.05}}}
    )  # fmt: skip
    assert host.status("hog").info.protections["gpu_memory"] == "enforced (NVML)"
    within = host.call("hog", "hog", {"mb": 256, "hold_s": 2})
    assert within.ok, within.error
    (pid,) = host.worker_pids("hog")
    result = host.call("hog", "hog", {"mb": 2048, "hold_s": 60})
    assert result.error_type == ErrorType.GPU_MEMORY_LIMIT, result.error
    wait_for(lambda: host.worker_pids("hog") not in ([], [pid]), 120)
    wait_for(lambda: _noted_of(host, "hog", "of GPU memory came back"), 120)
    print(f"GPU guard on {host.call('hog', 'name', {}).result}: {result.error}")


def _noted_of(host, name: str, text: str) -> bool:
    return any(text in transition.reason for transition in host.status(name).history)


@pytest.mark.gpu
def test_on_a_real_gpu_nvml_names_each_gpus_bus_and_its_repairs_are_read(
    plugwarden_plugin, plugwarden_host
):
    """Real NVML: every GPU is read with the PCI address its kernel log lines
    carry, and (as root) the driver's Xid lines can be read."""
    plugwarden_plugin("hog", TORCH_HOG, manifest={"requires_gpu": True})
    host = plugwarden_host({"plugins": {"hog": {"load_timeout_s": 120}}})
    assert host.status("hog").state is State.INITIALIZED
    gpus = host.gpus()
    assert gpus and all(gpu["memory_total_bytes"] > 0 for gpu in gpus)
    reader, state = nvml_reader()
    assert reader is not None and state == "NVML"
    buses = [device.bus for device in reader.devices()]
    assert all(len(bus) == len("0000:3b:00") for bus in buses), buses
    if os.geteuid() == 0:
        assert gpus[0]["xid_attribution"].startswith("per process"), gpus[0]
    print(f"NVML on {gpus[0]['name']}: buses {buses}; {gpus}")
