"""Shared pieces of the benchmarks: plugin sites, timing, the result table."""

from __future__ import annotations

import socket
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from plugwarden.testing import ECHO_PLUGIN, plugin_source, write_plugin

ECHO = ECHO_PLUGIN

# About a millisecond of pure-Python work: a small model's or parser's call.
WORK = plugin_source(
    "total = 0\nfor i in range(args.get('n', 20000)):\n    total += i * i\nreturn {'total': total}"
)


@dataclass
class Figure:
    name: str
    ours: float
    baseline: float
    unit: str
    target: str
    passes: Callable[[float], bool]
    note: str = ""
    measured_ratio: float | None = None  # median of per-round ratios, when interleaved

    @property
    def ratio(self) -> float:
        if self.measured_ratio is not None:
            return self.measured_ratio
        return self.ours / self.baseline if self.baseline else float("inf")


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def site_with(plugins: dict[str, str], **options: object) -> Path:
    site = Path(tempfile.mkdtemp(prefix="plugwarden-bench-"))
    for name, source in plugins.items():
        write_plugin(site, name, source, module=f"bench_{name}", **options)  # type: ignore[arg-type]
    return site


def per_call(function: Callable[[], object], calls: int, rounds: int = 5) -> float:
    """Median over ``rounds`` of the mean seconds per call."""
    for _ in range(min(calls, 200)):
        function()
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            function()
        samples.append((time.perf_counter() - start) / calls)
    return statistics.median(samples)


def compare(
    ours: Callable[[], object],
    baseline: Callable[[], object],
    calls: int,
    rounds: int = 9,
) -> tuple[float, float, float]:
    """Seconds per call of each, and the median of their per-round ratios.

    The two are measured in alternating rounds, so a machine that slows down
    or speeds up (shared cores) moves both sides of each ratio alike."""
    for _ in range(min(calls, 200)):
        ours()
        baseline()
    ours_s, base_s, ratios = [], [], []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            baseline()
        base = (time.perf_counter() - start) / calls
        start = time.perf_counter()
        for _ in range(calls):
            ours()
        mine = (time.perf_counter() - start) / calls
        ours_s.append(mine)
        base_s.append(base)
        ratios.append(mine / base)
    return statistics.median(ours_s), statistics.median(base_s), statistics.median(ratios)


def print_table(figures: list[Figure], title: str) -> None:
    table = Table(title=title, title_justify="left")
    for column in ("figure", "plugwarden", "baseline", "ratio", "target", "ok", "note"):
        table.add_column(column, overflow="fold")
    for f in figures:
        ok = f.passes(f.ratio)
        table.add_row(
            f.name,
            f"{f.ours:.3f} {f.unit}",
            f"{f.baseline:.3f} {f.unit}",
            f"{f.ratio:.2f}x",
            f.target,
            "[green]yes[/green]" if ok else "[red]no[/red]",
            f.note,
        )
    Console(width=160).print(table)
