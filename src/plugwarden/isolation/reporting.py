"""Progress and cancellation between a running job and the host (docs/guides/jobs.md).

Plugin side: :func:`progress` and :func:`cancelled` (exported as
``plugwarden.progress`` and ``plugwarden.cancelled``) reach the *reporter*
of the call in flight: a worker process's (any thread of the worker), or an
inline call's (a context variable of the thread running it). Outside a job
there is none and both are a check and a return.

Reports are throttled where they are made (:class:`Throttle`, 10 a second
at most, the last one always delivered), so a plugin may report every frame
of a video: a throttled report costs a clock read.

Host side: :class:`CallControl` is one job's end of the channel: progress
comes out of it, a cancel goes into it, cooperative first, then forced.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Protocol

__all__ = [
    "MAX_MESSAGE",
    "CallControl",
    "InlineReporter",
    "Reporter",
    "Throttle",
    "bound",
    "cancelled",
    "progress",
    "set_process_reporter",
]

MAX_MESSAGE = 200  # characters of a progress message kept
INTERVAL_S = 0.1  # at most one progress report per interval leaves the plugin


class Reporter(Protocol):
    def progress(self, done: float, total: float | None, message: str) -> None: ...

    def cancelled(self) -> bool: ...


_current: ContextVar[Reporter | None] = ContextVar("plugwarden_reporter", default=None)
_process_reporter: list[Reporter | None] = [None]  # a worker's job in flight: every thread


def progress(done: float, total: float | None = None, message: str = "") -> None:
    """Report a job's progress: ``done`` of ``total`` units (None: unknown),
    with a short ``message``. Outside a job it does nothing at all; in a job
    it is cheap enough to call per frame (reports are throttled to 10 a
    second; each report that goes out is checked: finite numbers, a string)."""
    reporter = _current.get() or _process_reporter[0]
    if reporter is not None:
        reporter.progress(done, total, message)


def _checked(done: object, total: object, message: object) -> tuple[float, float | None, str]:
    if not _number(done) or (total is not None and not _number(total)):
        raise TypeError(f"progress(done, total) takes finite numbers, got {done!r}, {total!r}")
    if not isinstance(message, str):
        raise TypeError(f"progress() message must be a string, got {type(message).__name__}")
    return float(done), None if total is None else float(total), message[:MAX_MESSAGE]  # type: ignore[arg-type]


def cancelled() -> bool:
    """Whether the job this call runs for was cancelled: stop soon and
    return (what you have, or nothing). Always False outside a job."""
    reporter = _current.get() or _process_reporter[0]
    return reporter is not None and reporter.cancelled()


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def set_process_reporter(reporter: Reporter | None) -> None:
    """In a worker process: the reporter of the job in flight (None: none)."""
    _process_reporter[0] = reporter


@contextmanager
def bound(reporter: Reporter | None) -> Iterator[None]:
    """Make ``reporter`` the current one in this context (an inline call)."""
    token = _current.set(reporter)
    try:
        yield
    finally:
        _current.reset(token)


class Throttle:
    """Passes one report per :data:`INTERVAL_S` to ``emit``; the latest one
    held back is delivered by :meth:`flush`."""

    __slots__ = ("_emit", "_next", "_pending")

    def __init__(self, emit: Callable[[float, float | None, str], None]) -> None:
        self._emit = emit
        self._next = 0.0
        self._pending: tuple[float, float | None, str] | None = None

    def report(self, done: float, total: float | None, message: str) -> None:
        """Raises TypeError for a report that goes out with wrong types (the
        first report always goes out: a plugin's type bug shows at once)."""
        now = time.monotonic()
        if now < self._next:
            self._pending = (done, total, message)
            return
        self._next = now + INTERVAL_S
        self._pending = None
        self._emit(*_checked(done, total, message))

    def flush(self) -> None:
        """Deliver the last report held back (dropped if malformed: the call
        it belonged to has returned)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            try:
                checked = _checked(*pending)
            except TypeError:
                return
            self._emit(*checked)


class CallControl:
    """The host's end of one job's call.

    The runner calls :meth:`starting` once the call holds a worker, then
    :meth:`started` with a ``canceller(force)`` that reaches it once the
    request is sent, and :meth:`finished` when it ends;
    progress arrives through :meth:`progress`. :meth:`cancel` may come at any
    time, from any thread: before the start, it is delivered at the start."""

    timeout_knob = "job_timeout_s"

    def __init__(
        self,
        on_progress: Callable[[float, float | None, str], None],
        on_start: Callable[[], None],
        grace_s: float,
    ) -> None:
        self.progress = on_progress
        self._on_start = on_start
        self.grace_s = grace_s
        self._lock = threading.Lock()
        self._canceller: Callable[[bool], None] | None = None
        self.cancel_requested = False
        self.forced = False

    def starting(self) -> None:
        """The call holds a worker and its request is about to be sent: the
        job is running (stored before the plugin can run, so a host killed
        now leaves a job that reads "running")."""
        self._on_start()

    def started(self, canceller: Callable[[bool], None]) -> None:
        """The request was sent: ``canceller(force)`` reaches the call."""
        with self._lock:
            self._canceller = canceller
            if self.cancel_requested:
                canceller(self.forced)

    def finished(self) -> None:
        """No canceller runs after this returns: a late forced cancel can
        never reach the worker's next call."""
        with self._lock:
            self._canceller = None

    def cancel(self, *, force: bool = False) -> None:
        with self._lock:
            self.cancel_requested = True
            self.forced = self.forced or force
            # Under the lock, so finished() waits for it (a kill is quick).
            if self._canceller is not None:
                self._canceller(force)


class InlineReporter:
    """An inline job's reporter: reports go straight to its control."""

    __slots__ = ("_control", "_throttle")

    def __init__(self, control: CallControl) -> None:
        self._control = control
        self._throttle = Throttle(control.progress)

    def progress(self, done: float, total: float | None, message: str) -> None:
        self._throttle.report(done, total, message)

    def cancelled(self) -> bool:
        return self._control.cancel_requested

    def flush(self) -> None:
        self._throttle.flush()
