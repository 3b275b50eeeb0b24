"""Plugin lifecycle states and the transitions allowed between them
(docs/guides/states.md)."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass
from datetime import UTC, datetime

__all__ = ["REASON_LIMIT", "TERMINAL", "State", "Transition", "bounded_reason", "is_allowed"]


class State(enum.StrEnum):
    LOADED = "LOADED"
    INITIALIZED = "INITIALIZED"
    RUNNING = "RUNNING"
    FAILED = "FAILED"
    UNAVAILABLE = "UNAVAILABLE"


TERMINAL = frozenset({State.FAILED, State.UNAVAILABLE})

# Where a pipeline may begin: a fresh plugin or a manual restart.
_ENTRY = frozenset({State.LOADED, State.FAILED, State.UNAVAILABLE})

_ALLOWED: dict[State, frozenset[State]] = {
    State.LOADED: frozenset({State.INITIALIZED, State.FAILED}),
    State.INITIALIZED: frozenset({State.RUNNING, State.FAILED}),
    State.RUNNING: frozenset({State.INITIALIZED, State.FAILED}),
    State.FAILED: frozenset(),
    State.UNAVAILABLE: frozenset(),
}


def is_allowed(current: State | None, target: State, *, restart: bool = False) -> bool:
    """Whether ``current -> target`` is legal. ``current`` is None for a new
    plugin; ``restart`` is the operator's manual restart, which may leave any
    state, terminal ones included, to begin the pipeline again."""
    if current is None or restart:
        return target in _ENTRY
    return target in _ALLOWED[current]


@dataclass(frozen=True, slots=True)
class Transition:
    state: State
    reason: str
    timestamp: float  # seconds since the epoch; a datetime is built only when read

    @classmethod
    def now(cls, state: State, reason: str) -> Transition:
        return cls(state, reason, time.time())

    @property
    def at(self) -> datetime:
        return datetime.fromtimestamp(self.timestamp, UTC)

    def to_dict(self) -> dict[str, str]:
        return {"state": self.state.value, "reason": self.reason, "at": iso(self.at)}


def iso(moment: datetime) -> str:
    """ISO 8601 UTC with a trailing Z, the form Prometheus and JS both read."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# Characters of a reason kept: a plugin's text (validate()'s verdict, an
# exception's message) can be any size, and each record carries its history.
REASON_LIMIT = 2000


def bounded_reason(reason: str) -> str:
    """``reason``, cut at ``REASON_LIMIT`` characters with a note of the rest."""
    if len(reason) <= REASON_LIMIT:
        return reason
    return f"{reason[:REASON_LIMIT]}... [{len(reason) - REASON_LIMIT} more characters]"
