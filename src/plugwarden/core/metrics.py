"""Per-plugin call metrics (SPEC section 4), exact under concurrent calls."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Any

from plugwarden.core.lifecycle import iso
from plugwarden.core.result import GUARDS, CallResult, Guard

__all__ = ["PluginMetrics"]


class PluginMetrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.success_count = 0
        self.error_count = 0
        self.total_ms = 0.0
        self.last_execution_time_ms: float | None = None
        self._last_used: float | None = None  # epoch seconds: cheaper than a datetime
        self.guard_trips: dict[Guard, int] = dict.fromkeys(GUARDS, 0)
        self._up_since: float | None = None

    def mark_up(self) -> None:
        """The plugin became available: uptime counts from now."""
        self._up_since = time.monotonic()

    def mark_down(self) -> None:
        self._up_since = None

    def record(self, result: CallResult) -> None:
        with self._lock:
            if result.ok:
                self.success_count += 1
            else:
                self.error_count += 1
            if result.guard is not None:
                self.guard_trips[result.guard] += 1
            self.total_ms += result.duration_ms
            self.last_execution_time_ms = result.duration_ms
            self._last_used = time.time()

    @property
    def last_used(self) -> datetime | None:
        used = self._last_used
        return None if used is None else datetime.fromtimestamp(used, UTC)

    @property
    def uptime_seconds(self) -> float:
        since = self._up_since
        return 0.0 if since is None else time.monotonic() - since

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            calls = self.success_count + self.error_count
            return {
                "success_count": self.success_count,
                "error_count": self.error_count,
                "uptime_seconds": round(self.uptime_seconds, 3),
                "last_used": iso(last_used) if (last_used := self.last_used) else None,
                "last_execution_time_ms": (
                    None
                    if self.last_execution_time_ms is None
                    else round(self.last_execution_time_ms, 3)
                ),
                "avg_execution_time_ms": round(self.total_ms / calls, 3) if calls else None,
                "guard_trips": dict(self.guard_trips),
            }
