"""The one per-plugin record: everything the host holds for one plugin.

A :class:`PluginRecord` is made by the supervisor when it finds the plugin
and lives as long as the host. It holds the plugin's lifecycle (state,
reason, history), its health, metrics and calls in flight, the bring-up it
belongs to (``generation``: a report of an older one changes nothing), and
what runs it (settings, runner, restart budget). The
:class:`~plugwarden.host.registry.Registry` is the lock and the snapshot
cache over the records; only the host package touches a record.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from plugwarden.host.metrics import PluginMetrics
from plugwarden.host.status import PluginInfo, PluginStatus
from plugwarden.plugin.lifecycle import State, Transition
from plugwarden.plugin.limits import Limits
from plugwarden.plugin.manifest import Manifest
from plugwarden.plugin.policy import RestartBudget, RestartPolicy

if TYPE_CHECKING:  # a record is a holder: it calls none of these
    from plugwarden.isolation.process.sandbox import Sandbox
    from plugwarden.isolation.runner import Runner
    from plugwarden.plugin.discovery import PluginSource
    from plugwarden.settings import PluginSettings

__all__ = ["BUSY_IDLE", "HISTORY_LIMIT", "PluginRecord"]

HISTORY_LIMIT = 100
BUSY_IDLE = (State.RUNNING, State.INITIALIZED)


@dataclass(slots=True, eq=False)
class PluginRecord:
    name: str
    # None: a name the host lists but cannot load (claimed twice, or no URL can carry it).
    source: PluginSource | None
    # This bring-up's settings (None: none resolved, as for a name it cannot
    # load); set with use(), which keeps manifest and limits, read on every call.
    settings: PluginSettings | None = None
    # The lifecycle; None until the first transition (the plugin is not listed yet).
    state: State | None = None
    reason: str = ""
    info: PluginInfo = field(default_factory=PluginInfo)
    history: deque[Transition] = field(default_factory=lambda: deque(maxlen=HISTORY_LIMIT))
    metrics: PluginMetrics = field(default_factory=PluginMetrics)
    in_flight: int = 0
    health: dict[str, Any] | None = None
    health_failures: int = 0  # failed health checks in a row
    healthy: bool = True
    generation: int = 0  # bumped by every bring-up; stale reports are ignored
    # Generations switched away from (an upgrade, a rollback) whose calls may
    # still be in flight: they count until they end (cleared when none is).
    carried: set[int] = field(default_factory=set)
    cached: PluginStatus | None = None  # the snapshot, until the record changes
    runner: Runner | None = None
    route: Any = None  # where the runner reports lost workers (supervisor.LossRoute)
    sandbox: Sandbox | None = None  # this bring-up's, drawn once its checks pass
    budget: RestartBudget = field(default_factory=lambda: RestartBudget(RestartPolicy()))
    restart_pending: bool = False  # an automatic restart or replacement is scheduled
    lock: threading.Lock = field(default_factory=threading.Lock)  # one bring-up at a time
    manifest: Manifest = field(init=False)  # the settings' (plain attributes: read per call)
    limits: Limits = field(init=False)

    def __post_init__(self) -> None:
        if self.settings is None:
            self.manifest, self.limits = Manifest(), Limits()
        else:
            self.use(self.settings)

    def use(self, settings: PluginSettings) -> PluginSettings:
        """Run with ``settings`` from now on; returns them."""
        self.settings = settings
        self.manifest = settings.manifest
        self.limits = settings.limits
        return settings

    def stale(self, generation: int | None) -> bool:
        """Whether a report of bring-up ``generation`` is out of date (None:
        a report that belongs to no bring-up in particular)."""
        return generation is not None and generation != self.generation

    def move(self, state: State, reason: str) -> None:
        self.state = state
        self.reason = reason
        self.history.append(Transition.now(state, reason))
        if state in BUSY_IDLE:
            if state is State.INITIALIZED and self.metrics.up_since is None:
                self.metrics.mark_up()
        else:
            self.metrics.mark_down()

    def snapshot(self) -> PluginStatus:
        cached = self.cached
        if cached is None:
            state = self.state or State.LOADED  # never read before the first transition
            # RUNNING is read, not stored: a call moves no state and writes no
            # history, it only counts itself in flight.
            busy = self.in_flight > 0 and state is State.INITIALIZED
            cached = self.cached = PluginStatus(
                self.name,
                State.RUNNING if busy else state,
                f"{self.in_flight} call(s) in flight" if busy else self.reason,
                self.info,
                tuple(self.history),
                self.metrics.counters(),
                self.in_flight,
                None if self.health is None else dict(self.health),
                self.metrics.up_since,
                self.healthy,
                self.generation,
            )
        return cached
