"""Background health checks: each available plugin's ``health`` hook runs on a
period, with its own short budget, and its report (or failure) is stored in
the registry. Readers (the HTTP app) never wait on plugin code."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from plugwarden.exceptions import PlugwardenError

__all__ = ["HealthPoller"]

log = logging.getLogger("plugwarden.health")


class HealthPoller:
    """Calls ``check(name)`` for every name of ``names()`` each ``interval_s``.

    Checks of different plugins run in parallel; a plugin whose previous check
    has not returned is skipped, so one hung hook never piles up threads."""

    def __init__(
        self,
        names: Callable[[], list[str]],
        check: Callable[[str], Any],
        interval_s: float,
    ) -> None:
        self._names = names
        self._check = check
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(8, thread_name_prefix="plugwarden-health")
        self._busy: set[str] = set()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="plugwarden-health", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.round()
            except PlugwardenError as exc:  # the registry busy: the next round will do
                log.warning("health round skipped: %s", exc)
            # A failed round must never end the poller.
            except Exception:
                log.exception("health round failed")
            self._stop.wait(max(0.0, self._interval_s - (time.monotonic() - started)))

    def round(self) -> None:
        for name in self._names():
            if self._stop.is_set():
                return
            with self._lock:
                if name in self._busy:
                    continue
                self._busy.add(name)
            self._pool.submit(self._one, name)

    def _one(self, name: str) -> None:
        try:
            self._check(name)
        except PlugwardenError as exc:  # the registry busy: the next round will do
            log.warning("health check of %r skipped: %s", name, exc)
        # A health round must never end the poller.
        except Exception:
            log.exception("health check of %r failed", name)
        finally:
            with self._lock:
                self._busy.discard(name)

    def stop(self) -> None:
        """No more rounds; checks in progress go on (see :meth:`join`)."""
        self._stop.set()

    def join(self) -> None:
        """Wait for the poller and every check in progress to end (once the
        runners are closed, a hung check ends at once)."""
        if self._thread.is_alive():
            self._thread.join()  # after this, nothing submits to the pool
        self._pool.shutdown(wait=True, cancel_futures=True)
