"""isolation = "ray" on a real local Ray cluster (docs/guides/isolation.md): the same
states, records and guards as process workers, with Ray actors as workers."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from plugwarden import HostConfig, State
from plugwarden.blob import Blob
from plugwarden.cli.doctor import ray_cluster as describe_cluster
from plugwarden.web.prometheus import collector_registry, exposition
from tests.conftest import wait_for

PLUGIN = """
import ctypes, os, time
import plugwarden

WORKER = os.urandom(8).hex()  # one per worker process

@plugwarden.hookimpl
def validate():
    return True

@plugwarden.hookimpl
def health():
    return {"worker": WORKER}

@plugwarden.hookimpl
def run(tool, args):
    if tool == "echo":
        return {"echo": args, "worker": WORKER}
    if tool == "sleep":
        time.sleep(args["s"])
        return "slept"
    if tool == "segv":
        ctypes.string_at(0)
    if tool == "hog":
        blocks = []
        while True:
            blocks.append(bytearray(16 * 2**20))
            time.sleep(0.01)
    if tool == "binary":
        import numpy
        return {"bytes": args["b"], "array": args["a"] * 2, "kind": type(args["a"]).__name__}
    if tool == "subclass":
        class Crafted(dict):
            pass
        return Crafted(a=1)
    if tool == "count":
        for i in range(args["n"]):
            if plugwarden.cancelled():
                return {"stopped_at": i}
            plugwarden.progress(i + 1, args["n"], "counting")
            time.sleep(0.02)
        return {"counted": args["n"]}
    raise ValueError(f"no tool {tool}")
"""


def ray_config(address: str, isolation: str, **plugins: dict[str, Any]) -> dict[str, Any]:
    return {
        "defaults": {
            "isolation": isolation,
            "timeout_s": 30,
            "memory_mb": 200,
            "restart_backoff_s": 0.05,
        },
        "ray": {"address": address},
        "plugins": plugins,
    }


@pytest.fixture
def ray_host(ray_cluster, plugwarden_plugin, plugwarden_host):
    def make(names=("alpha",), isolation="ray", **plugins):
        for name in names:
            plugwarden_plugin(name, PLUGIN)
        return plugwarden_host(ray_config(ray_cluster.address, isolation, **plugins))

    return make


class TestCalls:
    def test_a_call_runs_in_a_worker_on_the_cluster(self, ray_host):
        host = ray_host()
        status = host.status("alpha")
        assert status.state is State.INITIALIZED, status.reason
        assert status.info.isolation == "ray"
        result = host.call("alpha", "echo", {"x": [1, 2]})
        assert result.ok, result.error
        assert result.result["echo"] == {"x": [1, 2]}
        assert host.worker_pids("alpha") == []  # no worker process of the host's own
        assert host.worker_nodes("alpha") == ["127.0.0.1"]
        assert host.resident_bytes("alpha") > 0  # read from the actor

    def test_the_worker_on_the_node_gets_the_same_sandbox(self, ray_host):
        """Drawn again on the node (its Python, its private directories):
        the plugin's worker there reports the same protections."""
        protections = ray_host().status("alpha").info.protections
        for name in ("filesystem", "network", "seccomp", "no_new_privs"):
            assert protections.get(name) == "enforced", protections

    def test_arguments_ray_cannot_send_fail_the_call_only(self, ray_host):
        host = ray_host()
        result = host.call("alpha", "echo", {"lock": threading.Lock()})
        assert not result.ok
        assert result.error_type == "InvalidArguments"
        assert host.call("alpha", "echo", {}).ok

    @pytest.mark.parametrize("isolation", ["ray", "ray-inline"])
    def test_binary_values_round_trip_through_the_cluster(self, ray_host, isolation):
        """Bytes and arrays reach the plugin as themselves and come back as
        bytes and a Blob, as from a process worker."""
        import numpy as np

        host = ray_host(isolation=isolation)
        array = np.arange(12, dtype="<f4").reshape(3, 4)
        result = host.call("alpha", "binary", {"b": b"\x00\x01" * 50_000, "a": array})
        assert result.ok, result.error
        assert result.result["kind"] == "ndarray"
        assert result.result["bytes"] == b"\x00\x01" * 50_000
        back = result.result["array"]
        assert isinstance(back, Blob) and back.shape == (3, 4)
        np.testing.assert_array_equal(np.asarray(back), array * 2)

    def test_metrics_count_workers_by_node(self, ray_host):
        host = ray_host(alpha={"workers": 2, "num_cpus": 0})
        text = exposition(collector_registry(host))[0].decode()
        assert 'plugwarden_plugin_workers{node="127.0.0.1",plugin="alpha"} 2.0' in text

    def test_a_raise_fails_the_call_only(self, ray_host):
        host = ray_host()
        result = host.call("alpha", "nope", {})
        assert not result.ok
        assert result.error_type == "ValueError"
        assert host.call("alpha", "echo", {}).ok
        assert host.status("alpha").metrics["restarts"] == 0

    def test_health_hook_runs_on_the_actor(self, ray_host):
        host = ray_host()
        report = host.check_health("alpha")
        assert report is not None and report["ok"], report
        assert isinstance(report["report"]["worker"], str), report


class TestGuards:
    def test_a_timeout_kills_and_replaces_the_worker(self, ray_host):
        host = ray_host(alpha={"timeout_s": 1})
        first = host.call("alpha", "echo", {}).result["worker"]
        result = host.call("alpha", "sleep", {"s": 60})
        assert result.error_type == "Timeout"
        assert result.guard == "timeout"
        assert "timed out after 1s" in result.error
        wait_for(lambda: host.call("alpha", "echo", {}).ok, timeout_s=60)
        assert host.call("alpha", "echo", {}).result["worker"] != first
        assert host.status("alpha").metrics["restarts_by_cause"] == {"timeout": 1}

    def test_a_segfault_is_reported_with_its_signal(self, ray_host):
        host = ray_host()
        result = host.call("alpha", "segv", {})
        assert result.error_type == "WorkerDied"
        assert result.guard == "crash"
        assert "SIGSEGV" in result.error
        wait_for(lambda: host.call("alpha", "echo", {}).ok, timeout_s=60)

    def test_a_memory_breach_is_stopped(self, ray_host):
        host = ray_host(alpha={"memory_mb": 150})
        result = host.call("alpha", "hog", {})
        assert result.error_type == "MemoryLimitExceeded"
        assert result.guard == "memory"
        assert "150 MB memory limit" in result.error
        wait_for(lambda: host.call("alpha", "echo", {}).ok, timeout_s=60)

    def test_a_dead_actor_between_calls_is_noticed(self, ray_host):
        host = ray_host()
        assert host.call("alpha", "echo", {}).ok
        runner = host._registry.record("alpha").runner
        handle = runner._pool.serving[0].handle
        ray = runner._ray
        ray.kill(handle, no_restart=True)
        wait_for(lambda: host.status("alpha").metrics["restarts"] >= 1, timeout_s=60)
        reasons = [t.reason for t in host.status("alpha").history]
        assert any("killed with ray.kill" in r and "between calls" in r for r in reasons), reasons
        wait_for(lambda: host.call("alpha", "echo", {}).ok, timeout_s=60)


class TestPlacement:
    def test_a_gpu_plugin_on_a_cluster_without_gpus_is_unavailable(self, ray_host):
        host = ray_host(alpha={"requires_gpu": True})
        status = host.status("alpha")
        assert status.state is State.UNAVAILABLE
        assert status.reason.startswith("No GPU detected in the Ray cluster")

    def test_a_worker_no_node_can_hold_is_unavailable(self, ray_host):
        host = ray_host(alpha={"num_cpus": 64})
        status = host.status("alpha")
        assert status.state is State.UNAVAILABLE
        assert "No node of the Ray cluster can hold one worker (CPU 64" in status.reason
        assert "[plugins.alpha]" in status.reason

    def test_a_worker_the_cluster_has_no_room_for_now_fails_within_load_timeout(self, ray_host):
        host = ray_host(alpha={"workers": 2, "num_cpus": 1, "load_timeout_s": 3})
        status = host.status("alpha")
        assert status.state is State.FAILED
        assert status.reason.startswith(
            "No Ray worker for the plugin was ready within load_timeout_s (3s)"
        )
        assert "(CPU 1, memory 200 MB)" in status.reason

    def test_two_plugins_land_on_two_nodes_when_resources_say_so(self, ray_host, second_node):
        host = ray_host(("alpha", "beta"), alpha={"num_cpus": 1}, beta={"num_cpus": 1})
        for name in ("alpha", "beta"):
            assert host.status(name).state is State.INITIALIZED, host.status(name).reason
        slots = {name: host._registry.record(name) for name in ("alpha", "beta")}
        nodes = {slots[name].runner._pool.serving[0].node for name in ("alpha", "beta")}
        assert len(nodes) == 2

    def test_a_lost_node_is_the_plugins_reason(self, ray_host, ray_cluster, second_node):
        # restart = "never" for both: whichever ran on the lost node stays
        # FAILED with the reason (on-failure would replace it at once).
        host = ray_host(
            ("alpha", "beta"),
            alpha={"num_cpus": 1, "restart": "never"},
            beta={"num_cpus": 1, "restart": "never"},
        )
        slots = {name: host._registry.record(name) for name in ("alpha", "beta")}
        on_second = {
            name
            for name in ("alpha", "beta")
            if slots[name].runner._pool.serving[0].node == second_node.node_id
        }
        assert len(on_second) == 1
        (lost,) = on_second
        ray_cluster.remove_node(second_node)
        wait_for(lambda: host.status(lost).state is State.FAILED, timeout_s=90)
        assert "Ray node" in host.status(lost).reason
        assert "was lost" in host.status(lost).reason


class TestInActor:
    """isolation = "ray-inline": the plugin runs in the actor's own process."""

    def test_a_call_runs_in_the_actor_and_its_value_comes_back_as_json(self, ray_host):
        host = ray_host(isolation="ray-inline")
        assert host.status("alpha").info.isolation == "ray-inline"
        result = host.call("alpha", "subclass", {})
        assert result.ok, result.error
        assert type(result.result) is dict and result.result == {"a": 1}

    def test_a_timeout_kills_the_actor_so_the_call_really_stops(self, ray_host):
        host = ray_host(isolation="ray-inline", alpha={"timeout_s": 1})
        first = host.call("alpha", "echo", {}).result["worker"]
        result = host.call("alpha", "sleep", {"s": 60})
        assert (result.error_type, result.guard) == ("Timeout", "timeout")
        wait_for(lambda: host.call("alpha", "echo", {}).ok, timeout_s=60)
        assert host.call("alpha", "echo", {}).result["worker"] != first

    def test_a_memory_breach_in_the_actor_is_stopped(self, ray_host):
        host = ray_host(isolation="ray-inline", alpha={"memory_mb": 150})
        result = host.call("alpha", "hog", {})
        assert (result.error_type, result.guard) == ("MemoryLimitExceeded", "memory")
        wait_for(lambda: host.call("alpha", "echo", {}).ok, timeout_s=60)

    def test_a_segfault_is_the_actors_death_with_rays_reason(self, ray_host):
        host = ray_host(isolation="ray-inline")
        result = host.call("alpha", "segv", {})
        assert (result.error_type, result.guard) == ("WorkerDied", "crash")
        assert "The plugin's Ray actor on 127.0.0.1 died" in result.error
        wait_for(lambda: host.call("alpha", "echo", {}).ok, timeout_s=60)


class TestDoctor:
    def test_doctor_shows_the_clusters_nodes_and_free_cpus(self, ray_cluster, second_node):
        config = HostConfig.from_dict({"ray": {"address": ray_cluster.address}})
        cluster = describe_cluster(config)
        assert cluster is not None and "error" not in cluster, cluster
        assert len(cluster["nodes"]) == 2
        assert cluster["cpus"] == 2.0
        assert 0 <= cluster["cpus_free"] <= 2.0
        assert cluster["address"] == ray_cluster.address

    def test_an_unreachable_cluster_is_named(self, ray_cluster):
        config = HostConfig.from_dict({"ray": {"address": "127.0.0.1:1", "connect_timeout_s": 3}})
        cluster = describe_cluster(config)
        assert cluster is not None
        assert cluster["error"].startswith("Cannot reach the Ray cluster at 127.0.0.1:1")


class TestJobs:
    def test_progress_and_cancel_reach_a_job_on_the_cluster(self, ray_host):
        host = ray_host()
        job = host.submit("alpha", "count", {"n": 100000}).id
        wait_for(lambda: host.job(job).progress is not None, timeout_s=60)
        assert host.job(job).progress.total == 100000
        host.cancel(job)
        wait_for(lambda: host.job(job).finished, timeout_s=60)
        finished = host.job(job)
        assert finished.state == "cancelled", finished.record
        assert "stopped_at" in finished.record.result
