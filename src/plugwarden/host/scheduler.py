"""Deferred work with one owner: a timer thread hands due actions to a small
pool, so a slow restart never delays another plugin's. Used by the
supervisor for backoff; :meth:`Scheduler.close` cancels what is pending and
waits for what runs."""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

__all__ = ["Scheduler"]

log = logging.getLogger("plugwarden.scheduler")


class Scheduler:
    def __init__(self, workers: int = 4, name: str = "plugwarden-restart") -> None:
        self._due: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()
        self._wake = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None
        # Its threads start with the first submitted action.
        self._pool = ThreadPoolExecutor(workers, name)

    def after(self, delay_s: float, action: Callable[[], None]) -> None:
        """Run ``action`` on a pool thread once ``delay_s`` has passed."""
        with self._wake:
            if self._closed:
                return
            heapq.heappush(self._due, (time.monotonic() + delay_s, next(self._order), action))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="plugwarden-scheduler", daemon=True
                )
                self._thread.start()
            self._wake.notify()

    def _loop(self) -> None:
        with self._wake:
            while not self._closed:
                if not self._due:
                    self._wake.wait()
                    continue
                when = self._due[0][0]
                now = time.monotonic()
                if when > now:
                    self._wake.wait(when - now)
                    continue
                _, _, action = heapq.heappop(self._due)
                self._pool.submit(self._run, action)

    @staticmethod
    def _run(action: Callable[[], None]) -> None:
        try:
            action()
        # A scheduled action's bug must not end the scheduler's pool thread quietly.
        except Exception:
            log.exception("scheduled action failed")

    def close(self) -> None:
        """Cancel what is pending; wait for the actions already running."""
        with self._wake:
            self._closed = True
            self._due.clear()
            thread = self._thread
            self._wake.notify()
        if thread is not None:
            thread.join()
        self._pool.shutdown(wait=True, cancel_futures=True)
