"""The sandbox's cost (README, "What a plugin may reach"): the same plugin
in two hosts of the same run, one with the sandbox (the default) and one
with ``sandbox = false``, rounds interleaved, under three conditions (idle,
one CPU busy, pinned to one CPU).

- Bringing a worker up: ``restart`` (the whole pipeline: checks, a fresh
  worker with its init, namespaces, mounts, Landlock and seccomp, import,
  init, validate), wall time and the host's CPU time.
- A no-op call once the worker is up: the sandbox is set up once per
  worker, so a call must cost the same (the caller thread's CPU next to
  wall time).
"""

from __future__ import annotations

import statistics
import time

from benchmarks._harness import ECHO, Figure, site_with
from benchmarks.bench_wire import condition, timed
from plugwarden import Host, State


def _restart(host: Host) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    status = host.restart("echo")
    if status.state is not State.INITIALIZED:
        raise RuntimeError(f"echo did not come back: {status.reason}")
    return time.perf_counter() - wall, time.process_time() - cpu


def measure(name: str, starts: int = 7, calls: int = 1000, rounds: int = 15) -> list[Figure]:
    site = site_with({"echo": ECHO})
    on_config = {"jobs": {"path": ":memory:"}}
    off_config = {"jobs": {"path": ":memory:"}, "defaults": {"sandbox": False}}
    with (
        condition(name),
        Host(on_config, search_path=[str(site)]) as on,
        Host(off_config, search_path=[str(site)]) as off,
    ):
        on.start()
        off.start()
        enforced = on.status("echo").info.protections.get("filesystem")
        if enforced != "enforced" or off.status("echo").info.protections.get("filesystem"):
            raise RuntimeError(f"the sandbox is not as configured: {enforced!r}")
        start = {"on": [], "off": [], "on_cpu": [], "off_cpu": [], "r": []}
        for _ in range(starts):
            base, ours = _restart(off), _restart(on)
            start["off"].append(base[0])
            start["on"].append(ours[0])
            start["off_cpu"].append(base[1])
            start["on_cpu"].append(ours[1])
            start["r"].append(ours[0] / base[0])
        call = {"on": [], "off": [], "on_cpu": [], "off_cpu": [], "r": []}
        for _ in range(rounds):
            base = timed(lambda: off.call("echo", "t", {}), calls)
            ours = timed(lambda: on.call("echo", "t", {}), calls)
            call["off"].append(base[0])
            call["on"].append(ours[0])
            call["off_cpu"].append(base[1])
            call["on_cpu"].append(ours[1])
            call["r"].append(ours[0] / base[0])
    median = statistics.median

    def cpu(samples: dict[str, list[float]], scale: float, unit: str) -> str:
        return (f"CPU {median(samples['on_cpu']) * scale:.1f} vs "
                f"{median(samples['off_cpu']) * scale:.1f} {unit}")  # fmt: skip

    return [
        Figure(
            f"worker start (restart to INITIALIZED), sandbox on / off, {name}",
            median(start["on"]) * 1e3,
            median(start["off"]) * 1e3,
            "ms",
            "report",
            lambda r: True,
            f"{starts} rounds, range {min(start['r']):.2f}-{max(start['r']):.2f}; "
            f"host {cpu(start, 1e3, 'ms')}",
            median(start["r"]),
        ),
        Figure(
            f"no-op call, sandbox on / off, {name}",
            median(call["on"]) * 1e6,
            median(call["off"]) * 1e6,
            "us",
            "<= 1.1x",
            lambda r: r <= 1.1,
            f"{rounds} rounds of {calls}, range {min(call['r']):.2f}-{max(call['r']):.2f}; "
            f"caller {cpu(call, 1e6, 'us')}",
            median(call["r"]),
        ),
    ]


def run() -> list[Figure]:
    figures: list[Figure] = []
    for name in ("idle", "busy", "pinned"):
        figures += measure(name)
    return figures


if __name__ == "__main__":
    from benchmarks._harness import print_table

    print_table(run(), "The sandbox's cost")
