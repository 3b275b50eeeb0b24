"""Per-plugin call metrics (docs/guides/isolation.md), exact under
concurrent calls."""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from plugwarden.error_types import GUARDS, Guard
from plugwarden.plugin.lifecycle import iso

if TYPE_CHECKING:
    from plugwarden.result import CallResult

__all__ = ["DURATION_BUCKETS", "PluginMetrics"]

# Call duration buckets (seconds) for the Prometheus histogram.
DURATION_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)


class PluginMetrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.success_count = 0
        self.error_count = 0
        self.total_ms = 0.0
        self.last_execution_time_ms: float | None = None
        self._last_used: float | None = None  # epoch seconds: cheaper than a datetime
        self.guard_trips: dict[Guard, int] = dict.fromkeys(GUARDS, 0)
        # Per-bucket (not cumulative) counts; the last slot is +Inf.
        self.bucket_counts = [0] * (len(DURATION_BUCKETS) + 1)
        self.up_since: float | None = None  # time.monotonic() when it became available
        self.restarts: dict[str, int] = {}  # automatic restarts and replacements, by cause

    def mark_up(self) -> None:
        """The plugin became available: uptime counts from now."""
        self.up_since = time.monotonic()

    def mark_down(self) -> None:
        self.up_since = None

    def record_trip(self, guard: Guard) -> None:
        """A guard tripped outside any call (a worker killed between calls)."""
        with self._lock:
            self.guard_trips[guard] += 1

    def record_restart(self, cause: str) -> None:
        with self._lock:
            self.restarts[cause] = self.restarts.get(cause, 0) + 1

    def record(self, result: CallResult) -> None:
        with self._lock:
            if result.ok:
                self.success_count += 1
            else:
                self.error_count += 1
            if result.guard is not None:
                self.guard_trips[result.guard] += 1
            self.total_ms += result.duration_ms
            self.bucket_counts[bisect_left(DURATION_BUCKETS, result.duration_ms / 1000)] += 1
            self.last_execution_time_ms = result.duration_ms
            self._last_used = time.time()

    @property
    def last_used(self) -> datetime | None:
        used = self._last_used
        return None if used is None else datetime.fromtimestamp(used, UTC)

    @property
    def uptime_seconds(self) -> float:
        since = self.up_since
        return 0.0 if since is None else time.monotonic() - since

    def counters(self) -> dict[str, Any]:
        """Every figure but uptime (which moves with the clock)."""
        with self._lock:
            calls = self.success_count + self.error_count
            last_used = self.last_used
            return {
                "success_count": self.success_count,
                "error_count": self.error_count,
                "last_used": iso(last_used) if last_used else None,
                "last_execution_time_ms": (
                    None
                    if self.last_execution_time_ms is None
                    else round(self.last_execution_time_ms, 3)
                ),
                "avg_execution_time_ms": round(self.total_ms / calls, 3) if calls else None,
                "guard_trips": dict(self.guard_trips),
                "restarts": sum(self.restarts.values()),
                "restarts_by_cause": dict(self.restarts),
            }

    def snapshot(self) -> dict[str, Any]:
        return {**self.counters(), "uptime_seconds": round(self.uptime_seconds, 3)}

    def histogram(self) -> tuple[list[tuple[str, int]], float]:
        """Cumulative (le, count) buckets and the sum in seconds, Prometheus-style."""
        with self._lock:
            counts, total = list(self.bucket_counts), self.total_ms / 1000
        cumulative, running = [], 0
        for bound, count in zip((*map(str, DURATION_BUCKETS), "+Inf"), counts, strict=True):
            running += count
            cumulative.append((bound, running))
        return cumulative, total
