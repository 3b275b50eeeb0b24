"""plugwarden serve: a real process, shut down by SIGTERM, leaving nothing."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import httpx
import psutil

from tests.conftest import ECHO, gone, wait_for


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


class TestServe:
    def test_sigterm_shuts_down_cleanly_leaving_no_process(
        self, plugwarden_plugin, plugwarden_site, tmp_path
    ):
        plugwarden_plugin("p1", ECHO)
        plugwarden_plugin("p2", ECHO)
        port = free_port()
        env = {**os.environ, "PYTHONPATH": str(plugwarden_site)}
        proc = subprocess.Popen(
            [sys.executable, "-m", "plugwarden", "serve", "--port", str(port)],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for(lambda: answers(f"http://127.0.0.1:{port}/readyz"), 60, "readiness")
            names = {p["name"] for p in httpx.get(f"http://127.0.0.1:{port}/v1/plugins").json()}
            assert {"p1", "p2"} <= names
            family = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
            assert len(family) >= 3  # the zygote and two workers
            proc.send_signal(signal.SIGTERM)
            # uvicorn re-raises the signal once shut down, so the exit status
            # says "terminated by SIGTERM", as for any well-behaved server.
            assert proc.wait(60) in (0, -signal.SIGTERM)
            wait_for(lambda: all(gone(pid) for pid in family), what="every child to exit")
        finally:
            if proc.poll() is None:
                proc.kill()
            output = proc.stdout.read().decode() if proc.stdout else ""
            proc.stdout.close()
        assert "Application shutdown complete." in output
        assert "Traceback" not in output
