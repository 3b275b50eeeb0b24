"""Hostile plugins against the worker boundary: each test is a
plugin that attacks the host, and what the host must still do. Real plugins,
real worker processes; every attack stays bounded (a few processes, a few
hundred MB)."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import textwrap
import threading
import traceback

import psutil
import pytest

from plugwarden import ErrorType, State
from plugwarden.isolation.process import containment as containment_level
from plugwarden.isolation.process import landlock
from tests.conftest import ECHO, gone, plugin_source, wait_for

NO_RESTART = {"defaults": {"restart": "never"}}
FAST = {"restart_backoff_s": 0.05, "restart_backoff_max_s": 0.2}
# Written by a process about itself: its pid as the host sees it.


@pytest.fixture(params=["pid-namespace", "subreaper"])
def containment(request, monkeypatch):
    """Both containment levels; the zygote reads the choice from its env."""
    if request.param == "subreaper":
        monkeypatch.setenv("PLUGWARDEN_CONTAINMENT", "subreaper")
    return request.param


def zygote_of(worker: int) -> psutil.Process:
    """The zygote that forked ``worker`` (its parent, or its keeper's
    parent) for a host in this process: the worker's ancestor that is a
    child of this process."""
    return next(p for p in psutil.Process(worker).parents() if p.ppid() == os.getpid())


def host_script(site, body: str) -> subprocess.CompletedProcess[str]:
    """Run ``body`` in a fresh interpreter with ``host`` started on ``site``."""
    script = textwrap.dedent(f"""
        import json, os, sys
        from plugwarden import Host
        host = Host({{"defaults": {{"restart": "never"}}}}, search_path=[{str(site)!r}])
        host.start()
    """) + textwrap.dedent(body)
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )


class TestNothingIsUnpickled:
    def test_a_crafted_validate_value_cannot_end_the_host(self, plugwarden_plugin, plugwarden_site):
        """validate() returns an object whose __reduce__ is os._exit(42):
        the host reads a verdict, never the object."""
        plugwarden_plugin(
            "exiter",
            "import os\nfrom plugwarden import hookimpl\n"
            "class Exit:\n    def __reduce__(self):\n        return (os._exit, (42,))\n"
            "@hookimpl\ndef validate():\n    return Exit()\n"
            "@hookimpl\ndef run(tool, args):\n    return 1\n",
        )
        done = host_script(
            plugwarden_site,
            'status = host.status("exiter")\nprint(json.dumps([status.state, status.reason]))\n'
            "host.close()\n",
        )
        assert done.returncode == 0, done.stderr
        state, reason = json.loads(done.stdout.splitlines()[-1])
        assert state == "FAILED" and "validate() returned Exit" in reason

    def test_a_plugin_class_in_a_value_is_never_imported_by_the_host(
        self, plugwarden_plugin, plugwarden_host, tmp_path
    ):
        marker = tmp_path / "imported-in"
        plugwarden_plugin(
            "classy",
            f"import os\nopen({str(marker)!r}, 'a').write(str(os.getpid()) + '\\n')\n"
            "from plugwarden import hookimpl\nclass Ready:\n    pass\n"
            "@hookimpl\ndef validate():\n    return Ready()\n"
            "@hookimpl\ndef run(tool, args):\n    return 1\n",
            module="classy_plugin_never_in_host",
        )
        config = granted(tmp_path)
        config["defaults"]["permissions"]["write"] = [str(tmp_path)]  # its marker
        host = plugwarden_host(config)
        assert host.status("classy").state is State.FAILED
        assert "validate() returned Ready" in host.status("classy").reason
        assert "classy_plugin_never_in_host" not in sys.modules
        assert str(os.getpid()) not in marker.read_text().split()

    def test_a_crafted_frame_on_the_connection_kills_only_that_worker(
        self, plugwarden_plugin, plugwarden_host
    ):
        """run() finds the worker's connection through gc and sends a pickle
        that would run os._exit in the host: a protocol violation."""
        body = (
            "import gc, os, pickle\nfrom multiprocessing.connection import Connection\n"
            "class Boom:\n    def __reduce__(self):\n        return (os._exit, (42,))\n"
            "for found in gc.get_objects():\n"
            "    if isinstance(found, Connection):\n"
            "        found.send_bytes(pickle.dumps(Boom()))\n"
            "return 'sent'"
        )
        plugwarden_plugin("crafty", plugin_source(body))
        plugwarden_plugin("sibling", ECHO)
        host = plugwarden_host(NO_RESTART)
        result = host.call("crafty", "t", {})
        assert result.error_type == ErrorType.PROTOCOL and result.guard == "protocol"
        assert "Protocol violation" in result.error and "not plain JSON" in result.error
        assert host.status("crafty").state is State.FAILED
        assert host.status("crafty").metrics["guard_trips"]["protocol"] == 1
        assert host.call("sibling", "t", {"n": 1}).ok


# run() writes raw bytes to the worker's connection: a frame's head, then
# maybe part of its body, and then hangs or returns.
RAW_FRAME = (
    "import gc, os, struct, time\nfrom multiprocessing.connection import Connection\n"
    "connection = next(o for o in gc.get_objects() if isinstance(o, Connection))\n"
    "os.write(connection.fileno(), struct.pack('!i', {length}) + {body!r})\n"
    "{then}"
)


def times_out_alone(host, name, args, stuck):
    """Call ``name`` on a thread: the call must come back within a minute
    (else it is ``stuck``) as a timeout, the plugin FAILED, and the plugin
    ``sibling`` must still answer."""
    answers = []
    caller = threading.Thread(target=lambda: answers.append(host.call(name, "t", args)))
    caller.start()
    caller.join(60)
    assert answers, f"the call did not return: {stuck}"
    (result,) = answers
    assert result.error_type == ErrorType.TIMEOUT and result.guard == "timeout"
    assert host.status(name).state is State.FAILED
    assert host.call("sibling", "t", {"n": 1}).ok


class TestFraming:
    def test_a_frame_cut_short_cannot_hold_a_call_past_its_timeout(
        self, plugwarden_plugin, plugwarden_host
    ):
        """A frame's head announcing 1000 bytes, 4 of them, then a hang: the
        call still times out at timeout_s (it waited in a read before, for
        ever), the worker is killed, and the sibling is unaffected."""
        body = RAW_FRAME.format(length=1000, body=b'{"v"', then="time.sleep(3600)")
        plugwarden_plugin("stutter", plugin_source(body), manifest={"guards": {"timeout_s": 1}})
        plugwarden_plugin("sibling", ECHO)
        host = plugwarden_host(NO_RESTART)
        times_out_alone(host, "stutter", {}, "stuck reading the cut frame")

    def test_a_worker_that_stops_reading_cannot_hold_a_large_request_past_its_timeout(
        self, containment, plugwarden_plugin, plugwarden_host, tmp_path
    ):
        """run() leaves a thread that, once told to, takes the worker's GIL
        for good (a C loop that never releases it): the worker reads no more.
        The next call's 8 MB of arguments do not fit the socket: the host's
        write waited for ever before; now the call times out at timeout_s."""
        go, holding = tmp_path / "go", tmp_path / "holding"
        body = (
            "def hog():\n"
            "    while not os.path.exists(args['go']):\n"
            "        time.sleep(0.01)\n"
            "    open(args['holding'], 'w').close()\n"
            "    sum(range(10**15))\n"
            "threading.Thread(target=hog, daemon=True).start()\n"
            "return 'armed'"
        )
        source = plugin_source(body, prelude="import os, threading, time")
        plugwarden_plugin("hog", source, manifest={"guards": {"timeout_s": 1}})
        plugwarden_plugin("sibling", ECHO)
        config = granted(tmp_path)
        config["defaults"]["permissions"]["write"] = [str(tmp_path)]  # "holding"
        host = plugwarden_host(config)
        assert host.call("hog", "t", {"go": str(go), "holding": str(holding)}).ok
        go.touch()
        wait_for(holding.exists, what="the plugin's thread to take the GIL")
        blob = {"blob": "x" * (8 * 2**20)}
        times_out_alone(host, "hog", blob, "its write to the worker is stuck")

    def test_a_frame_of_negative_length_is_a_protocol_violation(
        self, plugwarden_plugin, plugwarden_host
    ):
        body = RAW_FRAME.format(length=-5, body=b"", then="return 'sent'")
        plugwarden_plugin("negative", plugin_source(body))
        host = plugwarden_host(NO_RESTART)
        result = host.call("negative", "t", {})
        assert result.error_type == ErrorType.PROTOCOL and "a frame of length -5" in result.error
        assert host.status("negative").state is State.FAILED

    def test_a_frame_announcing_more_than_the_cap_is_refused_before_its_body(
        self, plugwarden_plugin, plugwarden_host
    ):
        """The head alone says 2 GB: refused at once, nothing more is read."""
        body = RAW_FRAME.format(length=2**31 - 1, body=b"", then="time.sleep(3600)")
        plugwarden_plugin("boast", plugin_source(body), manifest={"guards": {"timeout_s": 600}})
        host = plugwarden_host(NO_RESTART)
        result = host.call("boast", "t", {})
        assert result.error_type == ErrorType.PROTOCOL and "byte cap" in result.error


class TestRepliesMatchRequests:
    def test_a_fork_in_run_never_hands_one_callers_result_to_another(
        self, plugwarden_plugin, plugwarden_host
    ):
        """run() forks and returns in both processes: each caller still gets
        its own answer, and the plugin stays up."""
        body = "import os\nchild = os.fork() == 0\nreturn {'n': args['n'], 'child': child}"
        plugwarden_plugin("forky", plugin_source(body))
        host = plugwarden_host(NO_RESTART)
        results = [host.call("forky", "t", {"n": n}) for n in range(8)]
        assert [r.result for r in results] == [{"n": n, "child": False} for n in range(8)]
        assert host.status("forky").state is State.INITIALIZED

    def test_a_reply_from_another_pid_is_a_protocol_violation(
        self, plugwarden_plugin, plugwarden_host
    ):
        """A forked child writes a well-formed reply to the current request
        itself: wrong pid, the worker is killed, nobody gets its data."""
        body = (
            "import gc, json, os, sys\nfrom multiprocessing.connection import Connection\n"
            "frame = sys._getframe()\n"
            "while not hasattr(frame.f_locals.get('request'), 'id'):\n"
            "    frame = frame.f_back\n"
            "request = frame.f_locals['request'].id\n"
            "if os.fork() == 0:\n"
            "    conn = next(o for o in gc.get_objects() if isinstance(o, Connection))\n"
            "    fake = {'v': 1, 'id': request, 'pid': os.getpid(), 'kind': 'outcome',\n"
            "            'ok': True, 'hook': 'run', 'error': None, 'error_type': None,\n"
            "            'ms': 0, 'result': 'stolen'}\n"
            "    conn.send_bytes(json.dumps(fake).encode())\n"
            "    os._exit(0)\n"
            "os.wait()\n"
            "return 'mine'"
        )
        plugwarden_plugin("liar", plugin_source(body))
        host = plugwarden_host(NO_RESTART)
        result = host.call("liar", "t", {})
        assert result.result != "stolen"
        assert result.error_type == ErrorType.PROTOCOL and "did the plugin fork" in result.error
        assert host.status("liar").state is State.FAILED


DETACHED = """
import ctypes, os, time
token, go = {token!r}, {go!r}

def named():
    for pid in os.listdir("/proc"):
        try:
            with open(f"/proc/{{pid}}/comm") as comm:
                if comm.read().strip() == token:
                    return True
        except OSError:
            pass
    return False

if os.fork() == 0:
    {detach}
    if os.fork() == 0:
        ctypes.CDLL(None).prctl(15, token.encode(), 0, 0, 0)  # its name: how it is found
        while go and not os.path.exists(go):
            time.sleep(0.01)
        hoard = b"x" * ({hoard_mb} * 2**20)
        while True:
            time.sleep(1)
    os._exit(0)
while not named():
    time.sleep(0.01)
"""


def detached(token, detach="os.setsid()", hoard_mb=1, go=""):
    """A grandchild that leaves the worker's session (or group) and lives
    on, named ``token`` (a plugin in a PID namespace of its own knows no pid
    this test could use: the test finds it by that name, with
    :func:`named`); with ``go``, it allocates ``hoard_mb`` only once that
    file exists."""
    return DETACHED.format(token=token, go=str(go), detach=detach, hoard_mb=hoard_mb)


def token() -> str:
    """A process name no other process has (at most 15 characters)."""
    return "pwgc" + secrets.token_hex(5)


def named(name: str) -> list[int]:
    """The processes of this machine named ``name``, zombies aside."""
    found = []
    for process in psutil.process_iter(["name"]):
        if process.info["name"] == name and not gone(process.pid):
            found.append(process.pid)
    return found


def granted(tmp_path, config=None):
    """``config`` (NO_RESTART by default) letting the plugins read
    ``tmp_path``, where these tests leave files for them: the sandbox grants
    nothing else."""
    config = dict(NO_RESTART if config is None else config)
    defaults = {**config.get("defaults", {}), "permissions": {"read": [str(tmp_path)]}}
    return {**config, "defaults": defaults}


class TestNoEscape:
    @pytest.mark.parametrize("detach", ["os.setsid()", "os.setpgid(0, 0)"])
    def test_a_detached_grandchild_dies_with_a_timed_out_worker(
        self, plugwarden_plugin, plugwarden_host, tmp_path, containment, detach
    ):
        name = token()
        body = detached(name, detach) + "while True:\n    time.sleep(1)"
        plugwarden_plugin("escaper", plugin_source(body), manifest={"guards": {"timeout_s": 2}})
        host = plugwarden_host(NO_RESTART)
        result = host.call("escaper", "t", {})
        assert result.error_type == ErrorType.TIMEOUT
        wait_for(lambda: not named(name), what="the detached grandchild to die")

    def test_a_detached_grandchild_counts_against_the_memory_limit(
        self, plugwarden_plugin, plugwarden_host, tmp_path, containment
    ):
        """It holds 300 MB against a 200 MB limit after run() returned: the
        worker's tree is over, the worker is killed, the grandchild too."""
        name, go = token(), tmp_path / "go"
        body = detached(name, hoard_mb=300, go=go) + "return 'left it running'"
        plugwarden_plugin("hoarder", plugin_source(body), manifest={"guards": {"memory_mb": 200}})
        host = plugwarden_host(granted(tmp_path))
        assert host.call("hoarder", "t", {}).ok
        grandchild = named(name)[0]
        go.write_text("1")
        wait_for(lambda: host.status("hoarder").state is State.FAILED, what="the memory kill")
        assert "exceeded 200 MB memory limit" in host.status("hoarder").reason
        wait_for(lambda: gone(grandchild), what="the grandchild to die")

    def test_close_and_restart_end_a_detached_grandchild(
        self, plugwarden_plugin, plugwarden_host, tmp_path, containment
    ):
        name = token()
        plugwarden_plugin("escaper", plugin_source("return 1", init_body=detached(name)))
        host = plugwarden_host(NO_RESTART)
        (first,) = named(name)
        host.restart("escaper")
        wait_for(lambda: gone(first), what="the first grandchild to die at restart")
        (second,) = named(name)
        fds = len(os.listdir("/proc/self/fd"))
        host.close()
        wait_for(lambda: gone(second), what="the second grandchild to die at close")
        assert len(os.listdir("/proc/self/fd")) < fds  # its output pipe closed too


class TestNothingOutsideItsTree:
    def test_a_plugin_cannot_kill_its_parent_the_zygote_or_a_sibling(
        self, plugwarden_plugin, plugwarden_host
    ):
        """In a PID namespace the host, the zygote and other workers do not
        exist for the plugin: kill() finds nothing to kill."""
        if containment_level.probe() != "pid-namespace":
            pytest.skip("no PID namespaces here: the plugin would kill this test run")
        body = (
            "import os\nfound = []\n"
            "for pid in args['pids']:\n"
            "    try:\n        os.kill(pid, 9)\n        found.append(pid)\n"
            "    except ProcessLookupError:\n        pass\n"
            "return found"
        )
        plugwarden_plugin("killer", plugin_source(body))
        plugwarden_plugin("sibling", ECHO)
        host = plugwarden_host(NO_RESTART)
        zygote = zygote_of(host.worker_pids("sibling")[0]).pid
        targets = [os.getpid(), zygote, *host.worker_pids("sibling")]
        result = host.call("killer", "t", {"pids": targets})
        assert result.result == []
        assert host.call("sibling", "t", {}).ok and not gone(zygote)

    def test_killing_the_parent_from_inside_costs_at_most_that_worker(
        self, plugwarden_plugin, plugwarden_host, containment
    ):
        """kill(getppid(), 9): the parent is the worker's init (or keeper),
        outside the worker's Landlock domain, which may not be signalled
        (ABI 6): EPERM, and the plugin serves on. Without that scope, in a
        PID namespace the init ignores the signal; otherwise the keeper dies
        and the worker with it. Never the zygote or a sibling."""
        plugwarden_plugin("parricide", plugin_source("import os\nos.kill(os.getppid(), 9)"))
        plugwarden_plugin("sibling", ECHO)
        host = plugwarden_host(NO_RESTART)
        siblings = host.worker_pids("sibling")
        result = host.call("parricide", "t", {})
        if landlock.abi() >= 6:
            assert result.error_type == "PermissionError", result
            assert host.status("parricide").state is State.INITIALIZED
        elif containment == "pid-namespace":
            assert result.ok and host.status("parricide").state is State.INITIALIZED
        else:  # the worker dies with its keeper, during the call or just after
            assert result.ok or result.guard == "crash"
            wait_for(lambda: host.status("parricide").state is State.FAILED, what="its death")
            assert "SIGKILL" in host.status("parricide").reason
        assert host.worker_pids("sibling") == siblings
        assert host.call("sibling", "t", {}).ok

    def test_a_dead_zygote_is_named_and_plugins_come_back(self, plugwarden_plugin, plugwarden_host):
        plugwarden_plugin("p", ECHO)
        host = plugwarden_host({"defaults": FAST})
        (worker,) = host.worker_pids("p")
        zygote = zygote_of(worker)
        zygote.kill()

        def named() -> bool:
            history = [t.reason for t in host.status("p").history]
            return any(
                "The zygote process (it forks the workers) killed by SIGKILL" in r for r in history
            )

        wait_for(named, what="the zygote's death in the plugin's history")
        wait_for(lambda: host.worker_pids("p") not in ([], [worker]), what="a new worker")
        assert host.status("p").state is State.INITIALIZED
        assert host.call("p", "t", {}).ok
        assert zygote_of(host.worker_pids("p")[0]).pid != zygote.pid

    @pytest.mark.parametrize("trial", range(3))
    def test_nothing_outlives_a_host_killed_with_sigkill(
        self, plugwarden_plugin, plugwarden_site, tmp_path, trial, containment
    ):
        name = token()
        plugwarden_plugin("p", plugin_source("return 1", init_body=detached(name)))
        plugwarden_plugin(
            "q",
            plugin_source(
                "return 1", init_body="import subprocess\nsubprocess.Popen(['sleep', '1000'])"
            ),
        )
        script = textwrap.dedent(f"""
            import json, time
            from plugwarden import Host
            host = Host({{}}, search_path=[{str(plugwarden_site)!r}])
            host.start()
            print(json.dumps(host.worker_pids("p") + host.worker_pids("q")), flush=True)
            time.sleep(1000)
        """)
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
        try:
            workers = json.loads(proc.stdout.readline())
            family = [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
            assert len(workers) == 2 and named(name)[0] in family
            proc.kill()
            proc.wait()
            try:
                wait_for(lambda: all(gone(pid) for pid in family), what="every descendant to die")
            except AssertionError:
                left = [(p, psutil.Process(p).name()) for p in family if not gone(p)]
                raise AssertionError(f"left alive: {left}; workers {workers}") from None
        finally:
            proc.kill()
            proc.stdout.close()


class TestCallsNeverRaise:
    def test_bad_arguments_and_bad_values_each_get_a_record(
        self, plugwarden_plugin, plugwarden_host
    ):
        plugwarden_plugin("echo", ECHO)
        host = plugwarden_host()
        deep: dict = {}
        for _ in range(5000):
            deep = {"d": deep}
        cyclic: list = []
        cyclic.append(cyclic)
        for args, error_type in [
            ({"f": lambda: 1}, ErrorType.INVALID_ARGUMENTS),
            (deep, ErrorType.INVALID_ARGUMENTS),
            ({"c": cyclic}, ErrorType.RESULT_NOT_SERIALIZABLE),
            ({"x": float("nan")}, ErrorType.RESULT_NOT_SERIALIZABLE),
            ("not a dict", ErrorType.INVALID_ARGUMENTS),
        ]:
            result = host.call("echo", "t", args)
            assert not result.ok and result.error_type == error_type, (args, result)
        status = host.status("echo")
        assert (status.state, status.in_flight) == (State.INITIALIZED, 0)

    def test_an_inline_exception_whose_str_raises_is_still_a_record(
        self, plugwarden_plugin, plugwarden_host
    ):
        body = (
            "class Nasty(Exception):\n    def __str__(self):\n        raise RuntimeError\n"
            "raise Nasty"
        )
        plugwarden_plugin("nasty", plugin_source(body))
        host = plugwarden_host({"plugins": {"nasty": {"isolation": "inline"}}})
        result = host.call("nasty", "t", {})
        assert result.error_type == "Nasty" and "could not be read" in result.error

    def test_calls_racing_restarts_and_close_all_return_records(
        self, plugwarden_plugin, plugwarden_host
    ):
        plugwarden_plugin("echo", ECHO)
        host = plugwarden_host({"plugins": {"echo": {"workers": 2}}})
        raised, results = [], []
        stop = threading.Event()

        def hammer():
            while not stop.is_set():
                try:
                    results.append(host.call("echo", "t", {}))
                except BaseException as exc:
                    raised.append(exc)

        callers = [threading.Thread(target=hammer) for _ in range(4)]
        for caller in callers:
            caller.start()
        try:
            for _ in range(10):
                host.restart("echo")
        finally:
            host.close()
            stop.set()
            for caller in callers:
                caller.join(30)
        assert raised == [], "".join(traceback.format_exception(raised[0])[-4:])
        assert {r.error_type for r in results} <= {
            None,
            ErrorType.RESTARTED,
            ErrorType.CLOSED,
            ErrorType.PLUGIN_NOT_AVAILABLE,
        }
        assert host.status("echo").in_flight == 0

    @pytest.mark.parametrize("value", ["nan", "inf"])
    def test_config_and_manifest_refuse_nan_and_inf(
        self, plugwarden_plugin, plugwarden_host, value
    ):
        from plugwarden import ConfigError, HostConfig

        with pytest.raises(ConfigError) as info:
            HostConfig.from_dict({"defaults": {"timeout_s": float(value)}})
        assert info.value.key == "defaults.timeout_s"
        plugwarden_plugin("p", ECHO, manifest=f"[guards]\ntimeout_s = {value}\n")
        host = plugwarden_host(NO_RESTART)
        status = host.status("p")
        assert status.state is State.FAILED and "guards.timeout_s" in status.reason


class TestOnlyTheOperatorTrusts:
    def test_a_manifest_cannot_make_its_plugin_inline(self, plugwarden_plugin, plugwarden_host):
        plugwarden_plugin(
            "sneaky",
            plugin_source("import os\nreturn os.getpid()"),
            manifest={"guards": {"isolation": "inline"}},
        )
        host = plugwarden_host()
        status = host.status("sneaky")
        assert status.info.isolation == "process" and host.worker_pids("sneaky")
        assert host.call("sneaky", "t", {}).result != os.getpid()
        assert any("ignored" in t.reason and "inline" in t.reason for t in status.history)

    def test_the_operator_can_and_inline_calls_get_a_copy_of_their_args(
        self, plugwarden_plugin, plugwarden_host
    ):
        plugwarden_plugin("mutator", plugin_source("args['items'].append('theirs')\nreturn 1"))
        host = plugwarden_host({"plugins": {"mutator": {"isolation": "inline"}}})
        mine = {"items": ["mine"]}
        assert host.call("mutator", "t", mine).ok
        assert mine == {"items": ["mine"]}


class TestNames:
    @pytest.mark.parametrize("name", ["has space", "a/b", "caf\u00e9", "-dash", "x" * 101])
    def test_a_name_that_cannot_be_a_url_segment_is_refused(
        self, plugwarden_plugin, plugwarden_host, name
    ):
        plugwarden_plugin(name, ECHO, module="oddly_named_plugin")
        host = plugwarden_host()
        status = host.status(name)
        assert status.state is State.FAILED and "cannot be addressed in a URL" in status.reason
        assert host.call(name, "t", {}).error_type == ErrorType.UNKNOWN_PLUGIN


class TestOutput:
    def test_a_crafted_log_line_cannot_stop_the_output_pump(
        self, plugwarden_plugin, plugwarden_host
    ):
        """A worker line marked as a log record is parsed as JSON; one nested
        past the parser's recursion limit is plain text, and the one thread
        that reads every worker's output goes on (dead, it would leave the
        next worker that prints a pipe's worth blocked in write)."""
        body = (
            "if tool == 'crafted':\n"
            "    print('\\x1e' + '[' * 5000, flush=True)\n"
            "else:\n"
            "    for _ in range(2000):\n"
            "        print('x' * 100, flush=True)\n"
            "return tool"
        )
        plugwarden_plugin("printer", plugin_source(body))
        host = plugwarden_host({"defaults": {"timeout_s": 10}})
        assert host.call("printer", "crafted", {}).ok
        loud = host.call("printer", "loud", {})  # ~200 KB: three pipes' worth
        assert loud.ok, loud.error


class TestBoundedRecords:
    def test_a_huge_reason_from_a_plugin_is_cut_in_the_record(
        self, plugwarden_plugin, plugwarden_host
    ):
        """A plugin's text in a reason (validate()'s verdict, an exception's
        message) is cut at REASON_LIMIT: every record and its history carry
        their reasons, so a megabyte each would bloat every list response."""
        from plugwarden.plugin.lifecycle import REASON_LIMIT

        plugwarden_plugin(
            "verbose",
            "from plugwarden import hookimpl\n\n@hookimpl\ndef validate():\n"
            "    return 'v' * 1_000_000\n\n@hookimpl\ndef run(tool, args):\n    return 1\n",
        )
        plugwarden_plugin("raiser", "raise RuntimeError('r' * 1_000_000)\n")
        host = plugwarden_host()
        for name in ("verbose", "raiser"):
            status = host.status(name)
            assert status.state in (State.UNAVAILABLE, State.FAILED)
            assert len(status.reason) < REASON_LIMIT + 100, name
            assert status.reason.endswith("more characters]"), name
            assert all(len(t.reason) < REASON_LIMIT + 100 for t in status.history), name
        assert len(host.status("verbose").to_json()) < 4 * REASON_LIMIT + 2000
