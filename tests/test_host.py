"""The Host: the whole pipeline, on real entry points, never raising for a plugin."""

from __future__ import annotations

import os
import socket
import threading

import psutil
import pytest

from plugwarden import Host, State, UnknownPlugin
from plugwarden.isolation.process.zygote import Zygote
from tests.conftest import ECHO, gone, plugin_source, wait_for

VALIDATE = (
    "from plugwarden import hookimpl\n\n@hookimpl\ndef validate():\n{body}\n\n"
    "@hookimpl\ndef run(tool, args):\n    return 1\n"
)


@pytest.fixture(params=["process", "inline"])
def isolation(request):
    return {"defaults": {"isolation": request.param}}


class TestStart:
    def test_import_error_is_failed_with_the_exception_type(
        self, plugwarden_plugin, plugwarden_host, isolation
    ):
        plugwarden_plugin("bad", "raise RuntimeError('cannot start')\n")
        host = plugwarden_host(isolation)
        status = host.status("bad")
        assert status.state is State.FAILED
        assert "RuntimeError: cannot start" in status.reason

    def test_import_failure_does_not_stop_the_others(
        self, plugwarden_plugin, plugwarden_host, isolation
    ):
        plugwarden_plugin("bad", "import no_such_module_anywhere\n")
        plugwarden_plugin("good", ECHO)
        host = plugwarden_host(isolation)
        assert host.status("good").state is State.INITIALIZED
        assert host.call("good", "echo", {"a": 1}).ok
        available = [s.name for s in host.statuses() if s.available]
        assert available == ["good"]

    def test_init_error_is_failed_with_an_actionable_reason(
        self, plugwarden_plugin, plugwarden_host, isolation
    ):
        plugwarden_plugin("p", plugin_source("return 1", init_body="raise KeyError('api_key')"))
        host = plugwarden_host(isolation)
        status = host.status("p")
        assert status.state is State.FAILED
        assert status.reason == (
            "init() failed with KeyError: 'api_key'. The traceback is in the host's log. Fix what "
            "it reports (a setting in the plugin's config table, a model file, or the plugin's "
            "code), then restart it."
        )

    @pytest.mark.parametrize(
        ("body", "reason"),
        [
            ("    return False", "validate() returned False"),
            ("    return 'GPU memory too small'", "validate() reported: GPU memory too small"),
            ("    raise ValueError('no weights')", "validate() failed with ValueError: no weights"),
            ("    return 42", "validate() returned int"),
        ],
    )
    def test_validate_saying_not_ready_is_failed(
        self, plugwarden_plugin, plugwarden_host, isolation, body, reason
    ):
        plugwarden_plugin("p", VALIDATE.format(body=body))
        host = plugwarden_host(isolation)
        status = host.status("p")
        assert status.state is State.FAILED
        assert reason in status.reason

    def test_init_receives_operator_settings_and_models(
        self, plugwarden_plugin, plugwarden_host, isolation
    ):
        plugwarden_plugin(
            "p",
            plugin_source(
                "return CONFIG", prelude="CONFIG = {}", init_body="CONFIG.update(config)"
            ),
        )
        config = {**isolation, "plugins": {"p": {"greeting": "hi", "timeout_s": 5}}}
        host = plugwarden_host(config)
        given = host.call("p", "t", {}).result
        state_dir = given.pop("state_dir")  # its private state directory, its alone
        assert given == {"greeting": "hi", "models": {}}
        assert os.path.isdir(state_dir) and state_dir.endswith(
            os.path.join("plugins", "p", "state")
        )

    def test_manifest_error_fails_only_that_plugin(self, plugwarden_plugin, plugwarden_host):
        plugwarden_plugin("bad", ECHO, manifest="requires_gpu = 'maybe'\n")
        plugwarden_plugin("good", ECHO)
        host = plugwarden_host()
        status = host.status("bad")
        assert status.state is State.FAILED
        assert "manifest.toml: key 'requires_gpu': expected a boolean" in status.reason
        assert host.status("good").state is State.INITIALIZED

    def test_duplicate_name_is_failed_naming_both(self, plugwarden_plugin, plugwarden_host):
        plugwarden_plugin("twin", ECHO, module="twin_a", dist="dist-a")
        plugwarden_plugin("twin", ECHO, module="twin_b", dist="dist-b")
        host = plugwarden_host()
        status = host.status("twin")
        assert status.state is State.FAILED
        assert "dist-a" in status.reason and "dist-b" in status.reason

    def test_disabled_plugin_is_not_loaded(self, plugwarden_plugin, plugwarden_host):
        plugwarden_plugin("off", "raise SystemExit('must not import')\n")
        host = plugwarden_host({"plugins": {"off": {"enabled": False}}})
        status = host.status("off")
        assert status.state is State.UNAVAILABLE
        assert "enabled = false" in status.reason

    def test_hundred_plugins_all_reach_their_states(self, plugwarden_plugin, plugwarden_host):
        """100 plugins, every fifth one broken, load concurrently to the right states."""
        for index in range(100):
            source = "raise ImportError('broken on purpose')\n" if index % 5 == 0 else ECHO
            plugwarden_plugin(f"p{index:03d}", source)
        host = plugwarden_host()
        states = {s.name: s.state for s in host.statuses()}
        assert len(states) == 100
        for index in range(100):
            expected = State.FAILED if index % 5 == 0 else State.INITIALIZED
            assert states[f"p{index:03d}"] is expected


class TestCalls:
    def test_unknown_plugin_and_bad_input_are_error_results(
        self, plugwarden_plugin, plugwarden_host
    ):
        """Bad input gets an error record and leaves the plugin untouched."""
        plugwarden_plugin("p", ECHO, manifest={"tools": {"echo": "echo"}})
        host = plugwarden_host()
        assert host.call("ghost", "echo", {}).error_type == "UnknownPlugin"
        assert host.call("p", "nope", {}).error_type == "UnknownTool"
        assert host.call("p", "echo", [1, 2]).error_type == "InvalidArguments"  # type: ignore[arg-type]
        assert host.call("p", "", {}).error_type == "InvalidArguments"
        assert host.status("p").state is State.INITIALIZED
        assert host.call("p", "echo", {"x": 1}).result == {"tool": "echo", "args": {"x": 1}}

    def test_restart_of_unknown_plugin_raises(self, plugwarden_host):
        host = plugwarden_host()
        with pytest.raises(UnknownPlugin):
            host.restart("ghost")


def test_host_works_with_no_config_and_no_plugins(tmp_path, monkeypatch):
    """No file, no plugins: start, list and close all work."""
    monkeypatch.chdir(tmp_path)
    with Host(search_path=[str(tmp_path)]) as host:
        assert host.statuses() == []
        assert host.config.source == "<built-in defaults>"


def test_second_start_is_a_no_op(plugwarden_plugin, plugwarden_host):
    """start() twice loads nothing twice and changes no state."""
    plugwarden_plugin("p", ECHO, manifest={"description": "an echo"})
    host = plugwarden_host()
    pids = host.worker_pids("p")
    host.start()
    assert host.worker_pids("p") == pids
    assert [t.state for t in host.status("p").history] == [State.LOADED, State.INITIALIZED]


def test_a_zygote_given_forks_the_workers_and_closes_with_the_host(
    plugwarden_plugin, plugwarden_site, tmp_path
):
    """What ``plugwarden serve`` does: a zygote started before the host
    forks its workers (no second one is started), and the host closes it."""
    plugwarden_plugin("p", ECHO)
    zygote = Zygote()
    zygote.prestart()
    (booted,) = psutil.Process().children()
    config = {"jobs": {"path": str(tmp_path / "jobs.sqlite3")}}
    with Host(config, search_path=[str(plugwarden_site)], zygote=zygote) as host:
        (worker,) = host.worker_pids("p")
        assert booted.pid in {p.pid for p in psutil.Process(worker).parents()}
        assert [p.pid for p in psutil.Process().children()] == [booted.pid]
        assert host.call("p", "t", {"x": 1}).ok
    wait_for(lambda: gone(booted.pid), what="the zygote to exit with the host")
    with pytest.raises(OSError, match="closing"):
        zygote.spawn([], "late", lambda *_: None)


def test_disabled_plugin_manifest_is_not_even_read(plugwarden_plugin, plugwarden_host):
    plugwarden_plugin("off", ECHO, manifest="this is not toml = [")
    host = plugwarden_host({"plugins": {"off": {"enabled": False}}})
    assert host.status("off").state is State.UNAVAILABLE


class TestClose:
    def test_fifty_hosts_started_and_closed_leave_no_thread_or_fd(
        self, plugwarden_plugin, plugwarden_site
    ):
        """Each host uses every service (zygote, output pump, memory monitor,
        inline executor and memory watch, health poller, scheduler); closing
        it closes them all."""
        from plugwarden import Host

        plugwarden_plugin("proc", ECHO)
        plugwarden_plugin("inl", ECHO, manifest={"guards": {"isolation": "inline"}})
        config = {"plugins": {"inl": {"isolation": "inline"}}, "defaults": {"memory_mb": 512}}

        def one_host() -> None:
            host = Host(config, search_path=[str(plugwarden_site)])
            host.start()
            host.start_health_checks()
            assert host.call("proc", "t", {}).ok and host.call("inl", "t", {}).ok
            host.check_health("proc")
            host.close()

        one_host()  # first use imports modules and may open lasting fds (logging, /proc)
        threads, fds = threading.active_count(), len(os.listdir("/proc/self/fd"))
        for _ in range(50):
            one_host()
        assert threading.active_count() == threads, [t.name for t in threading.enumerate()]
        assert len(os.listdir("/proc/self/fd")) == fds


def test_health_checks_go_on_after_a_round_finds_the_registry_busy(
    plugwarden_plugin, plugwarden_host, caplog
):
    """A round that cannot read the plugin list (the write lock held past
    the lock timeout) is skipped with a warning; the poller lives on."""
    plugwarden_plugin("proc", ECHO)
    host = plugwarden_host({"defaults": {"lock_timeout_s": 0.05, "health_interval_s": 0.05}})
    host.start_health_checks()
    wait_for(lambda: host.status("proc").health is not None, what="a first health check")
    with host._registry.hold_write_lock():
        wait_for(
            lambda: any("health round skipped" in r.getMessage() for r in caplog.records),
            what="a round that found the registry busy",
        )
    before = host.status("proc").health
    wait_for(lambda: host.status("proc").health is not before, what="a check after that round")


def test_a_failing_exit_listener_does_not_end_the_zygote_reports(caplog):
    """All of the zygote's reports come through one reader thread: an exit
    listener that raises is logged, and the next worker's exit is still
    reported (a dead reader would leave every later exit unheard)."""
    zygote = Zygote()
    ours: list[int] = []

    def spawn(listener):
        control, child_control = socket.socketpair()
        lifeline_r, lifeline_w = os.pipe()
        output_r, output_w = os.pipe()
        ours.extend([lifeline_w, output_r])
        zygote.spawn([child_control.fileno(), lifeline_r, output_w], "t", listener)
        child_control.close()
        os.close(lifeline_r)
        os.close(output_w)
        return control

    def broken(*_):
        raise RuntimeError("a listener's bug")

    exits: list[int | None] = []
    try:
        spawn(broken).close()  # EOF on its control: the worker exits
        wait_for(lambda: "a listener's bug" in caplog.text, what="the failing listener's log")
        spawn(lambda code, why, peak: exits.append(code)).close()
        wait_for(lambda: exits, what="the next worker's exit report")
    finally:
        zygote.close()
        for fd in ours:
            os.close(fd)


class TestManifestNotes:
    def test_a_plugin_without_a_manifest_says_so_in_its_history(
        self, plugwarden_plugin, plugwarden_host
    ):
        """It runs (any tool is accepted), with a word on what it gives up."""
        plugwarden_plugin("bare", ECHO)
        plugwarden_plugin("declared", ECHO, manifest={"tools": {"t": "echo"}})
        host = plugwarden_host()
        bare = [t.reason for t in host.status("bare").history]
        assert any(r.startswith("No manifest (manifest.toml in its package)") for r in bare)
        assert host.status("bare").available and host.call("bare", "anything", {}).ok
        declared = [t.reason for t in host.status("declared").history]
        assert not any(r.startswith("No manifest") for r in declared)
