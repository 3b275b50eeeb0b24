"""Host memory for large results: the host's peak memory while it
answers a 64 MiB result of small objects over HTTP, over the result's size
(goal <= 3x; the host decoded such a result into ~50 times its size), and
the call's wall and host CPU time, against a bare relay (the same JSON made
by a child process, read into one buffer and answered, no checks, no
isolation) measured in alternating rounds, idle, beside a busy CPU and
pinned to one CPU."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from benchmarks._harness import Figure, free_port, site_with
from benchmarks.bench_wire import CONDITIONS, condition
from plugwarden.testing import plugin_source

RESULT_BYTES = 64 * 2**20
OBJECTS = RESULT_BYTES // 3  # "{}," each
TOKEN = "bench-results-token"
HERE = Path(__file__).resolve().parent


def _peak(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _ready(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server at {url} did not start")


def _measure(command: list[str], cwd: Path, ready: str, call: str, headers: dict) -> tuple:
    """(peak growth over the result's size, wall s, server CPU s) of one call
    to a fresh server."""
    port = free_port()
    proc = subprocess.Popen(
        [*command, str(port)] if "relay" in command[-1] else [*command, "--port", str(port)],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(cwd / "site"), str(HERE.parent)])},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _ready(url + ready, proc)
        small = httpx.post(url + call, json={"tool": "t", "args": {"n": 10}}, headers=headers) if (
            "plugins" in call) else httpx.get(url + call + "?n=10")  # fmt: skip
        small.raise_for_status()
        before, cpu = _peak(proc.pid), _cpu(proc.pid)
        began = time.perf_counter()
        if "plugins" in call:
            answer = httpx.post(
                url + call, json={"tool": "t", "args": {"n": OBJECTS}}, headers=headers, timeout=300
            )
        else:
            answer = httpx.get(url + call + f"?n={OBJECTS}", timeout=300)
        wall = time.perf_counter() - began
        answer.raise_for_status()
        if len(answer.content) < RESULT_BYTES:
            raise RuntimeError(f"short answer: {answer.content[:200]!r}")
        return (_peak(proc.pid) - before) / RESULT_BYTES, wall, _cpu(proc.pid) - cpu
    finally:
        proc.kill()
        proc.wait()


def run(rounds: int = 2) -> list[Figure]:
    home = Path(tempfile.mkdtemp(prefix="plugwarden-bench-results-"))
    site = site_with({"many": plugin_source("return [{}] * args['n']")})
    (home / "site").symlink_to(site)
    (home / "plugwarden.toml").write_text(
        f'[server]\ntoken = "{TOKEN}"\n[plugins.many]\nmemory_mb = 4096\ntimeout_s = 300\n'
        "max_result_bytes = 134217728\n"
    )
    ours_command = [sys.executable, "-m", "plugwarden", "serve"]
    relay_command = [sys.executable, str(HERE / "_serve_relay.py")]
    auth = {"Authorization": f"Bearer {TOKEN}"}
    figures = []
    for name in CONDITIONS:
        ours, relay = [], []
        with condition(name):
            for _ in range(rounds):
                relay.append(_measure(relay_command, home, "/run?n=1", "/run", {}))
                ours.append(_measure(ours_command, home, "/healthz", "/v1/plugins/many/run", auth))
        memory = statistics.median(r[0] for r in ours)
        figures.append(
            Figure(
                f"host peak memory over a 64 MiB result of small objects, {name}",
                memory,
                statistics.median(r[0] for r in relay),
                "x",
                "<= 3x the result",
                lambda _ratio, memory=memory: memory <= 3,
                "baseline: a bare relay holding the bytes once",
            )
        )
        wall, base_wall = (statistics.median(r[1] for r in side) for side in (ours, relay))
        cpu, base_cpu = (statistics.median(r[2] for r in side) for side in (ours, relay))
        figures.append(
            Figure(
                f"that call's wall time, {name}",
                wall,
                base_wall,
                "s",
                "report",
                lambda _ratio: True,
                f"server CPU {cpu:.2f}s vs {base_cpu:.2f}s (checking the JSON, the worker's "
                "encode in its own process not counted)",
            )
        )
    return figures
