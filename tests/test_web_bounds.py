"""HTTP input and output bounds: hostile bodies get a 4xx, big
results and reports are capped, idle connections are closed."""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

import httpx
import pytest

from plugwarden import State
from tests.conftest import ECHO, free_port, plugin_source, wait_for

TOKEN = "bounds-token"
AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


@pytest.fixture
def server(plugwarden_plugin, plugwarden_server):
    plugwarden_plugin("echo", ECHO)
    plugwarden_plugin(
        "big",
        plugin_source("return 'x' * args['n']"),
        manifest={"guards": {"max_result_bytes": 1_000_000}},
    )
    plugwarden_plugin(
        "chatty",
        ECHO + "\n@hookimpl\ndef health():\n    return {'blob': 'x' * 100_000}\n",
    )
    return plugwarden_server({"server": {"token": TOKEN, "idle_timeout_s": 0.5}})


def deep(levels: int) -> str:
    return "[" * levels + "]" * levels


class TestHostileBodies:
    @pytest.mark.parametrize(
        ("args", "says"),
        [
            ("NaN", "NaN is not JSON"),
            ("Infinity", "Infinity is not JSON"),
            ("-Infinity", "-Infinity is not JSON"),
            ("1e400", "out of range"),
            ("1" * 5000, "digits"),
            (deep(5000), "nests deeper"),
            (deep(200), "nests deeper"),
        ],
        ids=["nan", "infinity", "minus-infinity", "1e400", "5000-digits", "deep-5000", "deep-200"],
    )
    def test_valid_looking_json_that_is_not_sane_is_a_400(self, server, args, says):
        body = '{"tool": "t", "args": {"x": ' + args + "}}"
        answer = httpx.post(f"{server.url}/v1/plugins/echo/run", content=body, headers=AUTH)
        assert answer.status_code == 400
        assert answer.json()["error_type"] == "InvalidJSON" and says in answer.json()["error"]
        status = server.host.status("echo")
        assert status.state is State.INITIALIZED and status.metrics["error_count"] == 0

    def test_deep_args_a_plugin_wraps_deeper_fail_that_call_not_the_plugin(
        self, plugwarden_plugin, plugwarden_server
    ):
        """Args nested 127 deep are accepted; a plugin that wraps them two
        levels deeper was killed for a protocol violation (the second such
        call left it FAILED, blaming it). Now the call fails: ResultTooDeep."""
        plugwarden_plugin("wrap", plugin_source("return [[args]]"))
        server = plugwarden_server({"server": {"token": TOKEN}})
        body = '{"tool": "t", "args": {"x": ' + deep(126) + "}}"
        for _ in range(2):
            answer = httpx.post(f"{server.url}/v1/plugins/wrap/run", content=body, headers=AUTH)
            record = answer.json()
            assert answer.status_code == 200 and record["error_type"] == "ResultTooDeep"
            assert record["guard"] is None
        assert server.host.status("wrap").state is State.INITIALIZED

    @pytest.mark.parametrize("body", ["null", "[]", '"run"', "3"])
    def test_a_body_that_is_not_an_object_is_a_422_naming_the_object(self, server, body):
        """'null' once answered "nests deeper than 128 levels"."""
        answer = httpx.post(f"{server.url}/v1/plugins/echo/run", content=body, headers=AUTH)
        assert answer.status_code == 422
        assert answer.json()["error_type"] == "InvalidRequest"
        assert "Body must be a JSON object" in answer.json()["error"]

    def test_a_slow_body_is_cut_at_its_deadline(self, plugwarden_plugin, plugwarden_server):
        """An authenticated body sent a byte at a time is answered 408 once
        body_timeout_s passed, and its connection closed."""
        plugwarden_plugin("echo", ECHO)
        server = plugwarden_server({"server": {"token": TOKEN, "body_timeout_s": 0.5}})
        port = int(server.url.rsplit(":", 1)[1])
        head = (
            f"POST /v1/plugins/echo/run HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}"
            "\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"
        ).encode()
        answer = b""
        with socket.create_connection(("127.0.0.1", port), timeout=0.05) as slow:
            slow.sendall(head)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    slow.sendall(b" ")
                    chunk = slow.recv(4096)
                except TimeoutError:
                    continue
                except (BrokenPipeError, ConnectionResetError):
                    break
                if not chunk:
                    break
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b"RequestTimeout" in answer and b"body_timeout_s" in answer

    def test_a_body_over_the_limit_gets_a_413_the_client_can_read(self, server):
        body = b'{"tool": "t", "args": {"x": "' + b"x" * (20 * 2**20) + b'"}}'
        answer = httpx.post(
            f"{server.url}/v1/plugins/echo/run", content=body, headers=AUTH, timeout=60
        )
        assert answer.status_code == 413
        assert answer.json()["error_type"] == "PayloadTooLarge"


class TestBigOutputs:
    def test_a_result_past_max_result_bytes_fails_the_call_not_the_plugin(self, server):
        answer = httpx.post(
            f"{server.url}/v1/plugins/big/run",
            json={"tool": "t", "args": {"n": 2_000_000}},
            headers=AUTH,
            timeout=60,
        )
        record = answer.json()
        assert answer.status_code == 200 and record["ok"] is False
        assert record["error_type"] == "ResultTooLarge" and "1000000-byte cap" in record["error"]
        assert server.host.status("big").state is State.INITIALIZED
        small = httpx.post(
            f"{server.url}/v1/plugins/big/run", json={"tool": "t", "args": {"n": 10}}, headers=AUTH
        )
        assert small.json()["result"] == "x" * 10

    def test_a_huge_health_report_is_dropped_from_the_record(self, server):
        server.host.check_health("chatty")
        listed = {p["name"]: p for p in httpx.get(f"{server.url}/v1/plugins").json()}
        health = listed["chatty"]["health"]
        assert health["ok"] is True and health["report"] is None
        assert "over the 16384-byte cap" in health["report_dropped"]


def peak_bytes(pid: int) -> int:
    """The process's peak resident memory (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


class TestHostMemory:
    def test_a_large_result_of_small_objects_passes_through_the_host_undecoded(
        self, plugwarden_plugin, plugwarden_site, tmp_path
    ):
        """A list of empty objects decoded into ~50 times its size; now the
        host keeps the bytes the worker sent and writes them out (a health
        report as large is measured, and dropped, undecoded too)."""
        from tests.test_web_server import answers, running

        many = "[{} for _ in range(args['n'])]"
        plugwarden_plugin(
            "many",
            plugin_source(f"return {many}")
            + "\n@hookimpl\ndef health():\n    return {'x': [{} for _ in range(3_000_000)]}\n",
        )
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        (tmp_path / "plugwarden.toml").write_text(
            f'[server]\ntoken = "{TOKEN}"\n[defaults]\nhealth_interval_s = 0.5\n'
            "[plugins.many]\nmemory_mb = 2048\n"
        )
        command = [sys.executable, "-m", "plugwarden", "serve", "--port", str(port)]
        with running(command, tmp_path, plugwarden_site) as (proc, _):
            wait_for(lambda: answers(url + "/readyz"), 60, "readiness")
            before = peak_bytes(proc.pid)
            n = 3_000_000  # 9 MB of "{}," as JSON
            answer = httpx.post(
                f"{url}/v1/plugins/many/run",
                json={"tool": "t", "args": {"n": n}},
                headers=AUTH,
                timeout=120,
            )
            assert answer.status_code == 200
            record = answer.json()
            assert record["ok"] is True and len(record["result"]) == n
            wait_for(
                lambda: (httpx.get(f"{url}/v1/plugins/many").json()["health"] or {}).get(
                    "report_dropped"
                ),
                60,
                "a health round",
            )
            grown = peak_bytes(proc.pid) - before
        assert grown < 4 * len(answer.content), f"the host grew {grown >> 20} MB"


class TestConnections:
    def test_a_connection_that_sends_nothing_is_closed(self, server):
        port = int(server.url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=30) as idle:
            assert idle.recv(1) == b""  # closed by the server, not by our timeout

    def test_a_slowloris_is_closed_though_it_keeps_sending(self, server):
        port = int(server.url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=0.05) as slow:
            slow.sendall(b"GET /healthz HTTP/1.1\r\n")
            deadline = time.monotonic() + 30
            closed = False
            while not closed and time.monotonic() < deadline:
                try:
                    slow.sendall(b"X")  # one more header byte, never the end
                    closed = slow.recv(1) == b""
                except TimeoutError:
                    continue
                except (BrokenPipeError, ConnectionResetError):
                    closed = True
            assert closed

    def test_a_request_in_progress_outlives_the_idle_timeout(
        self, plugwarden_plugin, plugwarden_server, tmp_path
    ):
        """A run slower than idle_timeout_s is answered on its connection;
        an idle connection opened after it is closed meanwhile (so the
        timeout did pass while the run was in progress)."""
        release = tmp_path / "release"
        body = (
            f"import os, time\nwhile not os.path.exists({str(release)!r}):\n"
            "    time.sleep(0.01)\nreturn 'released'"
        )
        plugwarden_plugin("slow", plugin_source(body))
        server = plugwarden_server({"server": {"token": TOKEN, "idle_timeout_s": 0.3}})
        port = int(server.url.rsplit(":", 1)[1])
        payload = b'{"tool": "t", "args": {}}'
        request = (
            f"POST /v1/plugins/slow/run HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}"
            f"\r\nContent-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
        ).encode() + payload
        with socket.create_connection(("127.0.0.1", port), timeout=30) as busy:
            busy.sendall(request)
            wait_for(lambda: server.host.status("slow").in_flight == 1, what="the run to start")
            with socket.create_connection(("127.0.0.1", port), timeout=30) as idle:
                assert idle.recv(1) == b""  # the idle timeout passed
            release.touch()
            answer = b""
            while b"released" not in answer:
                chunk = busy.recv(4096)
                assert chunk, f"the busy connection was closed: {answer!r}"
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 200")

    def test_the_server_still_answers_after_the_attacks(self, server):
        wait_for(lambda: httpx.get(f"{server.url}/healthz").status_code == 200, what="healthz")
