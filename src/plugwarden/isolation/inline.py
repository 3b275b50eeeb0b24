"""Inline isolation: the plugin runs in the host process, on worker threads.

Its honest limits: a call that overruns its timeout is abandoned, not
stopped (Python cannot kill a thread); the caller gets its timeout result at
the deadline and the plugin is restarted (re-imported) by the supervisor,
but the abandoned thread runs on until the plugin returns. The memory guard
watches the host's resident memory while calls are in flight and blames
growth past the limit on the plugin; it cannot free that memory. A segfault
or ``os._exit`` in the plugin takes the host down with it, and the plugin
can patch anything in the host. Use ``isolation = "process"`` for anything
not trusted.
"""

from __future__ import annotations

import copy
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import psutil

from plugwarden.error_types import ErrorType
from plugwarden.exceptions import LoadError, describe
from plugwarden.isolation.executor import ElasticExecutor, Task
from plugwarden.isolation.loader import LoadedPlugin, load_plugin
from plugwarden.isolation.process.treememory import statm_resident_bytes
from plugwarden.isolation.reporting import CallControl, InlineReporter, bound
from plugwarden.isolation.runner import (
    LossHandler,
    WorkerLoss,
    hook_failure,
    memory_reason,
    timeout_reason,
    validate_verdict,
)
from plugwarden.plugin.discovery import PluginSource
from plugwarden.plugin.limits import Limits
from plugwarden.result import CallResult

__all__ = ["HostMemoryWatch", "InlineRunner", "copy_for_plugin"]


class _OwnResidentBytes:
    """This process's resident bytes from /proc/self/statm (a pread, ~1 us),
    or psutil where there is no procfs. The file is opened on first use in
    each process: opened at import, it would name the zygote, and every
    worker forked from it would inherit it."""

    def __init__(self) -> None:
        self._pid = 0
        self._read: Callable[[], int] = lambda: 0

    def __call__(self) -> int:
        if self._pid != os.getpid():
            self._pid, self._read = os.getpid(), _statm_reader()
        return self._read()


def _statm_reader() -> Callable[[], int]:
    try:
        fd = os.open("/proc/self/statm", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        process = psutil.Process()
        return lambda: int(process.memory_info().rss)
    return lambda: statm_resident_bytes(fd)


resident_bytes = _OwnResidentBytes()

# Values the plugin cannot change in place: a dict of these, copied
# shallowly, is already a deep copy.
INLINE_IS_UNCONFINED = (
    "not available here: isolation = inline runs the plugin in the host process, outside "
    "every protection (docs/guides/isolation.md#what-a-plugin-may-reach)"
)
_ATOMS = frozenset({str, int, float, bool, bytes, type(None)})


def copy_for_plugin(kwargs: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of a hook's arguments. The common call, ``run`` with
    args of plain values, is copied level by level (~0.5 us, against ~3.5
    for ``copy.deepcopy``); anything else goes through ``copy.deepcopy``."""
    copied = {}
    for key, value in kwargs.items():
        kind = type(value)
        if kind in _ATOMS:
            copied[key] = value
        elif kind is dict and all(
            type(k) in _ATOMS and type(v) in _ATOMS for k, v in value.items()
        ):
            copied[key] = dict(value)
        else:
            return copy.deepcopy(kwargs)
    return copied


class HostMemoryWatch:
    """Samples the host's resident memory while inline calls are in flight."""

    def __init__(self, interval_s: float = 0.01) -> None:
        self._interval_s = interval_s
        self._watched: dict[Task, tuple[int, int]] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = False
        self._thread: threading.Thread | None = None

    def watch(self, task: Task, limit_bytes: int, baseline: int) -> None:
        """Trip ``task`` if the host grows past ``baseline + limit_bytes``."""
        with self._lock:
            if self._stop:
                return
            self._watched[task] = (baseline, limit_bytes)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="plugwarden-inline-memory", daemon=True
                )
                self._thread.start()
        if not self._wake.is_set():  # set() takes a lock and notifies: not on every call
            self._wake.set()

    def unwatch(self, task: Task) -> None:
        with self._lock:
            self._watched.pop(task, None)

    def _loop(self) -> None:
        while True:
            self._wake.wait()
            with self._lock:
                if self._stop:
                    return
                watched = list(self._watched.items())
                if not watched:
                    self._wake.clear()
                    continue
            rss = resident_bytes()
            for task, (baseline, limit) in watched:
                if rss - baseline > limit:
                    task.trip("memory", rss - baseline)
            time.sleep(self._interval_s)

    def close(self) -> None:
        with self._lock:
            self._stop = True
            thread, self._thread = self._thread, None
        self._wake.set()
        if thread is not None:
            thread.join()


def _reporting(reporter: InlineReporter | None, call: Any, hook: str, kwargs: Any) -> Any:
    """``call(hook, kwargs)`` with ``reporter`` current (a job), its last
    progress report delivered at the end."""
    if reporter is None:
        return call(hook, kwargs)
    with bound(reporter):
        try:
            return call(hook, kwargs)
        finally:
            reporter.flush()


class InlineRunner:
    replacement_note: str | None = None  # never replaced: restarted instead

    def __init__(
        self,
        source: PluginSource,
        limits: Limits,
        executor: ElasticExecutor,
        memory: HostMemoryWatch,
        on_loss: LossHandler,
    ) -> None:
        self.source = source
        self.limits = limits
        self.protections = {"sandbox": INLINE_IS_UNCONFINED}
        if limits.gpu_memory_mb:  # NVML counts processes: the host's own is no budget's
            self.protections["gpu_memory"] = (
                "not enforced: isolation = inline shares the host's process, and GPU memory "
                "is counted per process (use isolation = process)"
            )
        self._executor = executor
        self._memory = memory
        self._on_loss = on_loss
        self._plugin: LoadedPlugin | None = None
        self._closing: str | None = None
        self._tasks: set[Task] = set()  # in flight: close() releases their callers

    def load(self) -> None:
        task = self._executor.submit(
            load_plugin,
            self.source.name,
            self.source.module,
            self.source.attr,
            self.source.search_path,
        )
        if not task.wait(self.limits.load_timeout_s):
            raise LoadError(timeout_reason("import", self.limits.load_timeout_s), ErrorType.TIMEOUT)
        if isinstance(task.error, LoadError):
            raise task.error
        if task.error is not None or task.guard is not None:
            what = describe(task.error) if task.error else "the host is closing"
            raise LoadError(what, ErrorType.IMPORT_FAILED)
        self._plugin = task.value

    def initialise(self, config: dict[str, Any]) -> str | None:
        budget = self.limits.load_timeout_s
        init = self._run("init", {"config": config}, budget)
        if not init.ok:
            return hook_failure(init)
        return validate_verdict(self._run("validate", {}, budget))

    def call(
        self,
        hook: str,
        kwargs: dict[str, Any],
        timeout_s: float,
        wait_s: float | None = None,
        control: CallControl | None = None,
    ) -> CallResult:
        try:
            # The plugin gets a copy: what it does to its args stays its own.
            kwargs = copy_for_plugin(kwargs)
        # A caller's arguments may refuse to copy in any way.
        except Exception as exc:  # noqa: BLE001
            return CallResult.failure(
                f"The arguments cannot be copied for the plugin ({describe(exc)}). "
                "Pass plain data: dicts, lists, strings, numbers, booleans, None.",
                ErrorType.INVALID_ARGUMENTS,
                hook=hook,
            )
        result = self._run(hook, kwargs, timeout_s, control)
        if result.guard is not None and self._closing is None:
            self._plugin = None  # not to be trusted: the supervisor reloads it
            self._on_loss(WorkerLoss(result.error or "", result.guard, True, 0, replaceable=False))
        return result

    def _run(
        self,
        hook: str,
        kwargs: dict[str, Any],
        timeout_s: float,
        control: CallControl | None = None,
    ) -> CallResult:
        plugin = self._plugin
        if plugin is None:
            why = self._closing or ErrorType.PLUGIN_NOT_AVAILABLE
            return CallResult.failure("The plugin is not loaded (restarting).", why, hook=hook)
        start = time.perf_counter()
        baseline = resident_bytes()  # before the plugin can allocate anything
        reporter = None if control is None else InlineReporter(control)
        if control is not None:
            control.starting()
        task = self._executor.submit(_reporting, reporter, plugin.call, hook, kwargs)
        self._tasks.add(task)
        if control is not None:
            # Forced, a cancel abandons the call: Python cannot stop a thread.
            control.started(lambda force: task.trip("cancel", 0) if force else None)
        self._memory.watch(task, int(self.limits.memory_mb * 2**20), baseline)
        try:
            finished = task.wait(timeout_s)
        finally:
            self._memory.unwatch(task)
            self._tasks.discard(task)
            if control is not None:
                control.finished()
        elapsed = (time.perf_counter() - start) * 1000
        if not finished:
            task.trip("timeout", 0)
            knob = None if control is None else control.timeout_knob
            return CallResult.failure(
                timeout_reason(hook, timeout_s, knob),
                ErrorType.TIMEOUT,
                hook=hook,
                duration_ms=elapsed,
                guard="timeout",
            )
        if task.guard is not None:
            if task.guard[0] == "cancel" and control is not None:
                return CallResult.failure(
                    f"Cancelled: the plugin did not stop within cancel_grace_s "
                    f"({control.grace_s:g}s) of the cancel; the call was abandoned (inline: "
                    "its thread runs on until the plugin returns).",
                    ErrorType.CANCELLED,
                    hook=hook,
                    duration_ms=elapsed,
                )
            if task.guard[0] != "memory":
                why = self._closing or ErrorType.CLOSED
                return CallResult.failure("The host closed.", why, hook=hook)
            return CallResult.failure(
                memory_reason(self.limits.memory_mb, task.guard[1]),
                ErrorType.MEMORY_LIMIT,
                hook=hook,
                duration_ms=elapsed,
                guard="memory",
            )
        result: CallResult = task.value
        limit, text = self.limits.max_result_bytes, result.encoded
        # 4 bytes per character at most in UTF-8: most results skip the encode.
        if isinstance(text, str) and len(text) * 4 > limit and len(text.encode()) > limit:
            return CallResult.failure(
                f"Result of {hook}() is {len(text.encode())} bytes, over the {limit}-byte cap "
                "(max_result_bytes). Return less, or raise the cap.",
                ErrorType.RESULT_TOO_LARGE,
                hook=hook,
                duration_ms=result.duration_ms,
            )
        return result

    def replace_lost(self) -> str | None:
        return "an inline plugin has no worker to replace; it is restarted instead"

    def wait_idle(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        tasks = list(self._tasks)
        return all(task.wait(max(0.0, deadline - time.monotonic())) for task in tasks)

    def close(self, why: str) -> None:
        self._closing = why
        self._plugin = None
        for task in list(self._tasks):
            task.trip("closed", 0)

    def resident_bytes(self) -> int | None:
        return None

    def last_resident_bytes(self) -> int | None:
        return None

    def pids(self) -> list[int]:
        return []

    def nodes(self) -> list[str]:
        return []
