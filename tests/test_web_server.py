"""plugwarden serve: a real process, shut down by SIGTERM, leaving nothing."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.conftest import ECHO, free_port, gone, plugwarden_command, wait_for


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@contextlib.contextmanager
def running(
    command: list[str],
    cwd: Path,
    site: Path,
    preexec_fn: Callable[[], None] | None = None,
) -> Iterator[tuple[subprocess.Popen[bytes], list[str]]]:
    """``command`` running with ``site`` on its path (``preexec_fn`` run in
    the child first); its output, once it has ended (killed if still
    running), is the list's one item."""
    env = {**os.environ, "PYTHONPATH": str(site)}
    proc = subprocess.Popen(
        command,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        preexec_fn=preexec_fn,
    )
    output: list[str] = []
    try:
        yield proc, output
    finally:
        if proc.poll() is None:
            proc.kill()
        output.append(proc.stdout.read().decode() if proc.stdout else "")
        proc.wait()
        if proc.stdout:
            proc.stdout.close()


def drains_clean(
    proc: subprocess.Popen[bytes], family: list[int], then: Callable[[], object] = lambda: None
) -> None:
    """SIGTERM (then ``then()``): a clean drain, exit 0, no process left."""
    proc.send_signal(signal.SIGTERM)
    then()
    assert proc.wait(60) == 0
    wait_for(lambda: all(gone(pid) for pid in family), what="every child to exit")


class TestServe:
    def test_sigterm_shuts_down_cleanly_leaving_no_process(
        self, plugwarden_plugin, plugwarden_site, tmp_path
    ):
        plugwarden_plugin("p1", ECHO)
        plugwarden_plugin("p2", ECHO)
        port = free_port()
        command = [sys.executable, "-m", "plugwarden", "serve", "--port", str(port)]
        with running(command, tmp_path, plugwarden_site) as (proc, output):
            wait_for(lambda: answers(f"http://127.0.0.1:{port}/readyz"), 60, "readiness")
            names = {p["name"] for p in httpx.get(f"http://127.0.0.1:{port}/v1/plugins").json()}
            assert {"p1", "p2"} <= names
            family = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
            assert len(family) >= 3  # the zygote and two workers
            drains_clean(proc, family)  # nothing was in flight
        assert "Application shutdown complete." in output[0]
        assert "Traceback" not in output[0]
        # It says where it serves, and what is off without a token.
        assert f"serving http://127.0.0.1:{port}" in output[0]
        assert "No token: run, restart and jobs are off" in output[0]

    def test_a_sigterm_before_uvicorn_runs_drains_too(
        self, plugwarden_plugin, plugwarden_site, tmp_path
    ):
        """serve starts its plugins before it imports the web stack: a
        SIGTERM in between still drains (exit 0), and leaves nothing."""
        plugwarden_plugin("p1", ECHO)
        gate = tmp_path / "gate"
        script = WEB_IMPORT_WAITS.format(gate=str(gate), port=free_port())
        with running([sys.executable, "-c", script], tmp_path, plugwarden_site) as (proc, output):
            reached = tmp_path / "gate.reached"
            wait_for(reached.exists, 60, "serve to reach its import of uvicorn")
            family = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
            assert family  # the zygote, at least
            drains_clean(proc, family, then=gate.touch)
        assert "clean drain" in output[0]
        assert "Traceback" not in output[0]


# Runs plugwarden serve, holding its first import of uvicorn until the test
# opens the gate: the moment between the plugins' start and uvicorn's.
WEB_IMPORT_WAITS = """
import importlib.abc, os, sys, time

class Gate(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "uvicorn":
            sys.meta_path.remove(self)
            open({gate!r} + ".reached", "w").close()
            deadline = time.monotonic() + 60
            while not os.path.exists({gate!r}) and time.monotonic() < deadline:
                time.sleep(0.01)
        return None

sys.meta_path.insert(0, Gate())
from plugwarden.cli.main import main
sys.exit(main(["serve", "--port", "{port}"]))
"""


HOLD = """
from plugwarden import hookimpl

@hookimpl
def validate():
    return True

@hookimpl
def run(tool, args):
    import os, time
    open(os.path.join({where!r}, "started-" + str(args["i"])), "w").close()
    while not os.path.exists(os.path.join({where!r}, "release")):
        time.sleep(0.01)
    return args["i"]
"""


class Serving:
    """``plugwarden serve`` in a subprocess, with a plugin whose runs block
    until the test releases them."""

    def __init__(self, site, tmp_path, drain_timeout_s, own_group=False):
        self.tmp = tmp_path / "gate"  # the plugin's files, granted to it (not the config)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        (tmp_path / "plugwarden.toml").write_text(
            f'[server]\ntoken = "drain-token"\ndrain_timeout_s = {drain_timeout_s}\n'
            "[plugins.hold]\nworkers = 3\n"
            f'permissions = {{ read = ["{self.tmp}"], write = ["{self.tmp}"] }}\n'
        )
        env = {**os.environ, "PYTHONPATH": str(site)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "plugwarden", "serve", "--port", str(self.port)],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            process_group=0 if own_group else None,  # a group of its own: os.killpg
        )
        wait_for(lambda: answers(self.url + "/readyz"), 60, "readiness")
        self.family = [c.pid for c in psutil.Process(self.proc.pid).children(recursive=True)]
        self.answers: list[httpx.Response] = []

    def run(self, i):
        return httpx.post(
            self.url + "/v1/plugins/hold/run",
            json={"tool": "t", "args": {"i": i}},
            headers={"Authorization": "Bearer drain-token"},
            timeout=60,
        )

    def start_runs(self, count):
        import threading

        threads = [
            threading.Thread(target=lambda i=i: self.answers.append(self.run(i)))
            for i in range(count)
        ]
        for thread in threads:
            thread.start()
        wait_for(
            lambda: all((self.tmp / f"started-{i}").exists() for i in range(count)),
            what="every run to be in flight",
        )
        return threads

    def output(self):
        if self.proc.poll() is None:
            self.proc.kill()
        text = self.proc.stdout.read().decode()
        self.proc.stdout.close()
        return text


@pytest.fixture
def serving(plugwarden_plugin, plugwarden_site, tmp_path):
    (tmp_path / "gate").mkdir()
    plugwarden_plugin("hold", HOLD.format(where=str(tmp_path / "gate")))
    made = []

    def make(drain_timeout_s=30, own_group=False):
        made.append(Serving(plugwarden_site, tmp_path, drain_timeout_s, own_group))
        return made[-1]

    yield make
    for each in made:
        if each.proc.poll() is None:
            each.proc.kill()
            each.proc.wait()


class TestDrain:
    def test_sigterm_drains_calls_in_flight_then_exits_zero(self, serving):
        """Not ready at once, new runs 503 with Retry-After, the calls in
        flight finish and their callers get their records; exit status 0."""
        server = serving()
        threads = server.start_runs(3)

        server.proc.send_signal(signal.SIGTERM)

        wait_for(lambda: httpx.get(server.url + "/readyz").status_code == 503, what="not ready")
        refused = server.run(99)
        assert refused.status_code == 503 and refused.headers["retry-after"]
        assert refused.json()["error_type"] == "ShuttingDown"
        assert server.proc.poll() is None and not server.answers  # still draining
        (server.tmp / "release").write_text("1")
        for thread in threads:
            thread.join(60)
        assert sorted(r.json()["result"] for r in server.answers) == [0, 1, 2]
        assert all(r.status_code == 200 for r in server.answers)
        assert server.proc.wait(60) == 0
        wait_for(lambda: all(gone(pid) for pid in server.family), what="every child to exit")
        output = server.output()
        assert "Traceback" not in output and " 500 " not in output

    @pytest.mark.parametrize("level", ["pid-namespace", "subreaper"])
    def test_a_sigterm_to_the_whole_process_group_drains_the_same(
        self, serving, monkeypatch, level
    ):
        """``timeout``, a shell's job control or ``kill -- -PGID`` signal the
        server's whole group, the zygote (and the keepers) with it: they
        leave their end to the host, and the calls in flight finish."""
        if level == "subreaper":
            monkeypatch.setenv("PLUGWARDEN_CONTAINMENT", "subreaper")
        server = serving(own_group=True)
        threads = server.start_runs(2)

        os.killpg(server.proc.pid, signal.SIGTERM)

        wait_for(lambda: httpx.get(server.url + "/readyz").status_code == 503, what="not ready")
        (server.tmp / "release").write_text("1")
        for thread in threads:
            thread.join(60)
        assert sorted(r.json()["result"] for r in server.answers) == [0, 1]
        assert server.proc.wait(60) == 0
        wait_for(lambda: all(gone(pid) for pid in server.family), what="every child to exit")
        output = server.output()
        assert "zygote process died" not in output and "Traceback" not in output

    def test_calls_past_the_drain_timeout_end_with_a_shutting_down_record(self, serving):
        server = serving(drain_timeout_s=0.5)
        threads = server.start_runs(2)

        server.proc.send_signal(signal.SIGTERM)
        for thread in threads:
            thread.join(60)

        assert len(server.answers) == 2
        for answer in server.answers:
            assert answer.status_code == 503 and answer.headers["retry-after"]
            record = answer.json()
            assert (record["ok"], record["error_type"], record["guard"]) == (
                False,
                "ShuttingDown",
                None,
            )
        assert server.proc.wait(60) == 1  # calls had to be cut short
        wait_for(lambda: all(gone(pid) for pid in server.family), what="every child to exit")
        assert "Traceback" not in server.output()

    def test_a_second_signal_exits_at_once(self, serving):
        """Draining for up to 600 s: a second signal ends the calls in flight
        with their records and exits (status 1: calls were cut short)."""
        server = serving(drain_timeout_s=600)
        threads = server.start_runs(1)
        server.proc.send_signal(signal.SIGTERM)
        wait_for(lambda: httpx.get(server.url + "/readyz").status_code == 503, what="draining")
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(60) == 1
        threads[0].join(60)
        (answer,) = server.answers
        assert answer.status_code == 503 and answer.json()["error_type"] == "ShuttingDown"
        wait_for(lambda: all(gone(pid) for pid in server.family), what="every child to exit")
        assert "Traceback" not in server.output()


class TestServeRoughEdges:
    def test_a_busy_port_is_one_clear_error_and_exit_two(self, tmp_path):
        with socket.socket() as holder:
            holder.bind(("127.0.0.1", 0))
            holder.listen()
            port = holder.getsockname()[1]
            done = plugwarden_command("serve", "--port", str(port), cwd=tmp_path)
        assert done.returncode == 2
        assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
        assert "Address already in use" in done.stderr
        assert "startup complete" not in done.stderr + done.stdout
        assert "Traceback" not in done.stderr

    def test_a_corrupt_jobs_database_is_a_clear_startup_error(self, tmp_path):
        database = tmp_path / "jobs.sqlite3"
        database.write_bytes(b"garbage" * 1000)
        (tmp_path / "plugwarden.toml").write_text(f'[jobs]\npath = "{database}"\n')
        done = plugwarden_command("serve", "--port", str(free_port()), cwd=tmp_path)
        assert done.returncode == 2
        assert f"Jobs database {database}" in done.stderr and "move it away" in done.stderr
        assert "startup complete" not in done.stderr + done.stdout
        assert "Traceback" not in done.stderr

    @pytest.mark.parametrize("token", ["change-me", "short-token"])
    def test_a_weak_token_is_warned_about(self, tmp_path, token):
        (tmp_path / "plugwarden.toml").write_text(f'[server]\ntoken = "{token}"\n')
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "plugwarden", "serve", "--port", str(port)],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": ""},
        )
        try:
            wait_for(lambda: answers(f"http://127.0.0.1:{port}/healthz"), 60, "the server")
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(60) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
            output = proc.stdout.read().decode()
            proc.stdout.close()
        assert "anyone who guesses it can run and restart plugins" in output

    def test_a_config_error_names_the_file_without_placeholders(self, tmp_path):
        (tmp_path / "plugwarden.toml").write_text("[server\n")
        done = plugwarden_command("list", "--local", cwd=tmp_path)
        assert done.returncode == 2
        assert "plugwarden.toml: is not valid TOML" in done.stderr and "<" not in done.stderr


def test_serve_listens_on_a_socket_asyncio_sets_nodelay_on():
    """asyncio turns Nagle off only for sockets created as IPPROTO_TCP; the
    socket serve binds itself must be one (else ~40 ms per response)."""
    from plugwarden.web.launch import listen

    listener = listen("127.0.0.1", 0)
    try:
        assert listener.proto == socket.IPPROTO_TCP
    finally:
        listener.close()
