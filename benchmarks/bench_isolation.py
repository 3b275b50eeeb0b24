"""Process isolation against raw multiprocessing, and guard precision."""

from __future__ import annotations

import multiprocessing
import os
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing.connection import Connection

from benchmarks._harness import ECHO, Figure, compare, site_with
from plugwarden import Host
from plugwarden.testing import plugin_source

SLEEPER = plugin_source("import time\ntime.sleep(3600)")
HOG = plugin_source("hog = []\nwhile True:\n    hog.append(b'x' * (50 * 2**20))")


def _echo_child(connection: Connection) -> None:
    while True:
        message = connection.recv()
        if message is None:
            return
        connection.send(message)


def _identity(value: object) -> object:
    return value


def round_trip() -> list[Figure]:
    site = site_with({"echo": ECHO})
    message = ("t", {"x": 1})
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=_echo_child, args=(child,))
    process.start()

    def pipe_echo() -> object:
        parent.send(message)
        return parent.recv()

    with (
        Host({}, search_path=[str(site)]) as host,
        ProcessPoolExecutor(1, mp_context=context) as pool,
    ):
        ours, raw, ratio = compare(lambda: host.call("echo", "t", {"x": 1}), pipe_echo, 2000)
        ours2, pooled, ratio2 = compare(
            lambda: host.call("echo", "t", {"x": 1}),
            lambda: pool.submit(_identity, message).result(),
            1000,
        )
    parent.send(None)
    process.join()
    return [
        Figure(
            "isolated run round trip vs Pipe echo",
            ours * 1e6,
            raw * 1e6,
            "us",
            "<= 2.0x",
            lambda r: r <= 2.0,
            "",
            ratio,
        ),
        Figure(
            "isolated run round trip vs ProcessPoolExecutor",
            ours2 * 1e6,
            pooled * 1e6,
            "us",
            "<= 0.5x",
            lambda r: r <= 0.5,
            "",
            ratio2,
        ),
    ]


def timeout_precision() -> Figure:
    site = site_with({"sleeper": SLEEPER}, manifest={"guards": {"timeout_s": 2}})
    ratios = []
    for _ in range(3):
        with Host({}, search_path=[str(site)]) as host:
            start = time.perf_counter()
            result = host.call("sleeper", "t", {})
            elapsed = time.perf_counter() - start
            assert result.guard == "timeout", result
            ratios.append(elapsed / 2.0)
    worst = max(ratios)
    return Figure(
        "timeout: returned-at / deadline (2 s, worst of 3)",
        worst * 2.0,
        2.0,
        "s",
        "<= 1.05",
        lambda r: r <= 1.05,
    )


def _vm_hwm(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def memory_guard() -> Figure:
    """Peak resident memory, read from the kernel's high-water mark (VmHWM) by
    an independent sampler until the worker is gone, over the 512 MB limit."""
    site = site_with({"hog": HOG}, manifest={"guards": {"memory_mb": 512, "timeout_s": 60}})
    peaks = []
    for _ in range(3):
        with Host({}, search_path=[str(site)]) as host:
            (pid,) = host.worker_pids("hog")
            seen = [0]
            done = threading.Event()

            def sample(
                pid: int = pid, seen: list[int] = seen, done: threading.Event = done
            ) -> None:
                while not done.is_set():
                    value = _vm_hwm(pid)
                    if value is None:
                        return
                    seen[0] = max(seen[0], value)

            sampler = threading.Thread(target=sample)
            sampler.start()
            result = host.call("hog", "t", {})
            done.set()
            sampler.join()
            assert result.guard == "memory", result
            peaks.append(seen[0])
    limit = 512 * 2**20
    return Figure(
        "memory guard: peak RSS / limit (50 MB chunks, 512 MB, worst of 3)",
        max(peaks) / 2**20,
        limit / 2**20,
        "MB",
        "<= 1.10",
        lambda r: r <= 1.10,
    )


def startup(count: int = 50) -> Figure:
    plugins = {f"s{index:02d}": ECHO for index in range(count)}
    site = site_with(plugins)
    rounds = []
    for _ in range(3):
        start = time.perf_counter()
        with Host({}, search_path=[str(site)]) as host:
            ready = sum(s.available for s in host.statuses())
            rounds.append(time.perf_counter() - start)
        assert ready == count, ready
    env = {**os.environ, "PYTHONPATH": str(site)}
    start = time.perf_counter()
    for name in plugins:
        subprocess.run([sys.executable, "-c", f"import bench_{name}"], check=True, env=env)
    sequential = time.perf_counter() - start
    return Figure(
        f"start {count} isolated plugins vs {count} sequential `python -c import`",
        statistics.median(rounds),
        sequential,
        "s",
        "<= 0.5x",
        lambda r: r <= 0.5,
        "start() to all INITIALIZED, plus close()",
    )


def run() -> list[Figure]:
    return [*round_trip(), timeout_precision(), memory_guard(), startup()]
