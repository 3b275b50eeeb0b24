"""``GET /metrics``: Prometheus text exposition through prometheus-client.

A custom collector reads the registry at scrape time (no plugin code runs),
into a CollectorRegistry of its own, so several hosts in one process (tests)
never collide on the global default registry.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from plugwarden.plugin.lifecycle import State

if TYPE_CHECKING:  # the app is handed a Host; it never makes one
    from plugwarden.host.host import Host

__all__ = ["HostCollector", "collector_registry", "exposition"]


class HostCollector(Collector):
    def __init__(self, host: Host) -> None:
        self.host = host

    def collect(self) -> Iterator[Metric]:
        statuses = self.host.statuses()
        state = GaugeMetricFamily(
            "plugwarden_plugin_state",
            "1 for the plugin's current lifecycle state, 0 for the others.",
            labels=["plugin", "state"],
        )
        calls = CounterMetricFamily(
            "plugwarden_plugin_calls", "Plugin run calls by outcome.", labels=["plugin", "outcome"]
        )
        trips = CounterMetricFamily(
            "plugwarden_plugin_guard_trips",
            "Guard trips by guard (timeout, memory, crash).",
            labels=["plugin", "guard"],
        )
        duration = HistogramMetricFamily(
            "plugwarden_plugin_call_duration_seconds",
            "Duration of plugin run calls.",
            labels=["plugin"],
        )
        uptime = GaugeMetricFamily(
            "plugwarden_plugin_uptime_seconds",
            "Seconds since the plugin became available (0 when it is not).",
            labels=["plugin"],
        )
        in_flight = GaugeMetricFamily(
            "plugwarden_plugin_in_flight", "Calls in flight.", labels=["plugin"]
        )
        restarts = CounterMetricFamily(
            "plugwarden_plugin_restarts",
            "Automatic restarts and worker replacements, by cause "
            "(crash, timeout, memory, error, failed).",
            labels=["plugin", "reason"],
        )
        healthy = GaugeMetricFamily(
            "plugwarden_plugin_healthy",
            "0 once the plugin's health hook failed health_failures times in a row.",
            labels=["plugin"],
        )
        resident = GaugeMetricFamily(
            "plugwarden_plugin_worker_resident_bytes",
            "Resident memory of an isolated plugin's workers and their children.",
            labels=["plugin"],
        )
        plugin_gpu = GaugeMetricFamily(
            "plugwarden_plugin_gpu_memory_bytes",
            "GPU memory of a plugin's workers (NVML), where it has a GPU budget.",
            labels=["plugin"],
        )
        workers = GaugeMetricFamily(
            "plugwarden_plugin_workers",
            "Serving workers by node: 'local' for worker processes here, else the Ray node.",
            labels=["plugin", "node"],
        )
        counts = dict.fromkeys(State, 0)
        for status in statuses:
            name = status.name
            counts[status.state] += 1
            for candidate in State:
                state.add_metric([name, candidate.value], 1.0 if candidate is status.state else 0.0)
            metrics = status.metrics
            calls.add_metric([name, "success"], metrics["success_count"])
            calls.add_metric([name, "error"], metrics["error_count"])
            for guard, count in metrics["guard_trips"].items():
                trips.add_metric([name, guard], count)
            buckets, total = self.host.histogram(name)
            duration.add_metric([name], buckets, total)
            uptime.add_metric([name], metrics["uptime_seconds"])
            in_flight.add_metric([name], status.in_flight)
            for cause, count in metrics["restarts_by_cause"].items():
                restarts.add_metric([name, cause], count)
            healthy.add_metric([name], 1.0 if status.healthy else 0.0)
            rss = self.host.resident_bytes(name)
            if rss is not None:
                resident.add_metric([name], rss)
            for node, count in collections.Counter(self.host.worker_nodes(name)).items():
                workers.add_metric([name, node], count)
            gpu_bytes = self.host.gpu_bytes(name)
            if gpu_bytes is not None:
                plugin_gpu.add_metric([name], gpu_bytes)
        plugins = GaugeMetricFamily(
            "plugwarden_plugins", "Plugins by lifecycle state.", labels=["state"]
        )
        for candidate, count in counts.items():
            plugins.add_metric([candidate.value], count)
        started = GaugeMetricFamily(
            "plugwarden_started", "1 once the host has finished starting its plugins."
        )
        started.add_metric([], 1.0 if self.host.started else 0.0)
        yield from (state, calls, trips, duration, uptime, in_flight, restarts, healthy, resident)
        yield from (workers, plugin_gpu)
        yield from (plugins, started)
        yield from self._gpus()
        yield from self._jobs()

    def _gpus(self) -> Iterator[Metric]:
        memory = GaugeMetricFamily(
            "plugwarden_gpu_memory_bytes",
            "Each GPU's memory: used and total (NVML), and stranded (held by the processes of "
            "lost workers after their replacement stopped waiting for it).",
            labels=["gpu", "kind"],
        )  # fmt: skip
        healthy = GaugeMetricFamily(
            "plugwarden_gpu_healthy", "0 once an Xid calls for the GPU's reset.", labels=["gpu"]
        )
        xids = CounterMetricFamily(
            "plugwarden_gpu_xid", "Xid errors NVML reported, by GPU and Xid.", labels=["gpu", "xid"]
        )
        for gpu in self.host.gpus():
            index = str(gpu["index"])
            memory.add_metric([index, "used"], gpu["memory_used_bytes"])
            memory.add_metric([index, "total"], gpu["memory_total_bytes"])
            memory.add_metric([index, "stranded"], gpu["stranded_bytes"])
            healthy.add_metric([index], 1.0 if gpu["healthy"] else 0.0)
            for xid, count in gpu["xids"].items():
                xids.add_metric([index, xid], count)
        yield from (memory, healthy, xids)

    def _jobs(self) -> Iterator[Metric]:
        figures = self.host.job_figures()
        jobs = GaugeMetricFamily("plugwarden_jobs", "Stored jobs by state.", labels=["state"])
        counts = figures.counts
        for job_state, count in counts.items():
            jobs.add_metric([job_state], count)
        depth = GaugeMetricFamily(
            "plugwarden_job_queue_depth", "Jobs waiting for a worker.", labels=["plugin"]
        )
        for name, waiting in figures.queue_depths.items():
            depth.add_metric([name], waiting)
        duration = HistogramMetricFamily(
            "plugwarden_job_duration_seconds",
            "Run time of finished jobs (from start to end), since the host started.",
            labels=["plugin"],
        )
        for name, (cumulative, total) in figures.durations.items():
            duration.add_metric([name], cumulative, total)
        yield from (jobs, depth, duration)


def exposition(registry: CollectorRegistry) -> tuple[bytes, str]:
    return generate_latest(registry), CONTENT_TYPE_LATEST


def collector_registry(host: Host) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(HostCollector(host))
    return registry
