"""Issues 5 and 14: requests per second of the health and list routes with
100 plugins and background calls, against a plain Starlette app serving the
same JSON pre-encoded (the goal's baseline) and re-encoded per request (a
second line), all under uvicorn, loaded by wrk -c16 in the same run, under
three conditions (idle, one CPU busy, pinned to one CPU); and the 99th
percentile latency of health while one plugin hangs in run."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from benchmarks._harness import ECHO, Figure, free_port, site_with
from benchmarks.bench_wire import CONDITIONS, condition
from plugwarden.testing import plugin_source

HERE = Path(__file__).resolve().parent
HANG = plugin_source("import time\ntime.sleep(3600)")
WRK_S = os.environ.get("PLUGWARDEN_BENCH_WRK_S", "5")  # seconds of load per sample
WRK = ["-t1", "-c16", f"-d{WRK_S}s", "--latency"]
CALLERS = os.environ.get("PLUGWARDEN_BENCH_CALLERS", "2")  # background calling threads


@contextlib.contextmanager
def _server(*args: str, ready_path: str) -> Iterator[str]:
    port = free_port()
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


def measure(name: str, rounds: int = 3) -> list[Figure]:
    """Under condition ``name``: plugwarden's health and list routes against
    the same bytes pre-encoded by a plain Starlette app (and re-encoded per
    request, a second line), servers taking turns round after round."""
    plugins = {f"p{index:03d}": ECHO for index in range(100)}
    site = site_with({**plugins, "hang": HANG}, manifest={"guards": {"timeout_s": 3600}})
    serve = str(HERE / "_serve_plugwarden.py")
    constant = str(HERE / "_serve_constant.py")
    files = Path(tempfile.mkdtemp())
    keys = ("oh", "ol", "bh", "bl", "eh", "el", "rh", "rl", "reh", "rel")
    samples: dict[str, list[float]] = {key: [] for key in keys}
    p99s: list[float] = []
    with condition(name):
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
                p99s.append(health[1])
            for key, extra in (("b", ()), ("e", ("encode",))):
                with _server(
                    constant,
                    "{port}",
                    str(files / "list.json"),
                    str(files / "one.json"),
                    *extra,
                    ready_path="/v1/plugins",
                ) as base:
                    samples[key + "h"].append(_wrk(base + "/v1/plugins/p050/health")[0])
                    samples[key + "l"].append(_wrk(base + "/v1/plugins")[0])
            samples["rh"].append(samples["oh"][-1] / samples["bh"][-1])
            samples["rl"].append(samples["ol"][-1] / samples["bl"][-1])
            samples["reh"].append(samples["oh"][-1] / samples["eh"][-1])
            samples["rel"].append(samples["ol"][-1] / samples["el"][-1])
        hung = []
        for _ in range(rounds):
            with _server(serve, str(site), "{port}", "2", "hang", ready_path="/readyz") as ours:
                hung.append(_wrk(ours + "/v1/plugins/p050/health")[1])
    median = statistics.median

    def spread(key: str) -> str:
        return f"range {min(samples[key]):.2f}-{max(samples[key]):.2f}"

    note = f"100 plugins, {CALLERS} background callers; {rounds} rounds"
    return [
        Figure(
            f"health route rps / pre-encoded Starlette, {name}",
            median(samples["oh"]),
            median(samples["bh"]),
            "rps",
            ">= 0.95x",
            lambda r: r >= 0.95,
            f"{note}; {spread('rh')}; vs re-encoding {median(samples['reh']):.2f}x",
            median(samples["rh"]),
        ),
        Figure(
            f"list route rps / pre-encoded Starlette, {name}",
            median(samples["ol"]),
            median(samples["bl"]),
            "rps",
            ">= 0.9x",
            lambda r: r >= 0.9,
            f"{note}; {spread('rl')}; vs re-encoding {median(samples['rel']):.2f}x",
            median(samples["rl"]),
        ),
        Figure(
            f"health p99 while one plugin hangs in run, vs no hang, {name}",
            max(hung),
            max(p99s),
            "ms",
            "report",
            lambda r: True,
            f"wrk -c16; the worst p99 of {rounds} rounds each",
        ),
    ]


def run(rounds: int = 3) -> list[Figure]:
    if shutil.which("wrk") is None:
        print("bench http: wrk not installed (apt-get install wrk); skipped")
        return []
    return [figure for name in CONDITIONS for figure in measure(name, rounds)]
