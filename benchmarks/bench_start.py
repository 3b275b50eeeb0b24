"""How long ``plugwarden serve`` takes to be ready, against honest
baselines in the same run, interleaved.

- ``plugwarden serve`` with 50 plugins, from the process start to the first
  ``/readyz`` 200 (polled every 5 ms), against ``python -c 'import
  starlette, uvicorn'`` (what any Starlette server pays before it can
  listen).
- The same against 50 forkserver workers started in parallel, each
  importing one of the plugins and answering (what starting 50 isolated
  plugins costs without plugwarden).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

from benchmarks._harness import ECHO, Figure, free_port, site_with

COUNT = 50


def serve_to_ready(site: Path) -> float:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(site), "PLUGWARDEN_URL": ""}
    start = time.perf_counter()
    server = subprocess.Popen(
        [sys.executable, "-m", "plugwarden", "serve", "--port", str(port)],
        env=env,
        cwd=site,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with httpx.Client(timeout=1.0) as client:
            deadline = start + 120
            while time.perf_counter() < deadline:
                try:
                    if client.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                        return time.perf_counter() - start
                except httpx.TransportError:
                    pass
                time.sleep(0.005)
        raise RuntimeError("plugwarden serve was not ready within 120 s")
    finally:
        server.terminate()
        server.wait(60)


def import_web_stack() -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import starlette, uvicorn"], check=True)
    return time.perf_counter() - start


POOL = (
    "import multiprocessing; context = multiprocessing.get_context('forkserver'); "
    "workers = [context.Process(target=exec, args=('import bench_s%02d' % i,)) "
    "for i in range({count})]; "
    "[w.start() for w in workers]; [w.join() for w in workers]; "
    "assert all(w.exitcode == 0 for w in workers)"
)


def forkserver_workers(site: Path) -> float:
    """A fresh interpreter starting 50 forkserver workers in parallel, each
    importing one plugin (``-c``: no main module for the workers to re-import)."""
    start = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(site)}
    subprocess.run([sys.executable, "-c", POOL.format(count=COUNT)], check=True, env=env)
    return time.perf_counter() - start


def run(rounds: int = 5) -> list[Figure]:
    site = site_with({f"s{index:02d}": ECHO for index in range(COUNT)})
    ours, stack, pool = [], [], []
    serve_to_ready(site)  # warm the page cache
    for _ in range(rounds):
        stack.append(import_web_stack())
        ours.append(serve_to_ready(site))
        pool.append(forkserver_workers(site))
    median = statistics.median
    ratios = [o / s for o, s in zip(ours, stack, strict=True)]
    pool_ratios = [o / p for o, p in zip(ours, pool, strict=True)]
    return [
        Figure(
            f"serve -> first /readyz 200, {COUNT} plugins / import starlette, uvicorn",
            median(ours) * 1000,
            median(stack) * 1000,
            "ms",
            "<= 3x",
            lambda r: r <= 3.0,
            f"range {min(ratios):.2f}-{max(ratios):.2f}; {rounds} rounds",
            median(ratios),
        ),
        Figure(
            f"same / {COUNT} forkserver workers started in parallel, each importing a plugin",
            median(ours) * 1000,
            median(pool) * 1000,
            "ms",
            "report",
            lambda r: True,
            f"range {min(pool_ratios):.2f}-{max(pool_ratios):.2f}",
            median(pool_ratios),
        ),
    ]
