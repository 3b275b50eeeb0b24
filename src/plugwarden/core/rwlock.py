"""A reader-writer lock: many readers at once, writers not starved, timeouts.

Writer preference: once a writer waits, new readers queue behind it, so a
stream of readers (HTTP health polls) cannot starve a state change.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from plugwarden.exceptions import RegistryTimeout

__all__ = ["RWLock"]


class RWLock:
    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    def _wait(
        self, ready: Callable[[], bool], deadline: float | None, mode: str, timeout: float
    ) -> None:
        while not ready():
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise RegistryTimeout(mode, timeout)
            self._cond.wait(remaining)

    @staticmethod
    def _deadline(timeout: float | None) -> float | None:
        return None if timeout is None else time.monotonic() + timeout

    @contextmanager
    def read(self, timeout: float | None = None) -> Iterator[None]:
        with self._cond:
            self._wait(
                lambda: not self._writer and not self._writers_waiting,
                self._deadline(timeout),
                "read",
                timeout or 0,
            )
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def write(self, timeout: float | None = None) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            try:
                self._wait(
                    lambda: not self._writer and not self._readers,
                    self._deadline(timeout),
                    "write",
                    timeout or 0,
                )
            finally:
                self._writers_waiting -= 1
                # A writer that gave up may have been holding readers back.
                self._cond.notify_all()
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()
