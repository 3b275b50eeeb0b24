"""The seam between the host and where a plugin's code runs.

A :class:`Runner` loads one plugin and calls its hooks, enforcing the timeout
and memory limits in its own way: ``inline`` in the host process (it can give
up on a call but not stop it), ``process`` in a worker (it kills the worker).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from plugwarden.core.guards import Limits, Outcome
from plugwarden.core.result import Guard

__all__ = ["BUSY", "Attempt", "Runner", "memory_reason", "timeout_reason"]

BUSY = "Busy"


@dataclass(slots=True)
class Attempt:
    """What a runner saw of one hook call. A tripped guard means the plugin
    can no longer be trusted: the host marks it FAILED with ``outcome.error``."""

    outcome: Outcome
    guard: Guard | None = None


class Runner(Protocol):
    limits: Limits

    def load(self) -> None:
        """Import and register the plugin. Raises ``LoadError`` with the reason."""

    def call(
        self, hook: str, kwargs: dict[str, Any], timeout_s: float, wait_s: float | None = None
    ) -> Attempt:
        """Call one hook; never raises. ``wait_s`` bounds the wait for a free
        worker (None: wait); past it the attempt is ``Busy``, nothing ran."""

    def close(self) -> None:
        """Release everything; a runner is not reused after close."""

    def resident_bytes(self) -> int | None:
        """Memory of the plugin's own process tree, or None where not separate."""

    def pids(self) -> list[int]:
        """The plugin's live worker processes (none for inline)."""


def timeout_reason(hook: str, timeout_s: float) -> str:
    knob = {"run": "timeout_s", "health": "health_timeout_s"}.get(hook, "load_timeout_s")
    what = "Plugin execution" if hook == "run" else f"Plugin {hook}"
    return f"{what} timed out after {timeout_s:g}s. Increase {knob} if needed."


def memory_reason(limit_mb: float, peak_bytes: int) -> str:
    return (
        f"Plugin exceeded {limit_mb:g} MB memory limit (peak seen {peak_bytes / 2**20:.0f} MB). "
        "Increase memory_mb if needed."
    )
