"""What jobs cost, each against a same-run baseline, interleaved,
under three conditions (idle, one CPU busy, pinned to one CPU).

- A no-op job, submit to succeeded (queue, a thread hand-off, three SQLite
  writes, the call), against a synchronous call of the same no-op tool.
  Wall time and the host process's CPU time (every thread) per job/call.
- 1000 ``plugwarden.progress()`` calls inside a job's loop (throttled to 10
  reports a second, each report a frame to the host) against the same loop
  without them, timed inside the worker: with a near-empty body (about 1 us,
  the worst case: the figure is the per-call cost) and with a body of about
  50 us (a light video frame).
"""

from __future__ import annotations

import statistics
import threading
import time

from benchmarks._harness import ECHO, Figure, site_with
from benchmarks.bench_wire import CONDITIONS, condition, interleaved
from plugwarden import Host
from plugwarden.testing import plugin_source

LOOP = plugin_source(
    "import plugwarden, time\n"
    "n, report, work = args['n'], args['report'], args['work']\n"
    "start = time.perf_counter()\n"
    "total = 0\n"
    "for i in range(n):\n"
    "    total += sum(range(work))\n"
    "    if report:\n"
    "        plugwarden.progress(i + 1, n, 'frame')\n"
    "return time.perf_counter() - start"
)


def _job_until_done(host: Host) -> None:
    done = threading.Event()
    job = host.submit("echo", "t", {"x": 1})
    unwatch = host.watch_job(job.id, done.set)
    try:
        while True:
            done.clear()
            if host.job(job.id).finished:
                return
            done.wait(1.0)
    finally:
        unwatch()


def job_overhead(name: str, calls: int = 300, rounds: int = 7) -> Figure:
    site = site_with({"echo": ECHO})
    with condition(name), Host({"jobs": {"path": ":memory:"}}, search_path=[str(site)]) as host:

        def call() -> object:
            return host.call("echo", "t", {"x": 1})

        def job() -> None:
            _job_until_done(host)

        measured = interleaved(job, call, calls, rounds, warm=50)
    return Figure(
        f"no-op job vs sync call, {name}",
        measured.median_us("walls", 0),
        measured.median_us("walls", 1),
        "us",
        "reported",
        lambda ratio: True,
        note=f"host CPU {measured.median_us('cpus', 0):.0f} vs "
        f"{measured.median_us('cpus', 1):.0f} us",
        measured_ratio=statistics.median(measured.ratios),
    )


def progress_cost(name: str, work: int, n: int = 1000, rounds: int = 9) -> Figure:
    site = site_with({"loop": LOOP})
    with condition(name), Host({"jobs": {"path": ":memory:"}}, search_path=[str(site)]) as host:

        def loop(report: bool) -> float:
            job = host.submit("loop", "t", {"n": n, "report": report, "work": work})
            while not host.job(job.id).finished:
                time.sleep(0.001)
            record = host.job(job.id).record
            assert record is not None and record.ok, record
            return float(record.result)

        loop(True)
        loop(False)
        ours, base, ratios = [], [], []
        for _ in range(rounds):
            without = loop(False)
            with_progress = loop(True)
            ours.append(with_progress)
            base.append(without)
            ratios.append(with_progress / without)
    extra_us = (statistics.median(ours) - statistics.median(base)) / n * 1e6
    frame_us = statistics.median(base) / n * 1e6
    light = frame_us < 10
    return Figure(
        f"{n} progress() in a loop of {frame_us:.1f} us frames vs none, {name}",
        statistics.median(ours) * 1e3,
        statistics.median(base) * 1e3,
        "ms/loop",
        "reported" if light else "<= 1.05x",
        (lambda ratio: True) if light else (lambda ratio: ratio <= 1.05),
        note=f"{extra_us:.2f} us per progress() call",
        measured_ratio=statistics.median(ratios),
    )


def run() -> list[Figure]:
    return [
        *(job_overhead(c) for c in CONDITIONS),
        *(progress_cost(c, work) for work in (50, 5000) for c in CONDITIONS),
    ]
