"""The sandbox's cost (docs/guides/isolation.md, "What a plugin may reach"):
the same plugin in two hosts of the same run, one with the sandbox (the
default) and one with ``sandbox = false``, rounds interleaved, under three
conditions (idle, one CPU busy, pinned to one CPU).

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
from dataclasses import dataclass, field

from benchmarks._harness import ECHO, Figure, site_with
from benchmarks.bench_wire import CONDITIONS, condition, timed
from plugwarden import Host, State


def _restart(host: Host) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    status = host.restart("echo")
    if status.state is not State.INITIALIZED:
        raise RuntimeError(f"echo did not come back: {status.reason}")
    return time.perf_counter() - wall, time.process_time() - cpu


@dataclass
class _Rounds:
    """Interleaved rounds of both sides: (wall, CPU) seconds of each, and
    each round's wall ratio."""

    ours: list[tuple[float, float]] = field(default_factory=list)
    base: list[tuple[float, float]] = field(default_factory=list)

    def add(self, ours: tuple[float, float], base: tuple[float, float]) -> None:
        self.ours.append(ours)
        self.base.append(base)

    def median(self, side: str, which: int, scale: float) -> float:
        samples = self.ours if side == "ours" else self.base
        return statistics.median(sample[which] for sample in samples) * scale

    @property
    def ratios(self) -> list[float]:
        return [o[0] / b[0] for o, b in zip(self.ours, self.base, strict=True)]

    def figure(self, title: str, unit: str, scale: float, target: str, limit: float | None,
               what: str, whose: str) -> Figure:  # fmt: skip
        ratios = self.ratios
        ours, base = self.median("ours", 1, scale), self.median("base", 1, scale)
        cpu = f"{whose} CPU {ours:.1f} vs {base:.1f}"
        return Figure(
            title,
            self.median("ours", 0, scale),
            self.median("base", 0, scale),
            unit,
            target,
            (lambda r: True) if limit is None else (lambda r: r <= limit),
            f"{what}, range {min(ratios):.2f}-{max(ratios):.2f}; {cpu} {unit}",
            statistics.median(ratios),
        )


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
        start = _Rounds()
        for _ in range(starts):
            base = _restart(off)
            start.add(_restart(on), base)
        call = _Rounds()
        for _ in range(rounds):
            base = timed(lambda: off.call("echo", "t", {}), calls)
            call.add(timed(lambda: on.call("echo", "t", {}), calls), base)
    return [
        start.figure(
            f"worker start (restart to INITIALIZED), sandbox on / off, {name}",
            "ms", 1e3, "report", None, f"{starts} rounds", "host",
        ),
        call.figure(
            f"no-op call, sandbox on / off, {name}",
            "us", 1e6, "<= 1.1x", 1.1, f"{rounds} rounds of {calls}", "caller",
        ),
    ]  # fmt: skip


def run() -> list[Figure]:
    return [figure for name in CONDITIONS for figure in measure(name)]


if __name__ == "__main__":
    from benchmarks._harness import print_table

    print_table(run(), "The sandbox's cost")
