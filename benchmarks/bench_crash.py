"""From a call that crashes its worker to the next successful call,
with nobody restarting anything by hand, against pebble's ``ProcessPool``
(which replaces a dead worker by itself), rounds interleaved, under three
conditions (idle, one CPU busy, pinned to one CPU).

Both sides do the same thing the same way: one worker; a call whose code
crashes its own process (a segfault); then the same no-op call, sent again at
once after any failure, until one succeeds. Measured from sending the
crashing call to the good result: wall time, and the caller process's CPU
time (the baseline's pool threads count, as plugwarden's host threads do).

Each crash is the first in its plugin's restart window (``restart_window_s``
is 1 s, and rounds are 1.2 s apart plus a random part of pebble's 0.1 s
worker poll, so neither side is measured at one phase of it), the case the
policy replaces at once;
a second crash within the window waits out the backoff by design.
"""

from __future__ import annotations

import ctypes
import random
import statistics
import time

from benchmarks._harness import Figure, site_with
from benchmarks.bench_wire import CONDITIONS, condition
from plugwarden import Host
from plugwarden.error_types import ErrorType
from plugwarden.testing import plugin_source

POLL_S = 0.1  # pebble's pool checks its workers this often
# A segfault, as a bug in a C extension would.
CRASHY = plugin_source("import ctypes\nif args.get('crash'):\n    ctypes.string_at(0)\nreturn 1")
WINDOW_S = 1.0
POLICY = {"restart_window_s": WINDOW_S, "max_restarts": 5}


def _crash_or_one(crash: bool) -> int:
    """The baseline's task: the same code as the plugin's run()."""
    if crash:
        ctypes.string_at(0)
    return 1


def _ours(host: Host) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    crashed = host.call("crashy", "t", {"crash": True})
    if crashed.error_type != ErrorType.WORKER_DIED:
        raise RuntimeError(f"the crashing call did not crash: {crashed}")
    while not host.call("crashy", "t", {}).ok:
        pass
    return time.perf_counter() - wall, time.process_time() - cpu


def _pebble(pool: object) -> tuple[float, float]:
    from pebble import ProcessExpired

    wall, cpu = time.perf_counter(), time.process_time()
    try:
        pool.schedule(_crash_or_one, args=(True,)).result()  # type: ignore[attr-defined]
        raise RuntimeError("the crashing task did not crash")
    except ProcessExpired:
        pass
    while True:
        try:
            if pool.schedule(_crash_or_one, args=(False,)).result() == 1:  # type: ignore[attr-defined]
                break
        except ProcessExpired:
            continue
    return time.perf_counter() - wall, time.process_time() - cpu


def measure(name: str, rounds: int = 7) -> list[Figure]:
    from pebble import ProcessPool

    site = site_with({"crashy": CRASHY})
    samples: dict[str, list[float]] = {"ow": [], "oc": [], "bw": [], "bc": [], "r": []}
    config = {"defaults": POLICY}
    with (
        condition(name),
        Host(config, search_path=[str(site)]) as host,
        ProcessPool(1) as pool,
    ):
        warm = pool.schedule(_crash_or_one, args=(False,)).result()
        if not host.call("crashy", "t", {}).ok or warm != 1:
            raise RuntimeError("crashy did not start")
        for _ in range(rounds):
            # Pacing: each crash the first in its window, at a random phase of
            # pebble's 0.1 s worker poll (a fixed 1.2 s landed every crash at
            # the same point of it, and pebble always paid ~95 ms of it).
            time.sleep(WINDOW_S * 1.2 + random.uniform(0, POLL_S))
            ours, base = _ours(host), _pebble(pool)
            samples["ow"].append(ours[0])
            samples["oc"].append(ours[1])
            samples["bw"].append(base[0])
            samples["bc"].append(base[1])
            samples["r"].append(ours[0] / base[0])
        restarts = host.status("crashy").metrics["restarts"]
    if restarts != rounds:
        raise RuntimeError(f"expected {rounds} automatic replacements, saw {restarts}")
    median = statistics.median
    cpu = f"caller CPU {median(samples['oc']) * 1e3:.1f} vs {median(samples['bc']) * 1e3:.1f} ms"
    return [
        Figure(
            f"crash -> next successful call / pebble auto-restart, {name}",
            median(samples["ow"]) * 1e3,
            median(samples["bw"]) * 1e3,
            "ms",
            "<= 0.2x",
            lambda r: r <= 0.2,
            f"{rounds} rounds, range {min(samples['r']):.2f}-{max(samples['r']):.2f}; {cpu}",
            median(samples["r"]),
        )
    ]


def run(rounds: int = 7) -> list[Figure]:
    try:
        import pebble  # noqa: F401
    except ImportError:
        print("bench crash: pebble not installed (pip install pebble); skipped")
        return []
    return [figure for name in CONDITIONS for figure in measure(name, rounds)]


if __name__ == "__main__":
    from benchmarks._harness import print_table

    print_table(run(), "Crash recovery")
