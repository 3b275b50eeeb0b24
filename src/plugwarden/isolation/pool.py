"""The pool of workers behind one runner, whatever a worker is (a process
here, a Ray actor there): which serve, which are free, which are being
prepared, and whether the pool is closing.

A call takes a free worker, waiting at most its wait; a lost worker leaves
the pool (the runner reports it); :meth:`WorkerPool.refill` brings the pool
back to its size. Thread-safe: one condition guards it all.
:class:`PooledRunner` is what a runner with such a pool does the same,
whatever a worker is; a runner supplies how to spawn, prepare, call and
discard one.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

from plugwarden.error_types import ErrorType
from plugwarden.exceptions import LoadError
from plugwarden.isolation.reporting import CallControl
from plugwarden.isolation.runner import ENDED, LossHandler, WorkerLoss
from plugwarden.plugin.limits import Limits
from plugwarden.result import CallResult, Guard

__all__ = ["PoolMember", "PooledRunner", "WorkerPool"]


class PoolMember(Protocol):
    lost: bool  # out of the pool for good (killed, dead, or discarded)


W = TypeVar("W", bound=PoolMember)


class WorkerPool(Generic[W]):
    def __init__(self, size: int) -> None:
        self.size = size
        self._lock = threading.Lock()  # entered directly: a C-level with-block
        self._cond = threading.Condition(self._lock)
        self.serving: list[W] = []  # free or busy
        self._free: collections.deque[W] = collections.deque()
        self.preparing: list[W] = []
        self.closing: str | None = None  # the ErrorType calls in flight end with
        self._replacing = False  # a lost worker is being replaced: calls wait for it

    def acquire(self, wait_s: float) -> W | CallResult:
        """A free worker, or the result of a call that got none."""
        with self._lock:
            if self._free and self.closing is None:  # the common case: no wait
                return self._free.popleft()
            self._cond.wait_for(
                lambda: (
                    self._free or self.closing is not None or not (self.serving or self._replacing)
                ),
                wait_s,
            )
            if self.closing is not None:
                return CallResult.failure(ENDED[self.closing], self.closing)
            if self._free:
                return self._free.popleft()
            if not self.serving:
                return CallResult.failure(
                    "The plugin has no worker able to serve; it is being restarted.",
                    ErrorType.PLUGIN_NOT_AVAILABLE,
                )
        return CallResult.failure(
            "Every worker stayed busy until the call's deadline (its timeout_s from when it "
            "arrived). Retry later, or raise workers.",
            ErrorType.BUSY,
        )

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no call holds a worker, at most ``timeout_s``; whether none does."""
        with self._lock:
            return self._cond.wait_for(
                lambda: self.closing is not None or len(self._free) == len(self.serving),
                timeout_s,
            )

    def release(self, worker: W) -> None:
        """A call is done with ``worker``: it is free again, unless lost."""
        with self._lock:
            if worker in self.serving and not worker.lost and self.closing is None:
                self._free.append(worker)
                self._cond.notify_all()

    def serve(self, workers: list[W]) -> bool:
        """``workers`` (prepared) join the pool; False when it is closing."""
        with self._lock:
            for worker in workers:
                if worker in self.preparing:
                    self.preparing.remove(worker)
            if self.closing is not None:
                return False
            self.serving.extend(workers)
            self._free.extend(workers)
            self._cond.notify_all()
            return True

    def leave(self, worker: W) -> int | None:
        """``worker`` is lost: out of the pool. The number still serving, or
        None when the loss is not to be reported (already lost, never
        served, or the pool is closing). Calls wait for its replacement
        instead of failing at once, until :meth:`refill` or :meth:`close`
        (the supervisor does one or the other for every reported loss)."""
        with self._lock:
            if worker.lost:
                return None
            worker.lost = True
            report = worker in self.serving and self.closing is None
            if report:
                self._replacing = True
            if worker in self.serving:
                self.serving.remove(worker)
            if worker in self._free:
                self._free.remove(worker)
            self._cond.notify_all()
            return len(self.serving) if report else None

    def refill(
        self,
        spawn: Callable[[], W],
        prepare: Callable[[W], str | None],
        discard: Callable[[W], None],
    ) -> str | None:
        """New workers until the pool has ``size`` serving; None when done,
        else why a new one could not be made ready."""
        try:
            while True:
                with self._lock:
                    if self.closing is not None or len(self.serving) >= self.size:
                        return None
                try:
                    worker = spawn()
                except LoadError as exc:
                    return exc.reason
                with self._lock:
                    self.preparing.append(worker)
                reason = prepare(worker)
                if reason is None and self.serve([worker]):
                    continue
                with self._lock:
                    if worker in self.preparing:
                        self.preparing.remove(worker)
                discard(worker)
                return reason
        finally:
            with self._lock:
                self._replacing = False
                self._cond.notify_all()

    def close(self, why: str) -> list[W] | None:
        """Calls in flight and to come end with ``why``; every worker, to be
        discarded (None when already closing)."""
        with self._lock:
            if self.closing is not None:
                return None
            self.closing = why
            workers = [*self.serving, *self.preparing]
            self.serving.clear()
            self._free.clear()
            self.preparing.clear()
            self._cond.notify_all()
            return workers


class PooledRunner(Generic[W]):
    """The part of :class:`~plugwarden.isolation.runner.Runner` that only moves
    workers in and out of the pool."""

    replacement_note: str | None = None  # how the last replacement went, for the history

    limits: Limits
    _pool: WorkerPool[W]
    _config: dict[str, Any]
    _on_loss: LossHandler

    def _spawn(self) -> W:
        """A new worker with the plugin imported; raises LoadError."""
        raise NotImplementedError

    def _prepare(self, worker: W) -> str | None:
        """init and validate on ``worker``: None when ready, else why not."""
        raise NotImplementedError

    def _discard(self, worker: W) -> None:
        raise NotImplementedError

    def _call_on(
        self,
        worker: W,
        hook: str,
        kwargs: dict[str, Any],
        timeout_s: float,
        control: CallControl | None,
    ) -> CallResult:
        raise NotImplementedError

    def load(self) -> None:
        for _ in range(self.limits.workers):
            try:
                self._pool.preparing.append(self._spawn())
            except LoadError:
                self.close(ErrorType.CLOSED)
                raise

    def initialise(self, config: dict[str, Any]) -> str | None:
        self._config = config
        for worker in list(self._pool.preparing):
            reason = self._prepare(worker)
            if reason is not None:
                return reason
        self._pool.serve(list(self._pool.preparing))
        return None

    def _lose(self, worker: W, reason: str, guard: Guard | None, *, during_call: bool) -> None:
        """``worker`` can no longer serve: out of the pool, discarded, and
        reported (once). ``guard`` None: the host ended it (a forced cancel)."""
        if worker.lost:
            return
        serving = self._pool.leave(worker)
        self._discard(worker)
        if serving is not None:
            self._on_loss(WorkerLoss(reason, guard, during_call, serving))

    def replace_lost(self) -> str | None:
        return self._pool.refill(self._spawn, self._prepare, self._discard)

    def call(
        self,
        hook: str,
        kwargs: dict[str, Any],
        timeout_s: float,
        wait_s: float | None = None,
        control: CallControl | None = None,
    ) -> CallResult:
        worker = self._pool.acquire(timeout_s if wait_s is None else wait_s)
        if isinstance(worker, CallResult):
            return worker
        try:
            return self._call_on(worker, hook, kwargs, timeout_s, control)
        finally:
            self._pool.release(worker)

    def wait_idle(self, timeout_s: float) -> bool:
        return self._pool.wait_idle(timeout_s)

    def close(self, why: str) -> None:
        for worker in self._pool.close(why) or []:
            self._discard(worker)
