"""The registry: the lock and the snapshot cache over the plugins' records
(:class:`~plugwarden.host.record.PluginRecord`, the one per-plugin object).

Every state change goes through :meth:`Registry.transition`, which enforces
the lifecycle (docs/guides/states.md) and records the transition's time
and reason. Readers (the HTTP app, the CLI) take snapshots under the read
lock; a lock that cannot be taken in time raises
:class:`~plugwarden.exceptions.RegistryTimeout`.
"""

from __future__ import annotations

import threading
from typing import Any

from plugwarden.exceptions import TransitionError, UnknownPlugin
from plugwarden.host.record import BUSY_IDLE, PluginRecord
from plugwarden.host.rwlock import RWLock
from plugwarden.host.status import PluginInfo, PluginStatus
from plugwarden.plugin.lifecycle import TERMINAL, State, Transition, bounded_reason, is_allowed
from plugwarden.result import CallResult, Guard

__all__ = ["Registry"]


class Registry:
    def __init__(self, lock_timeout_s: float = 2.0) -> None:
        self.lock_timeout_s = lock_timeout_s
        self._lock = RWLock()
        self._records: dict[str, PluginRecord] = {}  # every record the supervisor made
        # Those of plugins the host loads (a source to load), read on every
        # call without the lock (a dict's get is atomic; entries are only added).
        self.loadable: dict[str, PluginRecord] = {}
        self._entries: dict[str, PluginRecord] = {}  # those listed: past their first transition
        self._idle = threading.Condition()
        self._idle_waiters = 0
        # Bumped by every write but a call's own bookkeeping (in flight,
        # counters), under the write lock: a reader that saw the same version
        # saw the same states, reasons, health and info.
        self.version = 0

    def _changed(self, entry: PluginRecord) -> None:
        """Anything but a call's own bookkeeping changed (that clears
        ``entry.cached`` alone)."""
        entry.cached = None
        self.version += 1

    def _entry(self, name: str) -> PluginRecord:
        entry = self._entries.get(name)
        if entry is None:
            raise UnknownPlugin(name, list(self._entries))
        return entry

    def add(self, record: PluginRecord) -> None:
        """Hold ``record`` (made by the supervisor); it is listed from its
        first transition on."""
        with self._lock.write(self.lock_timeout_s):
            self._records[record.name] = record
            if record.source is not None:
                self.loadable[record.name] = record

    def remove(self, name: str) -> None:
        """``name`` is gone (uninstalled): no longer listed."""
        with self._lock.write(self.lock_timeout_s):
            self._records.pop(name, None)
            self._entries.pop(name, None)
            self.loadable.pop(name, None)
            self.version += 1

    def switch(self, name: str, reason: str, info: PluginInfo) -> int:
        """``name`` now runs another version (an upgrade, or its rollback):
        INITIALIZED with ``reason``, a new generation (reports of the last
        change nothing), and the calls still in flight on the last one
        counted until they end. Returns the new generation."""
        reason = bounded_reason(reason)
        with self._lock.write(self.lock_timeout_s):
            entry = self._entry(name)
            entry.carried.add(entry.generation)
            entry.generation += 1
            entry.move(State.INITIALIZED, reason)
            entry.info = info
            entry.health, entry.health_failures, entry.healthy = None, 0, True
            self._changed(entry)
            return entry.generation

    def record(self, name: str) -> PluginRecord | None:
        """``name``'s record, for the host's own parts; None for a name the
        host cannot load (unknown, claimed twice, or no URL can carry it)."""
        return self.loadable.get(name)

    def records(self) -> list[PluginRecord]:
        """Every record of a plugin the host loads (see :meth:`record`)."""
        return list(self.loadable.values())

    def next_generation(self, name: str) -> int:
        """Begin a bring-up of ``name``: from now on, reports of the last
        one change nothing. Returns its number."""
        with self._lock.write(self.lock_timeout_s):
            record = self._records[name]
            record.generation += 1
            record.cached = None
            return record.generation

    def transition(
        self,
        name: str,
        state: State,
        reason: str = "",
        *,
        restart: bool = False,
        generation: int | None = None,
        info: PluginInfo | None = None,
    ) -> bool:
        """Move ``name`` to ``state``; a new name is created by its first
        transition. ``restart`` begins a new bring-up, numbered ``generation``;
        otherwise a ``generation`` that is no longer current changes nothing
        (returns False). Raises :class:`TransitionError` if the lifecycle
        forbids the move."""
        reason = bounded_reason(reason)
        with self._lock.write(self.lock_timeout_s):
            entry = self._entries.get(name)
            if entry is not None and not restart and entry.stale(generation):
                return False
            current = None if entry is None else entry.state
            if not is_allowed(current, state, restart=restart):
                raise TransitionError(name, None if current is None else current.value, state)
            if entry is None:  # the first transition lists the record
                entry = self._records.get(name) or PluginRecord(name, None)
                self._records[name] = self._entries[name] = entry
            entry.move(state, reason)
            if info is not None:
                entry.info = info
            if restart:
                entry.generation = generation or entry.generation + 1
                entry.in_flight = 0
                entry.carried.clear()
                entry.health = None
                entry.health_failures = 0
                entry.healthy = True
            self._changed(entry)
            return True

    def fail(
        self, name: str, reason: str, generation: int | None = None, *, again: bool = False
    ) -> bool:
        """FAILED with ``reason`` unless already terminal (``again``: unless
        UNAVAILABLE, a FAILED plugin's reason is replaced) or ``generation``
        is no longer current; whether it moved."""
        reason = bounded_reason(reason)
        with self._lock.write(self.lock_timeout_s):
            entry = self._entry(name)
            terminal = entry.state is State.UNAVAILABLE if again else entry.state in TERMINAL
            if terminal or entry.stale(generation):
                return False
            entry.move(State.FAILED, reason)
            self._changed(entry)
            return True

    def note(self, name: str, reason: str, generation: int | None = None) -> None:
        """A history line that changes no state (a restart's cause, a worker replaced)."""
        reason = bounded_reason(reason)
        with self._lock.write(self.lock_timeout_s):
            entry = self._entry(name)
            if entry.state is not None and not entry.stale(generation):
                entry.history.append(Transition.now(entry.state, reason))
                self._changed(entry)

    def record_trip(self, name: str, guard: Guard) -> None:
        """A guard that tripped between calls (no call's result counts it)."""
        with self._lock.write(self.lock_timeout_s):
            entry = self._entry(name)
            entry.metrics.record_trip(guard)
            self._changed(entry)

    def record_restart(self, name: str, cause: str) -> None:
        with self._lock.write(self.lock_timeout_s):
            entry = self._entry(name)
            entry.metrics.record_restart(cause)
            self._changed(entry)

    def set_info(self, name: str, info: PluginInfo) -> None:
        with self._lock.write(self.lock_timeout_s):
            entry = self._entry(name)
            entry.info = info
            self._changed(entry)

    def set_health(
        self, name: str, report: dict[str, Any], generation: int, failures_allowed: int
    ) -> bool | None:
        """Store a health check's report; ``failures_allowed`` failed checks
        in a row make the plugin unhealthy. Returns the new ``healthy`` when
        it flipped, else None."""
        with self._lock.write(self.lock_timeout_s):
            entry = self._entry(name)
            if entry.stale(generation):
                return None
            entry.health = report
            entry.health_failures = 0 if report.get("ok") else entry.health_failures + 1
            healthy = entry.health_failures < failures_allowed
            flipped = healthy != entry.healthy
            entry.healthy = healthy
            self._changed(entry)
            return healthy if flipped else None

    def begin_call(self, name: str) -> PluginStatus | int:
        """Count a call in flight (the plugin reads RUNNING while one is).
        Returns the generation it runs against, or the status that refuses it."""
        # On every call: the lock entered without a context manager (~1 us).
        self._lock.acquire_write(self.lock_timeout_s)
        try:
            entry = self._entry(name)
            if entry.state not in BUSY_IDLE:
                return entry.snapshot()
            entry.in_flight += 1
            entry.cached = None  # a call's own bookkeeping: no version bump
            return entry.generation
        finally:
            self._lock.release_write()

    def end_call(self, name: str, result: CallResult, generation: int) -> None:
        """Record a finished call. A call of an older generation (the plugin
        was restarted meanwhile) counts in the metrics and nothing else."""
        self._lock.acquire_write(self.lock_timeout_s)
        try:
            entry = self._entry(name)
            entry.cached = None
            entry.metrics.record(result)
            if entry.stale(generation) and generation not in entry.carried:
                return
            entry.in_flight = max(0, entry.in_flight - 1)
            if not entry.in_flight:
                entry.carried.clear()
        finally:
            self._lock.release_write()
        if self._idle_waiters:
            with self._idle:
                self._idle.notify_all()

    def in_flight(self) -> int:
        """Calls in flight across every plugin."""
        with self._lock.read(self.lock_timeout_s):
            return sum(entry.in_flight for entry in self._entries.values())

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no call is in flight, at most ``timeout_s``; whether none is."""
        with self._idle:
            self._idle_waiters += 1
            try:
                return self._idle.wait_for(lambda: not self.in_flight(), timeout_s)
            finally:
                self._idle_waiters -= 1

    def _timeout(self, lock_timeout: float | None) -> float:
        return self.lock_timeout_s if lock_timeout is None else lock_timeout

    def status(self, name: str, lock_timeout: float | None = None) -> PluginStatus:
        """A snapshot of ``name``; ``lock_timeout`` 0 fails at once if a writer is in."""
        with self._lock.read(self._timeout(lock_timeout)):
            return self._entry(name).snapshot()

    def cached_status(self, name: str) -> PluginStatus | None:
        """``name``'s snapshot without taking the lock, when one is cached
        (None: unknown, or changed since the last read; use :meth:`status`).
        Writers clear the cache under the write lock and only readers under
        the read lock fill it, so this is a state the record was in, never a
        half-written one."""
        entry = self._entries.get(name)
        return None if entry is None else entry.cached

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

    def hold_write_lock(self, *, stale: bool = False) -> Any:
        """The write lock itself, for tests and maintenance that must block
        readers. Readers of an unchanged record's cached snapshot do not
        wait for it; ``stale=True`` drops those snapshots and bumps the
        version, as a write does, so that every reader needs the lock."""
        held = self._lock.write(self.lock_timeout_s)
        if stale:
            for entry in self._entries.values():
                self._changed(entry)
        return held
