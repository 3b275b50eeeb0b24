"""The registry: the one place that owns plugin states (SPEC section 3).

Every state change goes through :meth:`Registry.transition`, which enforces
the lifecycle and records the transition's time and reason. Readers (the HTTP
app, the CLI) take snapshots under the read lock; a lock that cannot be taken
in time raises :class:`~plugwarden.exceptions.RegistryTimeout`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from plugwarden.core.lifecycle import TERMINAL, State, Transition, is_allowed
from plugwarden.core.metrics import PluginMetrics
from plugwarden.core.result import CallResult
from plugwarden.core.rwlock import RWLock
from plugwarden.exceptions import TransitionError, UnknownPlugin

__all__ = ["PluginInfo", "PluginStatus", "Registry"]

HISTORY_LIMIT = 100


@dataclass(frozen=True, slots=True)
class PluginInfo:
    """What is known of a plugin besides its state."""

    description: str = ""
    version: str = ""
    distribution: str = ""
    isolation: str = ""
    tools: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PluginStatus:
    """A snapshot of one plugin's record; safe to hand out."""

    name: str
    state: State
    reason: str
    info: PluginInfo
    history: tuple[Transition, ...]
    metrics: dict[str, Any]
    in_flight: int
    health: dict[str, Any] | None

    @property
    def available(self) -> bool:
        return self.state in (State.INITIALIZED, State.RUNNING)

    def to_dict(self, *, history: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.name,
            "state": self.state.value,
            "reason": self.reason,
            "description": self.info.description,
            "version": self.info.version,
            "distribution": self.info.distribution,
            "isolation": self.info.isolation,
            "tools": list(self.info.tools),
            "in_flight": self.in_flight,
            **self.metrics,
            "health": self.health,
        }
        if history:
            data["history"] = [t.to_dict() for t in self.history]
        return data


@dataclass(slots=True)
class _Entry:
    name: str
    state: State
    reason: str
    info: PluginInfo = field(default_factory=PluginInfo)
    history: deque[Transition] = field(default_factory=lambda: deque(maxlen=HISTORY_LIMIT))
    metrics: PluginMetrics = field(default_factory=PluginMetrics)
    in_flight: int = 0
    health: dict[str, Any] | None = None

    def move(self, state: State, reason: str) -> None:
        self.state = state
        self.reason = reason
        self.history.append(Transition.now(state, reason))
        if state is State.RUNNING:
            return
        if state is State.INITIALIZED:
            if not self.metrics.uptime_seconds:
                self.metrics.mark_up()
        elif state in TERMINAL or state is State.LOADED:
            self.metrics.mark_down()

    def snapshot(self) -> PluginStatus:
        return PluginStatus(
            self.name,
            self.state,
            self.reason,
            self.info,
            tuple(self.history),
            self.metrics.snapshot(),
            self.in_flight,
            None if self.health is None else dict(self.health),
        )


class Registry:
    def __init__(self, lock_timeout_s: float = 2.0) -> None:
        self.lock_timeout_s = lock_timeout_s
        self._lock = RWLock()
        self._entries: dict[str, _Entry] = {}

    def _entry(self, name: str) -> _Entry:
        entry = self._entries.get(name)
        if entry is None:
            raise UnknownPlugin(name, list(self._entries))
        return entry

    def transition(
        self,
        name: str,
        state: State,
        reason: str = "",
        *,
        restart: bool = False,
        info: PluginInfo | None = None,
    ) -> None:
        """Move ``name`` to ``state``; a new name is created by its first
        transition. Raises :class:`TransitionError` if the lifecycle forbids it."""
        with self._lock.write(self.lock_timeout_s):
            entry = self._entries.get(name)
            current = None if entry is None else entry.state
            if not is_allowed(current, state, restart=restart):
                raise TransitionError(name, None if current is None else current.value, state)
            if entry is None:
                entry = self._entries[name] = _Entry(name, state, reason)
                entry.history.append(Transition.now(state, reason))
            else:
                entry.move(state, reason)
            if info is not None:
                entry.info = info
            if restart:
                entry.in_flight = 0
                entry.health = None

    def fail(self, name: str, reason: str) -> bool:
        """FAILED with ``reason`` unless already terminal; whether it moved."""
        with self._lock.write(self.lock_timeout_s):
            entry = self._entry(name)
            if entry.state in TERMINAL:
                return False
            entry.move(State.FAILED, reason)
            return True

    def set_info(self, name: str, info: PluginInfo) -> None:
        with self._lock.write(self.lock_timeout_s):
            self._entry(name).info = info

    def set_health(self, name: str, report: dict[str, Any] | None) -> None:
        with self._lock.write(self.lock_timeout_s):
            self._entry(name).health = report

    def begin_call(self, name: str) -> PluginStatus | None:
        """Count a call in flight (INITIALIZED -> RUNNING). Returns None when the
        call may go ahead, else the status that refuses it."""
        with self._lock.write(self.lock_timeout_s):
            entry = self._entry(name)
            if entry.state not in (State.INITIALIZED, State.RUNNING):
                return entry.snapshot()
            entry.in_flight += 1
            if entry.state is State.INITIALIZED:
                entry.move(State.RUNNING, f"{entry.in_flight} call(s) in flight")
            return None

    def end_call(self, name: str, result: CallResult, failure: str | None = None) -> None:
        """Record a finished call; ``failure`` (a reason) makes the plugin FAILED."""
        with self._lock.write(self.lock_timeout_s):
            entry = self._entry(name)
            entry.metrics.record(result)
            entry.in_flight = max(0, entry.in_flight - 1)
            if entry.state is not State.RUNNING:
                return  # failed, or restarted, while the call was in flight
            if failure is not None:
                entry.move(State.FAILED, failure)
            elif not entry.in_flight:
                entry.move(State.INITIALIZED, "ready")

    def _timeout(self, lock_timeout: float | None) -> float:
        return self.lock_timeout_s if lock_timeout is None else lock_timeout

    def status(self, name: str, lock_timeout: float | None = None) -> PluginStatus:
        """A snapshot of ``name``; ``lock_timeout`` 0 fails at once if a writer is in."""
        with self._lock.read(self._timeout(lock_timeout)):
            return self._entry(name).snapshot()

    def statuses(self, lock_timeout: float | None = None) -> list[PluginStatus]:
        with self._lock.read(self._timeout(lock_timeout)):
            return [entry.snapshot() for entry in self._entries.values()]

    def histogram(self, name: str) -> tuple[list[tuple[str, int]], float]:
        with self._lock.read(self.lock_timeout_s):
            return self._entry(name).metrics.histogram()

    def names(self) -> list[str]:
        with self._lock.read(self.lock_timeout_s):
            return list(self._entries)

    def __contains__(self, name: object) -> bool:
        with self._lock.read(self.lock_timeout_s):
            return name in self._entries

    def hold_write_lock(self) -> Any:
        """The write lock itself, for tests and maintenance that must block readers."""
        return self._lock.write(self.lock_timeout_s)
