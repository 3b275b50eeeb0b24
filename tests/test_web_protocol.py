"""Connections: a bounded number, idle ones making room, probes answered on
a port of their own whatever other clients do, descriptors that never run
out under a flood (a real ``plugwarden serve``)."""

from __future__ import annotations

import contextlib
import resource
import selectors
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx

from plugwarden.web.launch import connection_room
from plugwarden.web.protocol import YOUNG_S
from tests.conftest import ECHO, free_port, wait_for
from tests.test_web_server import answers, running


def closed_by_server(connection: socket.socket) -> bool:
    try:
        return connection.recv(1, socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


@contextlib.contextmanager
def flood(port: int, count: int, *, reopen: bool) -> Iterator[list[socket.socket]]:
    """``count`` idle connections to ``port``; with ``reopen``, one closed
    by the server is opened again at once (until the block ends)."""
    held: list[socket.socket] = [
        socket.create_connection(("127.0.0.1", port)) for _ in range(count)
    ]
    done = threading.Event()

    def keep() -> None:
        with selectors.DefaultSelector() as selector:
            for connection in held:
                selector.register(connection, selectors.EVENT_READ)
            while not done.is_set():
                for key, _ in selector.select(0.1):
                    selector.unregister(key.fileobj)
                    key.fileobj.close()  # type: ignore[union-attr]
                    with contextlib.suppress(OSError):
                        fresh = socket.create_connection(("127.0.0.1", port), timeout=5)
                        held.append(fresh)
                        selector.register(fresh, selectors.EVENT_READ)

    keeper = threading.Thread(target=keep, daemon=True)
    if reopen:
        keeper.start()
    try:
        yield held
    finally:
        done.set()
        if reopen:
            keeper.join(10)
        for connection in held:
            connection.close()


@contextlib.contextmanager
def serving(
    site: Path, tmp_path: Path, config: str, nofile: int | None = None
) -> Iterator[tuple[str, list[str]]]:
    """``plugwarden serve`` on a free port with ``config`` (and a descriptor
    limit of ``nofile``): its URL, and its output once it has ended."""
    port = free_port()
    (tmp_path / "plugwarden.toml").write_text(config)

    def limit() -> None:
        if nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    command = [sys.executable, "-m", "plugwarden", "serve", "--port", str(port)]
    with running(command, tmp_path, site, limit) as (_, output):
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: answers(url + "/healthz"), 60, "serve to listen")
        yield url, output


class TestConnections:
    def test_past_the_limit_idle_connections_make_room_and_a_probe_answers(
        self, plugwarden_plugin, plugwarden_server
    ):
        """40 idle connections to a server of 20: it held all of them, and
        every request (probes too) answered 503 'Exceeded concurrency limit'."""
        plugwarden_plugin("p", ECHO)
        server = plugwarden_server({"server": {"max_connections": 20, "idle_timeout_s": 120}})
        port = int(server.url.rsplit(":", 1)[1])
        with flood(port, 40, reopen=False) as held:
            wait_for(lambda: sum(map(closed_by_server, held)) >= 20, 30, "the server to close 20")
            old = [c for c in held if not closed_by_server(c)]
            assert len(old) <= 20
            # Once the idle ones are no longer young, a probe takes one's place.
            wait_for(lambda: answers(server.url + "/healthz"), 10 * YOUNG_S + 20, "a probe")
            assert httpx.get(server.url + "/readyz", timeout=5).status_code == 200


class TestProbePort:
    def test_probes_on_their_port_answer_every_time_under_a_flood(
        self, plugwarden_plugin, plugwarden_site, tmp_path
    ):
        plugwarden_plugin("p", ECHO)
        probe_port = free_port()
        config = f"[server]\nmax_connections = 20\nprobe_port = {probe_port}\n"
        with serving(plugwarden_site, tmp_path, config) as (url, _):
            port = int(url.rsplit(":", 1)[1])
            probes = f"http://127.0.0.1:{probe_port}"
            wait_for(lambda: answers(probes + "/readyz"), 60, "readiness")
            with flood(port, 60, reopen=True):
                answers_seen = [
                    httpx.get(probes + path, timeout=10).status_code
                    for _ in range(10)
                    for path in ("/healthz", "/readyz", "/metrics")
                ]
            assert answers_seen == [200] * 30
            # The probe port serves the probes only.
            assert httpx.get(probes + "/v1/plugins", timeout=10).status_code == 404


class TestDescriptors:
    def test_the_soft_descriptor_limit_is_raised_to_the_hard_one(self):
        script = (
            "import resource\nfrom plugwarden.web.launch import connection_room\n"
            "resource.setrlimit(resource.RLIMIT_NOFILE, (256, 4096))\n"
            "room = connection_room(100000)\n"
            "print(resource.getrlimit(resource.RLIMIT_NOFILE)[0], room)\n"
        )
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
        assert done.stdout.split() == ["4096", str(4096 - 1024)], done.stderr
        assert connection_room(10) == 10

    def test_a_flood_past_the_descriptors_never_storms_the_log(
        self, plugwarden_plugin, plugwarden_site, tmp_path
    ):
        """Under a soft limit of 1024 (systemd's default) a flood of
        connections used every descriptor: each accept failed and logged a
        traceback (150,583 in 12 s) while /healthz timed out. Now the
        connections stay within what the descriptors allow."""
        plugwarden_plugin("p", ECHO)
        with serving(plugwarden_site, tmp_path, "", nofile=256) as (url, ended):
            port = int(url.rsplit(":", 1)[1])
            with flood(port, 400, reopen=True):
                wait_for(lambda: answers(url + "/healthz"), 60, "a probe through the flood")
            wait_for(lambda: answers(url + "/v1/plugins"), 60, "the server after the flood")
        (output,) = ended
        assert "At most 192 connections" in output
        assert output.count("Traceback") == 0 and output.count("could not be accepted") <= 2
