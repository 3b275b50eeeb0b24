"""A reader-writer lock: many readers at once, writers not starved, timeouts.

Writer preference: once a writer waits, new readers queue behind it, so a
stream of readers (HTTP health polls) cannot starve a state change. Every
call takes this lock twice, so the uncontended path is kept short: no
generator context managers, and no notify unless someone waits.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from types import TracebackType

from plugwarden.exceptions import RegistryTimeout

__all__ = ["RWLock"]


class RWLock:
    def __init__(self) -> None:
        # Entered directly on the fast paths (a C-level with-block; the
        # Condition's own __enter__ is a Python call), waited on through _cond.
        self._mutex = threading.Lock()
        self._cond = threading.Condition(self._mutex)
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0
        self._waiters = 0

    def _block(self, mode: str, timeout: float | None) -> None:
        """Wait (holding ``_cond``) until ``mode`` may enter; raise on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self._waiters += 1
        try:
            while not self._may_enter(mode):
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise RegistryTimeout(mode, timeout or 0.0)
                self._cond.wait(remaining)
        finally:
            self._waiters -= 1

    def _may_enter(self, mode: str) -> bool:
        if mode == "read":
            return not self._writer and not self._writers_waiting
        return not self._writer and not self._readers

    def acquire_read(self, timeout: float | None = None) -> None:
        with self._mutex:
            if self._writer or self._writers_waiting:
                self._block("read", timeout)
            self._readers += 1

    def release_read(self) -> None:
        with self._mutex:
            self._readers -= 1
            if not self._readers and self._waiters:
                self._cond.notify_all()

    def acquire_write(self, timeout: float | None = None) -> None:
        with self._mutex:
            if self._writer or self._readers:
                self._writers_waiting += 1
                try:
                    self._block("write", timeout)
                finally:
                    self._writers_waiting -= 1
                    if self._waiters:
                        # A writer that gave up may have been holding readers back.
                        self._cond.notify_all()
            self._writer = True

    def release_write(self) -> None:
        with self._mutex:
            self._writer = False
            if self._waiters:
                self._cond.notify_all()

    def read(self, timeout: float | None = None) -> _Held:
        self.acquire_read(timeout)
        return _Held(self.release_read)

    def write(self, timeout: float | None = None) -> _Held:
        self.acquire_write(timeout)
        return _Held(self.release_write)


class _Held:
    """The lock, held: release it on leaving the ``with`` block."""

    __slots__ = ("_release",)

    def __init__(self, release: Callable[[], None]) -> None:
        self._release = release

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._release()
