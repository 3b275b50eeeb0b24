"""When to poll before blocking, on either end of the worker wire.

Polling for a reply (or the next request) for a moment before sleeping
saves a sleep and a wake-up when the other side answers within microseconds
on another CPU. It only wastes CPU, and slows the other side down, when the
other side is slow or shares the CPU (a busy machine, one CPU). So a side
polls only while polling keeps catching what it waits for; after a miss it
blocks, and tries polling again after ``PROBE_EVERY`` waits, then after
twice as many each time a try misses again, up to ``PROBE_MOST``:
where the other side shares this CPU for good (pinned, or a busy machine),
a try that cannot catch anything costs a whole poll, and is made ever less
often; one catch starts polling again at once.
"""

from __future__ import annotations

__all__ = ["PROBE_EVERY", "PROBE_MOST", "SPIN_S", "AdaptiveSpin"]

SPIN_S = 100e-6  # how long one poll-before-block lasts
PROBE_EVERY = 32  # after a miss, waits before the next try at polling
PROBE_MOST = 1024  # the longest such gap, after tries that kept missing


class AdaptiveSpin:
    __slots__ = ("_every", "_on", "_skipped")

    def __init__(self) -> None:
        self._on = True
        self._skipped = 0
        self._every = PROBE_EVERY  # waits between two tries while off

    def should_spin(self) -> bool:
        """Whether this wait starts with a poll (then report :meth:`caught`)."""
        if self._on:
            return True
        self._skipped += 1
        if self._skipped >= self._every:
            self._skipped = 0
            return True
        return False

    def caught(self, hit: bool) -> None:
        """Whether the poll of this wait caught what it waited for."""
        if hit:
            self._every = PROBE_EVERY
        elif not self._on:  # a try that missed: the next one comes later
            self._every = min(2 * self._every, PROBE_MOST)
        self._on = hit
