"""When to poll before blocking, on either end of the worker wire.

Polling for a reply (or the next request) for a moment before sleeping
saves a sleep and a wake-up when the other side answers within microseconds
on another CPU. It only wastes CPU, and slows the other side down, when the
other side is slow or shares the CPU (a busy machine, one CPU). So a side
polls only while polling keeps catching what it waits for; after a miss it
blocks, and tries polling again every ``PROBE_EVERY`` waits (issue 14).
"""

from __future__ import annotations

__all__ = ["PROBE_EVERY", "SPIN_S", "AdaptiveSpin"]

SPIN_S = 100e-6  # how long one poll-before-block lasts
PROBE_EVERY = 32  # after a miss, waits between two tries at polling


class AdaptiveSpin:
    __slots__ = ("_on", "_skipped")

    def __init__(self) -> None:
        self._on = True
        self._skipped = 0

    def should_spin(self) -> bool:
        """Whether this wait starts with a poll (then report :meth:`caught`)."""
        if self._on:
            return True
        self._skipped += 1
        if self._skipped >= PROBE_EVERY:
            self._skipped = 0
            return True
        return False

    def caught(self, hit: bool) -> None:
        """Whether the poll of this wait caught what it waited for."""
        self._on = hit
