"""Issue 5: requests per second of the health routes with 100 plugins and
background calls, against a plain Starlette app serving the same JSON from a
constant (both under uvicorn, loaded by wrk in the same run); and the 99th
percentile latency of health while one plugin hangs in run."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from benchmarks._harness import ECHO, Figure, site_with
from plugwarden.testing import plugin_source

HERE = Path(__file__).resolve().parent
HANG = plugin_source("import time\ntime.sleep(3600)")
WRK = ["-t1", "-c8", "-d5s", "--latency"]
CALLERS = os.environ.get("PLUGWARDEN_BENCH_CALLERS", "2")  # background calling threads


def _port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def _server(*args: str, ready_path: str) -> Iterator[str]:
    port = _port()
    proc = subprocess.Popen([sys.executable, args[0], *_with_port(args[1:], port)])
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while True:
            try:
                if httpx.get(url + ready_path, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"server {args} did not become ready")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


def _with_port(args: tuple[str, ...], port: int) -> list[str]:
    """The script's arguments with ``{port}`` filled in."""
    return [a.replace("{port}", str(port)) for a in args]


def _wrk(url: str) -> tuple[float, float]:
    """Requests per second and 99th percentile latency (ms)."""
    out = subprocess.run(["wrk", *WRK, url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    value, unit = re.search(r"99%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
    return rps, float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def run(rounds: int = 3) -> list[Figure]:
    if shutil.which("wrk") is None:
        print("bench http: wrk not installed (apt-get install wrk); skipped")
        return []
    plugins = {f"p{index:03d}": ECHO for index in range(100)}
    site = site_with({**plugins, "hang": HANG}, manifest={"guards": {"timeout_s": 3600}})
    serve = str(HERE / "_serve_plugwarden.py")
    constant = str(HERE / "_serve_constant.py")
    files = Path(tempfile.mkdtemp())
    samples: dict[str, list[float]] = {key: [] for key in ("oh", "ol", "bh", "bl", "rh", "rl")}
    # The servers take turns, round after round (they cannot share the two
    # cores fairly at once); each figure is the median of its per-round ratios.
    for _ in range(rounds):
        with _server(serve, str(site), "{port}", CALLERS, ready_path="/readyz") as ours:
            if not (files / "list.json").exists():
                listing = httpx.get(ours + "/v1/plugins", timeout=30).json()
                single = httpx.get(ours + "/v1/plugins/p050/health", timeout=30).json()
                (files / "list.json").write_text(json.dumps(listing))
                (files / "one.json").write_text(json.dumps(single))
            health, listed = _wrk(ours + "/v1/plugins/p050/health"), _wrk(ours + "/v1/plugins")
            samples["oh"].append(health[0])
            samples["ol"].append(listed[0])
            p99 = health[1]
        with _server(
            constant,
            "{port}",
            str(files / "list.json"),
            str(files / "one.json"),
            ready_path="/v1/plugins",
        ) as base:
            samples["bh"].append(_wrk(base + "/v1/plugins/p050/health")[0])
            samples["bl"].append(_wrk(base + "/v1/plugins")[0])
        samples["rh"].append(samples["oh"][-1] / samples["bh"][-1])
        samples["rl"].append(samples["ol"][-1] / samples["bl"][-1])
    with _server(serve, str(site), "{port}", "2", "hang", ready_path="/readyz") as ours:
        hung_p99 = _wrk(ours + "/v1/plugins/p050/health")[1]
    median = statistics.median
    note = f"100 plugins; 2 threads each calling a plugin every 10 ms; median of {rounds} rounds"
    return [
        Figure(
            "GET /v1/plugins/{name}/health, requests/s (higher is better)",
            median(samples["oh"]),
            median(samples["bh"]),
            "rps",
            ">= 0.8x",
            lambda r: r >= 0.8,
            note,
            median(samples["rh"]),
        ),
        Figure(
            "GET /v1/plugins (100 items), requests/s (higher is better)",
            median(samples["ol"]),
            median(samples["bl"]),
            "rps",
            ">= 0.8x",
            lambda r: r >= 0.8,
            note,
            median(samples["rl"]),
        ),
        Figure(
            "health p99 latency while one plugin hangs in run, vs no hang",
            hung_p99,
            p99,
            "ms",
            "report",
            lambda r: True,
            "wrk -c8; p99 of the same route without the hang as baseline",
        ),
    ]
