"""The Ray link's pure parts, and isolation = "ray" where Ray is not
installed. The backend itself is tested on a real cluster: tests/ray."""

from __future__ import annotations

import importlib.util

import pytest

from plugwarden import HostConfig, State
from plugwarden.cli.doctor import ray_cluster
from plugwarden.isolation.ray.cluster import RAY_MISSING, death_reason, shortfall
from tests.conftest import ECHO

NODES = [
    {"node": "a" * 56, "address": "10.0.0.1", "resources": {"CPU": 4.0, "memory": 8 * 2.0**30}},
    {"node": "b" * 56, "address": "10.0.0.2", "resources": {"CPU": 1.0, "memory": 2 * 2.0**30}},
]


class TestShortfall:
    def test_a_request_one_node_can_hold_fits(self):
        assert shortfall(NODES, {"CPU": 4.0, "memory": 2.0**30}, gpu_needed=False) is None

    def test_a_gpu_on_a_cluster_without_one_is_named(self):
        reason = shortfall(NODES, {"GPU": 1.0, "memory": 2.0**30}, gpu_needed=True)
        assert reason is not None
        assert reason.startswith("No GPU detected in the Ray cluster: none of its 2 node(s)")
        assert "requires_gpu = false" in reason

    def test_resources_spread_over_nodes_do_not_make_one_worker_fit(self):
        reason = shortfall(NODES, {"CPU": 5.0, "memory": 2.0**30}, gpu_needed=False)
        assert reason is not None
        assert "can hold one worker (CPU 5, memory 1024 MB)" in reason
        assert "the most any node has: CPU 4, memory 8192 MB" in reason

    def test_an_empty_cluster_fits_nothing(self):
        assert shortfall([], {"memory": 1.0}, gpu_needed=False) is not None


class TestDeathReason:
    def test_a_lost_node_is_named_with_its_address(self):
        error = RuntimeError(
            "The actor died unexpectedly before finishing this task.\n\tip: 10.0.0.2\n"
            "The actor died because its node has died. Node Id: abc"
        )
        reason, cause = death_reason(error, "10.0.0.2")
        assert cause == "node"
        assert reason.startswith("The Ray node 10.0.0.2 that ran the plugin's worker was lost")

    def test_rays_memory_monitor_is_told_apart_from_plugwardens_guard(self):
        class OutOfMemoryError(Exception):
            pass

        reason, cause = death_reason(OutOfMemoryError("task killed"), "10.0.0.1")
        assert cause == "oom"
        assert "Ray's memory monitor killed" in reason
        assert "before plugwarden's memory_mb guard tripped" in reason

    def test_a_kill_is_named(self):
        error = RuntimeError("The actor is dead because it was killed by `ray.kill`.")
        assert death_reason(error, "n")[1] == "killed"

    def test_a_dead_worker_process_quotes_rays_exit_detail(self):
        error = RuntimeError(
            "The actor is dead because its worker process has died. Worker exit type: "
            "SYSTEM_ERROR Worker exit detail: Worker unexpectedly exits with a connection "
            "error code 2. End of file. Some common causes include: (1) the OOM killer"
        )
        reason, cause = death_reason(error, "10.0.0.1")
        assert cause == "died"
        assert "(Ray: Worker unexpectedly exits with a connection error code 2)" in reason
        assert "ray logs" in reason


@pytest.mark.skipif(
    importlib.util.find_spec("ray") is not None, reason="Ray is installed here (tox -e ray)"
)
class TestWithoutRay:
    def test_a_ray_plugin_is_unavailable_with_the_install_command(
        self, plugwarden_plugin, plugwarden_host
    ):
        plugwarden_plugin("echo", ECHO)
        plugwarden_plugin("other", ECHO)
        host = plugwarden_host({"plugins": {"echo": {"isolation": "ray"}}})
        status = host.status("echo")
        assert status.state is State.UNAVAILABLE
        assert status.reason == RAY_MISSING
        assert "pip install 'plugwarden[ray]'" in status.reason
        assert host.call("other", "echo", {}).ok  # the others are untouched


class TestIsolationIsTheOperators:
    def test_a_manifest_asking_for_ray_is_ignored_with_a_note(
        self, plugwarden_plugin, plugwarden_host
    ):
        plugwarden_plugin("echo", ECHO, manifest={"guards": {"isolation": "ray"}})
        host = plugwarden_host()
        status = host.status("echo")
        assert status.state is State.INITIALIZED
        assert status.info.isolation == "process"
        notes = [t.reason for t in status.history]
        assert any('asks for isolation = "ray"; ignored' in n for n in notes), notes

    def test_the_hosts_default_beats_the_manifests_isolation(
        self, plugwarden_plugin, plugwarden_host
    ):
        plugwarden_plugin("echo", ECHO, manifest={"guards": {"isolation": "process"}})
        host = plugwarden_host({"defaults": {"isolation": "inline"}})
        assert host.status("echo").info.isolation == "inline"


class TestDoctor:
    def test_a_config_without_ray_describes_no_cluster(self):
        assert ray_cluster(HostConfig.from_dict({})) is None

    def test_a_local_cluster_is_described_without_starting_it(self):
        config = HostConfig.from_dict({"defaults": {"isolation": "ray"}, "ray": {"num_cpus": 2}})
        cluster = ray_cluster(config)
        assert cluster == {
            "address": "local",
            "note": "started by plugwarden when a ray plugin loads (2 CPUs, object store 256 MB)",
        }
