"""Process isolation: every way a plugin can misbehave costs only that plugin."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import psutil
import pytest

from plugwarden import State
from plugwarden.isolation.fates import Fate
from plugwarden.isolation.process.handle import WorkerProcess
from plugwarden.isolation.process.output import OutputPump
from plugwarden.isolation.process.zygote import Zygote
from plugwarden.isolation.wire import Load
from tests.conftest import (
    ECHO,
    WHO_AM_I,
    gone,
    identity,
    plugin_source,
    process_named,
    wait_for,
)

GUARDS = {"timeout_s": 1, "load_timeout_s": 2, "memory_mb": 150}
# These tests look at what one guard trip does; the restart policy has tests
# of its own (test_supervisor.py), so here a FAILED plugin stays FAILED.
NO_RESTART = {"defaults": {"restart": "never"}}
# A child that writes who it is (its PID namespace and its pid there: a
# worker's namespace knows no pid of the host's; process_named() finds the
# pid the host knows it by), atomically, then sleeps as that same process.
SLEEPER = (
    "read pid rest < /proc/self/stat; echo $(readlink /proc/self/ns/pid):$pid > {pid_file}.tmp; "
    "mv {pid_file}.tmp {pid_file}; exec sleep 1000"
)

RUN_MISBEHAVIOURS = {
    "raises": ("raise ValueError('bad input')", "ValueError", None, "ValueError: bad input"),
    "system_exit": ("raise SystemExit(3)", "SystemExit", None, "sys.exit(3)"),
    "keyboard_interrupt": (
        "raise KeyboardInterrupt",
        "KeyboardInterrupt",
        None,
        "KeyboardInterrupt",
    ),
    "os_exit": ("import os\nos._exit(7)", "WorkerDied", "crash", "exited with code 7"),
    "segfault": ("import ctypes\nctypes.string_at(0)", "WorkerDied", "crash", "SIGSEGV"),
    "sleeps_in_c": (
        "import ctypes\nctypes.CDLL(None).sleep(100000)",
        "Timeout",
        "timeout",
        "timed out after 1s",
    ),
    "spins": ("while True:\n    pass", "Timeout", "timeout", "timed out after 1s"),
    "allocates": (
        "hog = []\nwhile True:\n    hog.append(b'x' * 10_000_000)",
        "MemoryLimitExceeded",
        "memory",
        "exceeded 150 MB memory limit",
    ),
    "unserialisable": ("return {1, 2}", "ResultNotSerializable", None, "not JSON-serialisable"),
}


@pytest.fixture
def chaos(plugwarden_plugin, plugwarden_host):
    """A host with one misbehaving plugin and a healthy sibling."""

    def make(source: str):
        plugwarden_plugin("sibling", ECHO)
        plugwarden_plugin("chaos", source, manifest={"guards": GUARDS})
        return plugwarden_host(NO_RESTART)

    return make


def assert_sibling_answers(host) -> None:
    result = host.call("sibling", "echo", {"n": 1})
    assert result.ok, result
    assert result.result == {"tool": "echo", "args": {"n": 1}}
    assert host.status("sibling").state is State.INITIALIZED


class TestRunMisbehaviour:
    @pytest.mark.parametrize("case", sorted(RUN_MISBEHAVIOURS))
    def test_misbehaving_run_fails_only_that_call_or_that_plugin(self, chaos, case):
        """Each misbehaviour ends in an error result naming the cause. A raise
        or a bad result fails the call only; a lost worker (crash, timeout,
        memory) leaves a one-worker plugin FAILED. The sibling answers."""
        body, error_type, guard, reason = RUN_MISBEHAVIOURS[case]
        host = chaos(plugin_source(body))
        assert host.status("chaos").state is State.INITIALIZED

        result = host.call("chaos", "go", {"x": 1})

        assert not result.ok
        assert result.error_type == error_type
        assert result.guard == guard
        assert reason in result.error
        assert "Traceback" not in result.error
        assert result.args == {"x": 1}
        status = host.status("chaos")
        assert status.metrics["error_count"] == 1
        if guard is None:
            assert status.state is State.INITIALIZED
            assert host.call("chaos", "go", {}).error_type == error_type  # still served
        else:
            assert status.state is State.FAILED
            assert reason in status.reason
            assert status.metrics["guard_trips"][guard] == 1
        assert_sibling_answers(host)

    def test_memory_of_the_plugins_children_counts_too(self, chaos):
        """A child that allocates past the limit trips the worker's guard."""
        body = """
import subprocess, sys
code = "hog = b'x' * (300 * 2**20)\\nimport time\\ntime.sleep(600)"
child = subprocess.Popen([sys.executable, "-c", code])
child.wait()
"""
        host = chaos(plugin_source(body))
        result = host.call("chaos", "go", {})
        assert result.guard == "memory"
        assert "exceeded 150 MB memory limit" in result.error
        assert_sibling_answers(host)

    def test_call_after_failure_is_refused_with_the_reason(self, chaos):
        """A FAILED plugin answers ok=false naming its state, without running code."""
        host = chaos(plugin_source("import os\nos._exit(5)"))
        host.call("chaos", "go", {})
        result = host.call("chaos", "go", {})
        assert not result.ok
        assert result.error_type == "PluginNotAvailable"
        assert "FAILED" in result.error and "exited with code 5" in result.error

    def test_timeout_kills_the_plugins_children_too(self, chaos, tmp_path):
        """A plugin that starts a child and hangs: worker and child both die."""
        pid_file = tmp_path / "child.pid"
        body = f"""
import subprocess, time
child = subprocess.Popen(["sh", "-c", {SLEEPER.format(pid_file=pid_file)!r}])
while True:
    time.sleep(1)
"""
        host = chaos(plugin_source(body))
        workers = host.worker_pids("chaos")
        result = host.call("chaos", "go", {})
        assert result.guard == "timeout"
        child = pid_file.read_text().strip()
        wait_for(lambda: process_named(child) is None, what="the plugin's child to die")
        wait_for(lambda: all(gone(pid) for pid in workers), what="the worker to die")
        assert_sibling_answers(host)


class TestLoadMisbehaviour:
    @pytest.mark.parametrize(
        ("source", "reason"),
        [
            ("import time\ntime.sleep(1000)\n", "import timed out after 2s"),
            ("import ctypes\nctypes.string_at(0)\n", "SIGSEGV"),
            ("import os\nos._exit(4)\n", "exited with code 4"),
            ("raise SystemExit('no')\n", "SystemExit"),
            (
                plugin_source("return 1", init_body="import time\ntime.sleep(1000)"),
                "init timed out after 2s",
            ),
            (plugin_source("return 1", init_body="raise OSError('no model')"), "OSError: no model"),
        ],
        ids=[
            "hangs_at_import",
            "segfaults_at_import",
            "exits_at_import",
            "system_exit_at_import",
            "hangs_in_init",
            "init_raises",
        ],
    )
    def test_broken_load_fails_only_that_plugin(self, chaos, source, reason):
        """Import and init failures of every kind end FAILED with the reason."""
        host = chaos(source)
        status = host.status("chaos")
        assert status.state is State.FAILED
        assert reason in status.reason
        assert host.worker_pids("chaos") == []
        assert_sibling_answers(host)

    def test_many_workers_starting_and_dying_at_once_are_each_reported(
        self, plugwarden_plugin, plugwarden_host
    ):
        """Twelve plugins start together, every other one exiting as it is
        imported: the zygote forks them without waiting for each, and still
        tells every start and every exit to the right plugin."""
        for index in range(12):
            source = ECHO if index % 2 else f"import os\nos._exit({10 + index})\n"
            plugwarden_plugin(f"p{index:02d}", source)
        host = plugwarden_host({"defaults": {"restart": "never"}})
        for index in range(12):
            status = host.status(f"p{index:02d}")
            if index % 2:
                assert status.state is State.INITIALIZED
                assert host.call(f"p{index:02d}", "t", {"n": index}).ok
            else:
                assert status.state is State.FAILED
                assert f"exited with code {10 + index}" in status.reason


class TestWorkerLifecycle:
    def test_restart_brings_a_failed_plugin_back_with_a_fresh_worker(self, chaos, tmp_path):
        """restart() reruns the pipeline in a new worker process."""
        flag = tmp_path / "crash-once"
        flag.write_text("1")
        body = f"""
import os
import shutil
if os.path.exists({str(flag)!r}):
    os.remove({str(flag)!r})
    os._exit(9)
return "fine"
"""
        host = chaos(plugin_source(body))
        first = host.worker_pids("chaos")
        assert host.call("chaos", "go", {}).guard == "crash"
        assert host.status("chaos").state is State.FAILED

        status = host.restart("chaos")

        assert status.state is State.INITIALIZED
        assert host.worker_pids("chaos") != first
        wait_for(lambda: all(gone(pid) for pid in first), what="the old worker to be gone")
        assert host.call("chaos", "go", {}).result == "fine"
        states = [t.state for t in host.status("chaos").history]
        assert states[:2] == [State.LOADED, State.INITIALIZED]
        assert State.FAILED in states and states[-1] is State.INITIALIZED

    def test_close_leaves_no_process_behind(self, plugwarden_plugin, plugwarden_host):
        """After close() no worker, no child of a worker and no zygote is left."""
        for index in range(3):
            plugwarden_plugin(f"p{index}", ECHO)
        host = plugwarden_host()
        pids = [pid for name in ("p0", "p1", "p2") for pid in host.worker_pids(name)]
        assert len(pids) == 3
        before = {p.pid for p in psutil.Process().children(recursive=True)}
        assert set(pids) <= before

        host.close()

        wait_for(lambda: all(gone(pid) for pid in before), what="every process to exit")

    def test_close_also_ends_the_processes_a_plugin_started(
        self, plugwarden_plugin, plugwarden_host, tmp_path
    ):
        pid_file = tmp_path / "child.pid"
        init = (
            "import subprocess, os, time\n"
            f"subprocess.Popen(['sh', '-c', {SLEEPER.format(pid_file=pid_file)!r}])\n"
            f"while not os.path.exists({str(pid_file)!r}):\n    time.sleep(0.01)"
        )
        plugwarden_plugin("parent", plugin_source("return 1", init_body=init))
        host = plugwarden_host()
        child = process_named(pid_file.read_text().strip())
        assert child is not None and not gone(child)
        host.close()
        wait_for(lambda: gone(child), what="the plugin's child to end with its worker")

    def test_worker_exits_when_its_host_is_killed(self, plugwarden_plugin, plugwarden_site):
        """A host killed with SIGKILL does not leave its workers running."""
        plugwarden_plugin("p", ECHO)
        script = textwrap.dedent(f"""
            import json, sys, time
            from plugwarden import Host
            host = Host({{}}, search_path=[{str(plugwarden_site)!r}])
            host.start()
            print(json.dumps(host.worker_pids("p")), flush=True)
            time.sleep(1000)
        """)
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
        try:
            workers = json.loads(proc.stdout.readline())
            assert workers and not any(gone(pid) for pid in workers)
            proc.kill()
            proc.wait()
            wait_for(lambda: all(gone(pid) for pid in workers), what="orphaned workers to exit")
        finally:
            proc.kill()
            proc.stdout.close()

    def test_worker_output_goes_to_the_host_log_tagged(self, chaos, caplog):
        """print() in a plugin lands in the log under plugwarden.plugin.<name>."""
        caplog.set_level("INFO", logger="plugwarden.plugin")
        host = chaos(plugin_source("print('hello from the worker', flush=True)\nreturn 1"))
        assert host.call("chaos", "go", {}).ok
        wait_for(
            lambda: any(
                r.name == "plugwarden.plugin.chaos" and "hello from the worker" in r.getMessage()
                for r in caplog.records
            ),
            what="the worker's line in the log",
        )

    def test_idle_worker_death_marks_the_plugin_failed(self, chaos):
        """A worker killed between calls makes its plugin FAILED with the
        signal, and counts as a crash guard trip."""
        host = chaos(plugin_source("return 1"))
        (pid,) = host.worker_pids("chaos")
        os.kill(pid, 9)
        wait_for(lambda: host.status("chaos").state is State.FAILED, what="FAILED")
        status = host.status("chaos")
        assert "SIGKILL" in status.reason and "while idle" in status.reason
        assert status.metrics["guard_trips"]["crash"] == 1
        assert_sibling_answers(host)

    @pytest.mark.parametrize("level", ["pid-namespace", "subreaper"])
    def test_a_root_zygote_forks_a_namespaced_worker_itself(
        self, plugwarden_plugin, plugwarden_host, monkeypatch, level
    ):
        """As root the zygote forks each worker's init straight into a PID
        namespace of its own (no keeper process), the worker PID 2 there; at
        the subreaper level a keeper sits between them. Either way a crash
        is reported and replaced."""
        if not direct_forks():
            pytest.skip("needs root, with PID namespaces it may unshare and set back")
        if level == "subreaper":
            monkeypatch.setenv("PLUGWARDEN_CONTAINMENT", "subreaper")
        plugwarden_plugin("p", plugin_source("import ctypes\nctypes.string_at(0)"))
        plugwarden_plugin("sibling", ECHO)
        host = plugwarden_host()
        for name in ("p", "sibling"):
            (worker,) = host.worker_pids(name)
            parent = psutil.Process(worker).parent()
            if level == "pid-namespace":
                assert parent.parent().ppid() == os.getpid()  # init, then the zygote
                assert namespaced_pids(worker)[-1] == 2 and namespaced_pids(parent.pid)[-1] == 1
            else:
                assert parent.parent().ppid() == os.getpid()  # keeper, then the zygote
                assert len(namespaced_pids(worker)) == 1
        result = host.call("p", "t", {})
        assert result.guard == "crash" and "SIGSEGV" in result.error
        assert_sibling_answers(host)


KEEPER_PROBE = """
import json, os, psutil
from plugwarden import Host
host = Host({{"defaults": {{"restart": "never"}}, "jobs": {{"path": ":memory:"}}}},
            search_path=[{site!r}])
host.start()
(worker,) = host.worker_pids("p")
with open(f"/proc/{{worker}}/status") as status:
    nspid = next(line for line in status if line.startswith("NSpid:")).split()[1:]
init = psutil.Process(worker).parent()
keeper = init.parent()
print(json.dumps({{
    "keeper": keeper.pid != init.pid and keeper.parent().ppid() == os.getpid(),
    "nspid": nspid,
    "ok": host.call("p", "t", {{"n": 1}}).ok,
}}))
host.close()
"""


def test_root_of_a_user_namespace_gets_namespaced_workers_through_keepers(
    plugwarden_plugin, plugwarden_site
):
    """Root inside a user namespace cannot set a PID namespace back to the
    one it shares with the machine, so its zygote falls back to keepers,
    each of which still puts its worker (under its init) in a PID namespace
    of its own."""
    plugwarden_plugin("p", ECHO)
    command = ["unshare", "--map-root-user", sys.executable, "-c"]
    if shutil.which("unshare") is None or subprocess.run([*command, "pass"]).returncode:
        pytest.skip("needs unshare and user namespaces")
    done = subprocess.run(
        [*command, KEEPER_PROBE.format(site=str(plugwarden_site))],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    seen = json.loads(done.stdout.splitlines()[-1])
    assert seen["keeper"] and seen["ok"]
    assert len(seen["nspid"]) >= 2 and seen["nspid"][-1] == "2"  # under its init


def direct_forks() -> bool:
    """Whether a zygote here forks workers straight into PID namespaces
    (asked of a fresh interpreter: the probe changes its caller's namespace
    for children)."""
    probe = (
        "from plugwarden.isolation.process import containment as c\n"
        "print(c.may_unshare_pid_namespace() and c.unshare_pid_namespace())"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return done.stdout.strip() == "True"


def namespaced_pids(pid: int) -> list[int]:
    """``pid`` in each PID namespace it is in, outermost first."""
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith("NSpid:"))
    return [int(n) for n in line.split()[1:]]


class TestZygoteSweep:
    def test_memory_grown_between_calls_is_reported_without_a_call(
        self, plugwarden_plugin, plugwarden_host
    ):
        """run() leaves a thread that allocates 64 MB after the call returned:
        the zygote's sweep reads the new figure and the host sees it, with no
        call and no /proc read of its own."""
        body = (
            "import threading\n"
            "def grow():\n    HOARD.append(bytearray(64 * 2**20))\n"
            "threading.Timer(0.1, grow).start()\nreturn 'ok'"
        )
        plugwarden_plugin("grow", plugin_source(body, prelude="HOARD = []"))
        host = plugwarden_host()
        assert host.call("grow", "t", {}).ok
        before = host.memory_seen()["grow"]
        wait_for(
            lambda: host.memory_seen()["grow"] > before + 60 * 2**20,
            what="the sweep's figure for the grown worker",
        )
        assert host.status("grow").state is State.INITIALIZED

    def test_a_worker_holds_no_other_workers_proc_files(self, plugwarden_plugin, plugwarden_host):
        """The zygote keeps each worker's /proc/PID/statm open for its sweep,
        and an epoll selector; a worker forked later inherits neither."""
        for name in ("a", "b"):
            plugwarden_plugin(name, ECHO)
        plugwarden_plugin(
            "peek",
            plugin_source(
                "import os\nfds = os.listdir('/proc/self/fd')\n"
                "return [os.readlink(f'/proc/self/fd/{fd}') for fd in fds "
                "if os.path.exists(f'/proc/self/fd/{fd}')]"
            ),
        )
        host = plugwarden_host()
        host.restart("peek")  # forked again, with the others' files open in the zygote
        links = host.call("peek", "t", {}).result
        leaked = [link for link in links if "/proc/" in link or "eventpoll" in link]
        assert links and not leaked


def meet(mine: str, theirs: str) -> str:
    """run() that marks its arrival, then waits for the other plugin's: only
    calls that truly run at the same time can both finish."""
    return plugin_source(
        f"import os, time\nopen({mine!r}, 'w').close()\n"
        f"while not os.path.exists({theirs!r}):\n    time.sleep(0.01)\nreturn 'met'"
    )


class TestConcurrency:
    def test_calls_to_different_plugins_run_in_parallel(
        self, plugwarden_plugin, plugwarden_host, tmp_path
    ):
        from concurrent.futures import ThreadPoolExecutor

        left, right = str(tmp_path / "left"), str(tmp_path / "right")
        guards = {"guards": {"timeout_s": 60}}
        plugwarden_plugin("left", meet(left, right), manifest=guards)
        plugwarden_plugin("right", meet(right, left), manifest=guards)
        host = plugwarden_host()
        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(lambda name: host.call(name, "t", {}), ["left", "right"]))
        assert [r.result for r in results] == ["met", "met"]

    def test_concurrent_calls_to_one_worker_are_queued(self, plugwarden_plugin, plugwarden_host):
        """workers = 1: 48 calls from 8 threads share one connection; each gets
        its own answer (requests and replies never cross)."""
        from concurrent.futures import ThreadPoolExecutor

        plugwarden_plugin("solo", plugin_source("return args['i'] * 2"))
        host = plugwarden_host()
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda i: host.call("solo", "t", {"i": i}), range(48)))
        assert [r.result for r in results] == [i * 2 for i in range(48)]
        assert host.status("solo").metrics["success_count"] == 48

    def test_pool_serves_calls_in_parallel_and_counts_exactly(
        self, plugwarden_plugin, plugwarden_host
    ):
        """workers = 3 gives three processes; 60 concurrent calls all succeed."""
        from concurrent.futures import ThreadPoolExecutor

        plugwarden_plugin(
            "pool",
            plugin_source(WHO_AM_I),
        )
        host = plugwarden_host({"plugins": {"pool": {"workers": 3}}})
        assert len(host.worker_pids("pool")) == 3
        with ThreadPoolExecutor(6) as pool:
            results = list(pool.map(lambda _: host.call("pool", "pid", {}), range(60)))
        assert all(r.ok for r in results)
        assert {r.result for r in results} <= {identity(pid) for pid in host.worker_pids("pool")}
        status = host.status("pool")
        assert status.metrics["success_count"] == 60
        assert status.state is State.INITIALIZED


def test_host_never_imports_process_plugin_code(plugwarden_plugin, plugwarden_host):
    """A process plugin's module is imported in its worker, never in the host."""
    plugwarden_plugin("p", ECHO, module="never_in_host_plugin")
    host = plugwarden_host()
    assert host.status("p").state is State.INITIALIZED
    assert "never_in_host_plugin" not in sys.modules


def test_worker_pids_of_inline_plugin_is_empty(plugwarden_plugin, plugwarden_host):
    plugwarden_plugin("p", ECHO)
    host = plugwarden_host({"plugins": {"p": {"isolation": "inline"}}})
    assert host.worker_pids("p") == []
    assert Path  # keep import used


class TestConnection:
    def test_a_connection_closed_under_its_reader_is_not_reused_before_it_reads(self):
        """A restart closes a worker while a call is about to read its reply:
        the descriptor numbers must not go to the next worker's connection
        before that read, or the old call takes the new worker's reply ("reply
        to request 1 while request 4 waits"). The reader is held (by a
        profile hook) at its os.read while the worker is closed and fresh
        connections, each holding a frame, are opened."""
        zygote, pump = Zygote(), OutputPump()
        worker = WorkerProcess("idle", 2**30, 2**20, zygote, pump, lambda _: None)
        at_read, go_on = threading.Event(), threading.Event()

        def hold_at_read(frame, event, arg):  # type: ignore[no-untyped-def]
            reading = event == "c_call" and arg is os.read
            reader_read = (
                frame.f_code.co_name == "read" and "FrameReader" in frame.f_code.co_qualname
            )
            if reading and reader_read and not at_read.is_set():
                at_read.set()
                go_on.wait(60)

        fate: list[object] = []
        threading.setprofile(hold_at_read)
        try:
            reader = threading.Thread(
                target=lambda: fate.append(worker.receive(time.monotonic() + 60))
            )
            reader.start()
        finally:
            threading.setprofile(None)  # type: ignore[arg-type]
        fresh: list[tuple[socket.socket, socket.socket]] = []
        try:
            assert (
                worker.send(Load.encode(1, "x", "json", None, [], 1000, 0), time.monotonic() + 30)
                is None
            )
            wait_for(at_read.is_set, what="the reader to reach its read")
            worker.close()
            fresh = [socket.socketpair() for _ in range(4)]
            for pair in fresh:
                for end in pair:
                    end.send(b"\x00\x00\x00\x06forged")
            go_on.set()
            reader.join(30)
            assert fate and fate[0] != (Fate.REPLY, b"forged")
        finally:
            go_on.set()
            for pair in fresh:
                for end in pair:
                    end.close()
            worker.close()
            zygote.close()
            pump.close()
