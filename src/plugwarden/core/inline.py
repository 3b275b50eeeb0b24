"""Inline isolation: the plugin runs in the host process, on worker threads.

Its honest limits: a call that overruns its timeout is abandoned, not
stopped (Python cannot kill a thread); the caller gets its timeout result at
the deadline and the plugin goes FAILED, but the thread runs on until the
plugin returns. The memory guard watches the host's resident memory while
calls are in flight and blames growth past the limit on the plugin; it
cannot free that memory. A segfault or ``os._exit`` in the plugin takes the
host down with it. Use ``isolation = "process"`` for anything not trusted.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from typing import Any

import psutil

from plugwarden.core.discovery import PluginSource
from plugwarden.core.guards import Limits, Outcome, describe
from plugwarden.core.loader import LoadedPlugin, LoadError, load_plugin
from plugwarden.core.runner import Attempt, memory_reason, timeout_reason

__all__ = ["ElasticExecutor", "InlineRunner", "Job"]


class Job:
    """One unit of work handed to an executor thread; finished exactly once."""

    __slots__ = (
        "_done",
        "_finish_lock",
        "_finished",
        "args",
        "error",
        "function",
        "guard",
        "value",
    )

    def __init__(self, function: Any, args: tuple[Any, ...]) -> None:
        self.function = function
        self.args = args
        self.value: Any = None
        self.error: BaseException | None = None
        self.guard: tuple[str, int] | None = None
        self._done = threading.Lock()
        self._done.acquire()
        self._finish_lock = threading.Lock()
        self._finished = False

    def run(self) -> None:
        try:
            value = self.function(*self.args)
        # A broad except is what this library is for: the executor thread
        # must survive whatever the plugin does.
        except BaseException as exc:  # noqa: BLE001
            self._finish(error=exc)
        else:
            self._finish(value=value)

    def trip(self, guard: str, measure: int) -> None:
        """A guard gave up on this job: the waiter is released now."""
        self._finish(guard=(guard, measure))

    def _finish(self, **fields: Any) -> None:
        with self._finish_lock:
            if self._finished:
                return
            self._finished = True
            for key, val in fields.items():
                setattr(self, key, val)
        self._done.release()

    def wait(self, timeout_s: float) -> bool:
        if self._done.acquire(timeout=timeout_s):
            self._done.release()
            return True
        return False


class ElasticExecutor:
    """Threads that grow when all are busy (or stuck in a hung plugin) and
    retire when idle, so an abandoned call never starves the others."""

    def __init__(self, name: str = "plugwarden-inline", idle_s: float = 30.0) -> None:
        self._name = name
        self._idle_s = idle_s
        self._jobs: queue.SimpleQueue[Job] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0  # threads waiting for a job and not yet promised one
        self._count = 0

    def submit(self, function: Any, *args: Any) -> Job:
        job = Job(function, args)
        with self._lock:
            spawn = not self._idle
            if spawn:
                self._count += 1
            else:
                self._idle -= 1
        if spawn:
            threading.Thread(
                target=self._serve, name=f"{self._name}-{self._count}", daemon=True
            ).start()
        self._jobs.put(job)
        return job

    def _serve(self) -> None:
        while True:
            try:
                job = self._jobs.get(timeout=self._idle_s)
            except queue.Empty:
                with self._lock:
                    if self._idle:
                        self._idle -= 1
                        return  # retire, taking this thread's idle place with it
                continue  # a submitter counted on us; its job is on the way
            job.run()
            with self._lock:
                self._idle += 1


def _statm_reader() -> Any:
    """The host's resident bytes from /proc/self/statm (a pread, ~1 us), or
    psutil where there is no procfs."""
    try:
        fd = os.open("/proc/self/statm", os.O_RDONLY)
    except OSError:
        process = psutil.Process()
        return lambda: process.memory_info().rss
    page = os.sysconf("SC_PAGE_SIZE")
    return lambda: int(os.pread(fd, 128, 0).split()[1]) * page


resident_bytes = _statm_reader()


class HostMemoryWatch:
    """Samples the host's resident memory while inline calls are in flight."""

    def __init__(self, interval_s: float = 0.01) -> None:
        self._interval_s = interval_s
        self._watched: dict[Job, tuple[int, int]] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def watch(self, job: Job, limit_bytes: int, baseline: int) -> None:
        """Trip ``job`` if the host grows past ``baseline + limit_bytes``."""
        with self._lock:
            self._watched[job] = (baseline, limit_bytes)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="plugwarden-inline-memory", daemon=True
                )
                self._thread.start()
        self._wake.set()

    def unwatch(self, job: Job) -> None:
        with self._lock:
            self._watched.pop(job, None)

    def _loop(self) -> None:
        while True:
            self._wake.wait()
            with self._lock:
                watched = list(self._watched.items())
                if not watched:
                    self._wake.clear()
                    continue
            rss = resident_bytes()
            for job, (baseline, limit) in watched:
                if rss - baseline > limit:
                    job.trip("memory", rss - baseline)
            time.sleep(self._interval_s)


class InlineRunner:
    def __init__(
        self,
        source: PluginSource,
        limits: Limits,
        executor: ElasticExecutor,
        memory: HostMemoryWatch,
    ) -> None:
        self.source = source
        self.limits = limits
        self._executor = executor
        self._memory = memory
        self._plugin: LoadedPlugin | None = None

    def load(self) -> None:
        job = self._executor.submit(
            load_plugin,
            self.source.name,
            self.source.module,
            self.source.attr,
            self.source.search_path,
        )
        if not job.wait(self.limits.load_timeout_s):
            raise LoadError(timeout_reason("import", self.limits.load_timeout_s), "Timeout")
        if isinstance(job.error, LoadError):
            raise job.error
        if job.error is not None:  # pragma: no cover - load_plugin raises LoadError only
            raise LoadError(describe(job.error), type(job.error).__name__)
        self._plugin = job.value

    def call(
        self, hook: str, kwargs: dict[str, Any], timeout_s: float, wait_s: float | None = None
    ) -> Attempt:
        plugin = self._plugin
        if plugin is None:
            return Attempt(Outcome(False, error="Plugin is not loaded", error_type="NotLoaded"))
        start = time.perf_counter()
        baseline = resident_bytes()  # before the plugin can allocate anything
        job = self._executor.submit(plugin.call, hook, kwargs)
        self._memory.watch(job, int(self.limits.memory_mb * 2**20), baseline)
        try:
            finished = job.wait(timeout_s)
        finally:
            self._memory.unwatch(job)
        elapsed = (time.perf_counter() - start) * 1000
        if not finished:
            job.trip("timeout", 0)
            return Attempt(
                Outcome(
                    False,
                    error=timeout_reason(hook, timeout_s),
                    error_type="Timeout",
                    duration_ms=elapsed,
                ),
                "timeout",
            )
        if job.guard is not None:
            return Attempt(
                Outcome(
                    False,
                    error=memory_reason(self.limits.memory_mb, job.guard[1]),
                    error_type="MemoryLimitExceeded",
                    duration_ms=elapsed,
                ),
                "memory",
            )
        outcome: Outcome = job.value
        return Attempt(outcome)

    def close(self) -> None:
        self._plugin = None

    def resident_bytes(self) -> int | None:
        return None

    def pids(self) -> list[int]:
        return []
