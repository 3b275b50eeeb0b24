"""Per-plugin metrics."""

from __future__ import annotations

from datetime import UTC, datetime

from plugwarden.host.metrics import PluginMetrics
from plugwarden.result import CallResult
from tests.conftest import wait_for


class TestPluginMetrics:
    def test_counts_times_and_last_used(self):
        """Successes, errors, last and average time, last_used in ISO 8601 UTC."""
        metrics = PluginMetrics()
        metrics.record(CallResult(ok=True, plugin="p", duration_ms=2.0))
        metrics.record(CallResult.failure("e", "E", plugin="p", duration_ms=4.0, guard="timeout"))
        snap = metrics.snapshot()
        assert (snap["success_count"], snap["error_count"]) == (1, 1)
        assert snap["last_execution_time_ms"] == 4.0
        assert snap["avg_execution_time_ms"] == 3.0
        assert snap["guard_trips"] == {
            "timeout": 1,
            "memory": 0,
            "tasks": 0,
            "crash": 0,
            "protocol": 0,
            "gpu_memory": 0,
            "gpu_fault": 0,
        }
        used = datetime.fromisoformat(snap["last_used"].replace("Z", "+00:00"))
        assert used.tzinfo == UTC
        assert abs((datetime.now(UTC) - used).total_seconds()) < 60

    def test_uptime_counts_only_while_up(self):
        """Uptime is zero until the plugin is up and again once it goes down."""
        metrics = PluginMetrics()
        assert metrics.uptime_seconds == 0.0
        metrics.mark_up()
        wait_for(lambda: metrics.uptime_seconds > 0, what="uptime to grow")
        metrics.mark_down()
        assert metrics.uptime_seconds == 0.0

    def test_fresh_metrics_have_no_averages(self):
        snap = PluginMetrics().snapshot()
        assert snap["avg_execution_time_ms"] is None
        assert snap["last_used"] is None
