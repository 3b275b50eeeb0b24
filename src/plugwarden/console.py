"""What the CLI and ``doctor`` share: state colours and the all-well test."""

from __future__ import annotations

from plugwarden.config import HostConfig
from plugwarden.core.lifecycle import State
from plugwarden.core.registry import PluginStatus

__all__ = ["STATE_STYLES", "all_well"]

STATE_STYLES = {
    State.INITIALIZED: "green",
    State.RUNNING: "cyan",
    State.LOADED: "yellow",
    State.FAILED: "bold red",
    State.UNAVAILABLE: "magenta",
}


def all_well(statuses: list[PluginStatus], config: HostConfig) -> bool:
    """Every plugin the config enables is available."""
    return all(s.available or not config.plugin(s.name).enabled for s in statuses)
