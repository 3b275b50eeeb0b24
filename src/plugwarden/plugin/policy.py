"""The restart policy (docs/guides/states.md): when a FAILED plugin, or a lost
worker, is brought back, and when to stop trying.

Pure bookkeeping, no threads: :class:`RestartBudget` counts the automatic
restarts of one plugin inside a sliding window and answers the backoff
before the next one (1 s doubling to 60 s, with jitter; a lost worker's
first replacement in the window at once), or None once the plugin is in a
crash loop.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["RESTART_MODES", "RestartBudget", "RestartPolicy"]

RESTART_MODES = ("on-failure", "never")
JITTER = 0.2  # each delay is scaled by a random factor in [0.8, 1.2]
# The jitter's own generator: the global one is the caller's (Hypothesis, for
# one, refuses draws from it on other threads while it generates data).
_JITTER = random.Random()


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """The operator's restart settings for one plugin."""

    restart: str = "on-failure"
    max_restarts: int = 5
    restart_window_s: float = 300.0
    restart_backoff_s: float = 1.0
    restart_backoff_max_s: float = 60.0
    fail_on_error: bool = False

    @property
    def automatic(self) -> bool:
        return self.restart == "on-failure"


class RestartBudget:
    """The automatic restarts of one plugin within the policy's window."""

    def __init__(
        self,
        policy: RestartPolicy,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = _JITTER.random,
    ) -> None:
        self.policy = policy
        self._clock = clock
        self._jitter = jitter
        self._times: deque[float] = deque()

    def _prune(self, now: float) -> None:
        while self._times and now - self._times[0] > self.policy.restart_window_s:
            self._times.popleft()

    @property
    def recent(self) -> int:
        """Automatic restarts inside the window, as of now."""
        self._prune(self._clock())
        return len(self._times)

    def next_delay(self, *, at_once_first: bool = False) -> float | None:
        """Take one restart from the budget: the backoff to wait before it,
        or None when that restart would be one too many (a crash loop).
        ``at_once_first``: the first restart in the window waits nothing (a
        lost worker's replacement: an occasional crash costs a fork, not a
        second); later ones wait as if it had waited."""
        now = self._clock()
        self._prune(now)
        if len(self._times) >= self.policy.max_restarts:
            return None
        self._times.append(now)
        if at_once_first and len(self._times) == 1:
            return 0.0
        base = self.policy.restart_backoff_s * 2.0 ** (len(self._times) - 1)
        capped = min(base, self.policy.restart_backoff_max_s)
        return capped * (1 - JITTER + 2 * JITTER * self._jitter())

    def reset(self) -> None:
        """A manual restart: the count starts over."""
        self._times.clear()
