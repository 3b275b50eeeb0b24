"""What a reader gets of a plugin: :class:`PluginStatus`, an immutable
snapshot of its record (state, reason, history, health, metrics) with its
cached JSON, and :class:`PluginInfo`, what is known of it besides its state.
The registry makes them; the HTTP app, the CLI and the Python API read them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from plugwarden.encoding import compact_json
from plugwarden.plugin.lifecycle import State, Transition

__all__ = ["PluginInfo", "PluginStatus"]


@dataclass(frozen=True, slots=True)
class PluginInfo:
    """What is known of a plugin besides its state."""

    description: str = ""
    version: str = ""
    distribution: str = ""
    isolation: str = ""
    tools: tuple[str, ...] = ()
    enabled: bool = True  # False: the operator's config disables it
    requires_gpu: bool = False
    workers: int = 0  # worker processes when all serve (0: inline, or none yet)
    permissions: dict[str, Any] = field(default_factory=dict)  # what it is granted
    protections: dict[str, str] = field(default_factory=dict)  # what this machine enforces
    # Its own environment (path, Python, packages), None: the host's (shared).
    environment: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class PluginStatus:
    """A snapshot of one plugin's record; safe to hand out.

    Snapshots are cached by the registry until the plugin's record changes,
    so readers polling a hundred plugins build almost nothing; uptime is the
    one value computed at reading time."""

    name: str
    state: State
    reason: str
    info: PluginInfo
    history: tuple[Transition, ...]
    counters: dict[str, Any]
    in_flight: int
    health: dict[str, Any] | None
    up_since: float | None = None  # time.monotonic() when it became available
    healthy: bool = True  # False after health_failures failed health checks in a row
    generation: int = 0  # which bring-up of the plugin this record describes
    _dicts: dict[bool, dict[str, Any]] = field(default_factory=dict, compare=False, repr=False)
    _json: dict[bool, tuple[str, str]] = field(default_factory=dict, compare=False, repr=False)

    @property
    def available(self) -> bool:
        return self.state in (State.INITIALIZED, State.RUNNING)

    @property
    def uptime_seconds(self) -> float:
        return 0.0 if self.up_since is None else round(time.monotonic() - self.up_since, 3)

    @property
    def metrics(self) -> dict[str, Any]:
        return {**self.counters, "uptime_seconds": self.uptime_seconds}

    def to_dict(self, *, history: bool = True) -> dict[str, Any]:
        cached = self._dicts.get(history)
        if cached is None:
            cached = {
                "name": self.name,
                "state": self.state.value,
                "reason": self.reason,
                "description": self.info.description,
                "version": self.info.version,
                "distribution": self.info.distribution,
                "isolation": self.info.isolation,
                "enabled": self.info.enabled,
                "requires_gpu": self.info.requires_gpu,
                "workers": self.info.workers,
                "tools": list(self.info.tools),
                "in_flight": self.in_flight,
                **self.counters,
                "uptime_seconds": 0.0,
                "healthy": self.healthy,
                "health": self.health,
                "environment": _where(self.info.environment),
            }
            if history:
                cached["permissions"] = self.info.permissions
                cached["protections"] = self.info.protections
                cached["environment"] = self.info.environment  # with packages and versions
                cached["history"] = [t.to_dict() for t in self.history]
            self._dicts[history] = cached
        return {**cached, "uptime_seconds": self.uptime_seconds}

    def to_json(self, *, history: bool = True) -> str:
        """:meth:`to_dict` as compact JSON. The encoding is cached with the
        snapshot, split around the uptime, so a reader polling many plugins
        re-encodes only what changed."""
        head, tail = self.json_parts(history=history)
        return f"{head}{self.uptime_seconds!r}{tail}"

    def json_parts(self, *, history: bool = True) -> tuple[str, str]:
        """The cached JSON before and after the uptime's value (``tail``
        ends with the closing brace)."""
        parts = self._json.get(history)
        if parts is None:
            data = self.to_dict(history=history)
            keys = list(data)
            split = keys.index("uptime_seconds")
            head = compact_json({k: data[k] for k in keys[:split]})[:-1] + ',"uptime_seconds":'
            after = {k: data[k] for k in keys[split + 1 :]}
            tail = "," + compact_json(after)[1:] if after else "}"
            parts = self._json[history] = (head, tail)
        return parts


def _where(environment: dict[str, Any] | None) -> dict[str, Any] | None:
    """A listing's view of a plugin's own environment (None: the host's)."""
    if environment is None:
        return None
    return {key: environment.get(key) for key in ("id", "path", "python")}
