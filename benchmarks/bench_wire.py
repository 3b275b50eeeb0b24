"""The worker boundary's costs, each against a same-run baseline.

- The isolated round trip with the plain-JSON wire (request ids, pid and
  depth checks) against a raw ``multiprocessing`` Pipe echo of the same
  message (and against one that polls the same adaptive way), under three
  conditions: idle, one CPU busy, pinned to one CPU. Wall time, the
  caller's CPU time, and (idle) the CPU of host and worker per wall second.
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
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection

import psutil

from benchmarks._harness import ECHO, Figure, site_with
from plugwarden import Host
from plugwarden.isolation.process.spin import SPIN_S, AdaptiveSpin

MESSAGE = ("run", 1, "run", {"tool": "t", "args": {"x": 1}})


def _spin(connection: Connection, spin: AdaptiveSpin) -> None:
    """Poll before blocking the way both ends of the worker wire do."""
    if not spin.should_spin():
        return
    until = time.monotonic() + SPIN_S
    while time.monotonic() < until:
        if connection.poll(0):
            spin.caught(True)
            return
    spin.caught(False)


def _echo_child(connection: Connection, polling: bool) -> None:
    spin = AdaptiveSpin()
    while True:
        if polling:
            _spin(connection, spin)
        data = connection.recv_bytes()
        if not data:
            return
        connection.send_bytes(data)


CONDITIONS = ("idle", "busy", "pinned")  # what condition() sets up, each benchmark's three


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


@dataclass(frozen=True)
class Rounds:
    """Interleaved rounds of two calls: per round, each one's wall and CPU
    seconds a call."""

    walls: list[tuple[float, float]]  # (ours, baseline)
    cpus: list[tuple[float, float]]

    def median_us(self, series: str, side: int) -> float:
        """The median of ``series`` ("walls" or "cpus") for ``side`` (0:
        ours, 1: the baseline), in microseconds a call."""
        return statistics.median(pair[side] for pair in getattr(self, series)) * 1e6

    @property
    def ratios(self) -> list[float]:
        return [ours / base for ours, base in self.walls]

    def figure(self, title: str, target: str, ok: Callable[[float], bool]) -> Figure:
        ratios = self.ratios
        return Figure(
            title,
            self.median_us("walls", 0),
            self.median_us("walls", 1),
            "us",
            target,
            ok,
            f"CPU {self.median_us('cpus', 0):.1f} vs {self.median_us('cpus', 1):.1f} us; "
            f"range {min(ratios):.2f}-{max(ratios):.2f}",
            statistics.median(ratios),
        )


def interleaved(
    ours: Callable[[], object], base: Callable[[], object], calls: int, rounds: int, warm: int
) -> Rounds:
    """``warm`` calls of each, then ``rounds`` rounds of ``calls``, the
    baseline first in each round, with the caller's CPU time."""
    for _ in range(warm):
        ours()
        base()
    walls, cpus = [], []
    for _ in range(rounds):
        b_wall, b_cpu = timed(base, calls, time.process_time)
        o_wall, o_cpu = timed(ours, calls, time.process_time)
        walls.append((o_wall, b_wall))
        cpus.append((o_cpu, b_cpu))
    return Rounds(walls, cpus)


def round_trip(name: str, calls: int = 2000, rounds: int = 9) -> list[Figure]:
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

        host_spin = AdaptiveSpin()

        def polling_echo() -> object:
            polled.send_bytes(pickle.dumps(MESSAGE))
            _spin(polled, host_spin)
            return pickle.loads(polled.recv_bytes())

        with Host({}, search_path=[str(site)]) as host:

            def call() -> object:
                return host.call("echo", "t", {"x": 1})

            for _ in range(200):
                call()
                pipe_echo()
                polling_echo()
            (worker,) = host.worker_pids("echo")
            ours, base, ours_cpu, base_cpu, ratios, polled_ratios = [], [], [], [], [], []
            both_cpu = []
            for _ in range(rounds):
                b_wall, b_cpu = timed(pipe_echo, calls)
                spent = _cpu_of(worker)
                o_wall, o_cpu = timed(call, calls)
                both_cpu.append((o_cpu + (_cpu_of(worker) - spent) / calls) / o_wall)
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
    cpu_per_wall = statistics.median(both_cpu)
    figures = [
        Figure(
            f"round trip vs blocking Pipe echo, {name}",
            statistics.median(ours) * 1e6,
            statistics.median(base) * 1e6,
            "us",
            "<= 1.0x" if name == "idle" else "<= 1.5x",
            (lambda r: r <= 1.0) if name == "idle" else (lambda r: r <= 1.5),
            f"range {min(ratios):.2f}-{max(ratios):.2f}; caller CPU {o_cpu * 1e6:.1f} vs "
            f"{b_cpu * 1e6:.1f} us; vs a polling echo {statistics.median(polled_ratios):.2f}x",
            statistics.median(ratios),
        )
    ]
    if name == "idle":
        figures.append(
            Figure(
                "isolated call CPU (host + worker) / wall, idle",
                cpu_per_wall,
                1.0,
                "x",
                "<= 1.2x",
                lambda r: r <= 1.2,
                f"range {min(both_cpu):.2f}-{max(both_cpu):.2f}",
                cpu_per_wall,
            )
        )
    return figures


def _cpu_of(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


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


def rate(calls: list[Callable[[], object]], seconds: float) -> tuple[float, float]:
    """Calls per second of one thread per callable, and the host's CPU per call."""
    counts = [0] * len(calls)
    stop = threading.Event()

    def loop(index: int) -> None:
        call = calls[index]
        while not stop.is_set():
            call()
            counts[index] += 1

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(len(calls))]
    cpu = time.process_time()
    for thread in threads:
        thread.start()
    stop.wait(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    done = sum(counts)
    return done / seconds, (time.process_time() - cpu) / max(done, 1)


def throughput(name: str, callers: int = 4, rounds: int = 5) -> Figure:
    """N callers to one plugin's N workers against 1 caller to 1 worker,
    no-op calls, interleaved."""
    site = site_with({"echo": ECHO, "single": ECHO})
    config = {"plugins": {"echo": {"workers": callers}}, "jobs": {"path": ":memory:"}}
    with condition(name), Host(config, search_path=[str(site)]) as host:

        def single() -> object:
            return host.call("single", "t", {"x": 1})

        def pooled() -> object:
            return host.call("echo", "t", {"x": 1})

        ratios, cpus = [], []
        for _ in range(rounds):
            one, one_cpu = rate([single], 1.0)
            many, many_cpu = rate([pooled] * callers, 1.0)
            ratios.append(many / one)
            cpus.append((many_cpu, one_cpu))
    median = statistics.median
    return Figure(
        f"{callers} callers to {callers} workers / 1 caller to 1 worker, calls/s, {name}",
        median(ratios),
        1.0,
        "x",
        ">= 1.0x",
        lambda r: r >= 1.0,
        f"host CPU per call {median(c for c, _ in cpus) * 1e6:.0f} vs "
        f"{median(o for _, o in cpus) * 1e6:.0f} us; range {min(ratios):.2f}-{max(ratios):.2f}",
        median(ratios),
    )


def run() -> list[Figure]:
    trips = [figure for name in CONDITIONS for figure in round_trip(name)]
    scaling = [throughput(name) for name in CONDITIONS]
    return [*trips, *scaling, worker_start()]
