"""Issue 9: the worker boundary's costs, each against a same-run baseline.

- The isolated round trip with the plain-JSON wire (request ids, pid and
  depth checks) against a raw ``multiprocessing`` Pipe echo of the same
  message, under three conditions: idle, one CPU busy, pinned to one CPU.
  Wall time and the caller's CPU time are both reported.
- The cost of the containment level at worker start: restarting a plugin
  (a new worker forked, imported, initialised) in a PID namespace of its own
  against the subreaper level, interleaved.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection

from benchmarks._harness import ECHO, Figure, site_with
from plugwarden import Host

MESSAGE = ("run", 1, "run", {"tool": "t", "args": {"x": 1}})


SPIN_S = 100e-6  # as the worker and the host's waiter: poll this long, then block


def _spin(connection: Connection) -> None:
    until = time.monotonic() + SPIN_S
    while time.monotonic() < until and not connection.poll(0):
        pass


def _echo_child(connection: Connection, polling: bool) -> None:
    while True:
        if polling:
            _spin(connection)
        data = connection.recv_bytes()
        if not data:
            return
        connection.send_bytes(data)


@contextlib.contextmanager
def condition(name: str) -> Iterator[None]:
    """idle, busy (a process spinning on another CPU's worth), or pinned
    (this process and every child it starts on one CPU)."""
    hog = None
    before = os.sched_getaffinity(0)
    try:
        if name == "busy":
            hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        elif name == "pinned":
            os.sched_setaffinity(0, {min(before)})
        yield
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()
        os.sched_setaffinity(0, before)


def timed(
    function: Callable[[], object],
    calls: int,
    cpu_clock: Callable[[], float] = time.thread_time,
) -> tuple[float, float]:
    """(wall, CPU) seconds per call; CPU by ``cpu_clock``: the caller's
    thread by default, ``time.process_time`` for every thread of the host."""
    wall, cpu = time.perf_counter(), cpu_clock()
    for _ in range(calls):
        function()
    return (time.perf_counter() - wall) / calls, (cpu_clock() - cpu) / calls


def round_trip(name: str, calls: int = 2000, rounds: int = 9) -> Figure:
    import pickle

    site = site_with({"echo": ECHO})
    with condition(name):
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        echo = context.Process(target=_echo_child, args=(child, False))
        echo.start()
        polled, polled_child = context.Pipe()
        polling = context.Process(target=_echo_child, args=(polled_child, True))
        polling.start()

        def pipe_echo() -> object:
            parent.send_bytes(pickle.dumps(MESSAGE))
            return pickle.loads(parent.recv_bytes())

        def polling_echo() -> object:
            polled.send_bytes(pickle.dumps(MESSAGE))
            _spin(polled)
            return pickle.loads(polled.recv_bytes())

        with Host({}, search_path=[str(site)]) as host:

            def call() -> object:
                return host.call("echo", "t", {"x": 1})

            for _ in range(200):
                call()
                pipe_echo()
                polling_echo()
            ours, base, ours_cpu, base_cpu, ratios, polled_ratios = [], [], [], [], [], []
            for _ in range(rounds):
                b_wall, b_cpu = timed(pipe_echo, calls)
                o_wall, o_cpu = timed(call, calls)
                p_wall, _ = timed(polling_echo, calls)
                ours.append(o_wall)
                base.append(b_wall)
                ours_cpu.append(o_cpu)
                base_cpu.append(b_cpu)
                ratios.append(o_wall / b_wall)
                polled_ratios.append(o_wall / p_wall)
        for connection, process in ((parent, echo), (polled, polling)):
            connection.send_bytes(b"")
            process.join()
    o_cpu, b_cpu = statistics.median(ours_cpu), statistics.median(base_cpu)
    return Figure(
        f"round trip vs Pipe echo, {name}",
        statistics.median(ours) * 1e6,
        statistics.median(base) * 1e6,
        "us",
        "<= 1.64x (goal 1.5x)" if name == "idle" else "issue 14: <= 1.5x",
        (lambda r: r <= 1.64) if name == "idle" else (lambda r: r <= 1.5),
        f"caller CPU {o_cpu * 1e6:.1f} vs {b_cpu * 1e6:.1f} us ({o_cpu / b_cpu:.2f}x); "
        f"vs a polling echo {statistics.median(polled_ratios):.2f}x",
        statistics.median(ratios),
    )


def worker_start(rounds: int = 7) -> Figure:
    """host.restart() time with each containment level, interleaved."""
    site = site_with({"echo": ECHO})
    samples: dict[str, list[float]] = {"pid-namespace": [], "subreaper": []}
    for _ in range(rounds):
        for level in samples:
            if level == "subreaper":
                os.environ["PLUGWARDEN_CONTAINMENT"] = "subreaper"
            try:
                with Host({}, search_path=[str(site)]) as host:
                    host.restart("echo")  # warm: the zygote is up
                    start = time.perf_counter()
                    for _ in range(5):
                        host.restart("echo")
                    samples[level].append((time.perf_counter() - start) / 5)
            finally:
                os.environ.pop("PLUGWARDEN_CONTAINMENT", None)
    ns, sub = (statistics.median(samples[k]) for k in ("pid-namespace", "subreaper"))
    ratios = [a / b for a, b in zip(samples["pid-namespace"], samples["subreaper"], strict=True)]
    return Figure(
        "worker start (restart): pid-namespace vs subreaper",
        ns * 1e3,
        sub * 1e3,
        "ms",
        "report",
        lambda r: True,
        "a restart forks, imports, inits and validates a new worker",
        statistics.median(ratios),
    )


def run() -> list[Figure]:
    return [*(round_trip(name) for name in ("idle", "busy", "pinned")), worker_start()]
