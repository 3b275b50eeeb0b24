"""Fault injection: each fault, carried out in the real worker, gives the
state and reason the README documents; the fake GPU drives the pre-flight."""

from __future__ import annotations

import logging
import signal

import pytest

from plugwarden import ErrorType, State
from plugwarden.testing import assert_state, wait_for, wait_for_state
from tests.conftest import ECHO, gone

FAST = {"restart_backoff_s": 0.05, "restart_backoff_max_s": 0.1}


@pytest.fixture
def host(plugwarden_faults, plugwarden_plugin, plugwarden_host):
    plugwarden_plugin("victim", ECHO)
    return plugwarden_host({"defaults": FAST, "plugins": {"victim": {"timeout_s": 2}}})


class TestFaultsInTheWorker:
    @pytest.mark.parametrize(
        ("kind", "params", "error_type", "in_error"),
        [
            ("crash", {}, ErrorType.WORKER_DIED, "SIGSEGV"),
            ("exit", {"code": 7}, ErrorType.WORKER_DIED, "exited with code 7"),
            ("hang", {}, ErrorType.TIMEOUT, "timed out after 2s"),
            ("raise", {"message": "disk on fire"}, "RuntimeError", "disk on fire"),
            ("unserialisable", {}, ErrorType.RESULT_NOT_SERIALIZABLE, "object"),
        ],
    )
    def test_a_fault_gives_its_documented_result(
        self, plugwarden_faults, host, kind, params, error_type, in_error
    ):
        plugwarden_faults.inject("victim", kind, call=2, **params)
        assert host.call("victim", "t", {}).ok  # the first call is not faulted
        result = host.call("victim", "t", {})
        assert not result.ok and result.error_type == error_type, result
        assert in_error in result.error

    @pytest.mark.parametrize("level", ["pid-namespace", "subreaper"])
    def test_signal_kills_the_worker_with_that_signal(
        self, plugwarden_faults, plugwarden_plugin, plugwarden_host, monkeypatch, level
    ):
        """At each level: the worker is never PID 1 (its init is), so the
        signal it sends itself does what it does everywhere."""
        monkeypatch.setenv("PLUGWARDEN_CONTAINMENT", level if level == "subreaper" else "")
        plugwarden_faults.inject("victim", "signal", signal=int(signal.SIGTERM))
        plugwarden_plugin("victim", ECHO)
        result = plugwarden_host().call("victim", "t", {})
        assert result.error_type == ErrorType.WORKER_DIED and "SIGTERM" in result.error

    def test_memory_trips_the_memory_guard(
        self, plugwarden_faults, plugwarden_plugin, plugwarden_host
    ):
        plugwarden_faults.inject("victim", "memory")
        plugwarden_plugin("victim", ECHO)
        host = plugwarden_host({"plugins": {"victim": {"memory_mb": 150}}})
        result = host.call("victim", "t", {})
        assert result.error_type == ErrorType.MEMORY_LIMIT and result.guard == "memory"

    def test_slow_then_answers(self, plugwarden_faults, host):
        plugwarden_faults.inject("victim", "slow", seconds=0.3)
        result = host.call("victim", "t", {"x": 1})
        assert result.ok and result.result == {"tool": "t", "args": {"x": 1}}
        assert result.duration_ms >= 300

    def test_a_stdout_flood_is_rate_limited_and_the_call_answers(
        self, plugwarden_faults, host, caplog
    ):
        caplog.set_level(logging.INFO, logger="plugwarden.plugin")
        plugwarden_faults.inject("victim", "flood", lines=2000)
        assert host.call("victim", "t", {}).ok
        wait_for(lambda: "injected flood line 0" in caplog.text, 30, "the flood's start logged")
        host.close()  # the worker's output is flushed: the lines over the rate are counted
        assert "more lines not logged]" in caplog.text
        assert "injected flood line 1999" not in caplog.text

    def test_a_detached_child_is_killed_with_its_worker(self, plugwarden_faults, host):
        import psutil

        plugwarden_faults.inject("victim", "child")
        assert host.call("victim", "t", {}).ok
        (worker,) = host.worker_pids("victim")
        descendants = [p.pid for p in psutil.Process(worker).children(recursive=True)]
        strays = [pid for pid in descendants if "time.sleep(3600)" in " ".join(
            psutil.Process(pid).cmdline())]  # fmt: skip
        assert strays
        host.close()
        for pid in strays:
            wait_for(lambda pid=pid: gone(pid), 10, f"stray {pid} to be gone")

    def test_every_call_and_once(self, plugwarden_faults, plugwarden_plugin, plugwarden_host):
        plugwarden_faults.inject("victim", "raise", call=0, every=True, message="always")
        plugwarden_faults.inject("victim", "raise", hook="health", message="once")
        plugwarden_plugin("victim", ECHO + "\n@hookimpl\ndef health():\n    return {}\n")
        host = plugwarden_host({"plugins": {"victim": {"workers": 2}}})
        errors = [host.call("victim", "t", {}).error for _ in range(3)]
        assert errors == ["RuntimeError: always"] * 3
        reports = [host.check_health("victim") for _ in range(4)]
        assert sum(1 for r in reports if r and not r["ok"]) == 1

    def test_a_crash_on_every_first_call_ends_in_a_crash_loop(
        self, plugwarden_faults, plugwarden_plugin, plugwarden_host
    ):
        """Fault injection drives the restart policy: each restarted worker
        crashes again until the crash loop stops the restarts."""
        plugwarden_faults.inject("victim", "crash", hook="init", every=True)
        plugwarden_plugin("victim", ECHO + "\n@hookimpl\ndef init(config):\n    pass\n")
        host = plugwarden_host({"defaults": {**FAST, "max_restarts": 2}})
        wait_for(lambda: "Crash loop" in host.status("victim").reason, 30, "the crash loop")
        assert_state(host, "victim", State.FAILED, "SIGSEGV")

    def test_a_crash_by_default_crashes_once_and_its_replacement_serves(
        self, plugwarden_faults, host
    ):
        """The default is what a test author expects: the faulted call fails,
        the replacement worker is not faulted again."""
        plugwarden_faults.inject("victim", "crash")
        assert host.call("victim", "t", {}).error_type == ErrorType.WORKER_DIED
        wait_for(lambda: host.call("victim", "t", {}).ok, 30, "the replacement")
        assert [host.call("victim", "t", {}).ok for _ in range(3)] == [True] * 3

    def test_injected_for_a_block_only(self, plugwarden_faults, host):
        with plugwarden_faults.injected("victim", "raise", call=0, every=True, message="inside"):
            assert host.call("victim", "t", {}).error == "RuntimeError: inside"
        assert host.call("victim", "t", {}).ok

    def test_an_unknown_fault_is_refused(self, plugwarden_faults):
        with pytest.raises(ValueError, match="Unknown fault 'explode'"):
            plugwarden_faults.inject("victim", "explode")


class TestFakeGpu:
    @pytest.mark.parametrize(
        ("kind", "state", "reason"),
        [
            ("none", State.UNAVAILABLE, "No GPU detected"),
            ("broken-driver", State.FAILED, "GPU driver error"),
            ("no-cuda", State.UNAVAILABLE, "CUDA not installed"),
            ("present", State.INITIALIZED, "ready"),
        ],
    )
    def test_the_pre_flight_sees_the_fake(
        self, plugwarden_fake_gpu, plugwarden_plugin, plugwarden_host, kind, state, reason
    ):
        plugwarden_fake_gpu(kind)
        plugwarden_plugin("gpu", ECHO, manifest={"requires_gpu": True})
        host = plugwarden_host()
        wait_for_state(host, "gpu", state)
        assert_state(host, "gpu", state, reason)

    def test_an_unknown_fake_is_refused(self, plugwarden_fake_gpu):
        with pytest.raises(ValueError, match="Unknown fake GPU"):
            plugwarden_fake_gpu("quantum")
