"""What the CLI and ``doctor`` share: state colours (of plugins and jobs) and the all-well test,
on plugin records as plain dicts (from a local host or a server's JSON)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "AVAILABLE",
    "EXIT_NOT_WELL",
    "EXIT_OK",
    "EXIT_USAGE",
    "JOB_STATE_STYLES",
    "STATE_STYLES",
    "all_well",
    "well",
]

# The command's exit status: all well, a plugin (or job) is not, a usage or config error.
EXIT_OK, EXIT_NOT_WELL, EXIT_USAGE = 0, 1, 2

STATE_STYLES = {
    "INITIALIZED": "green",
    "RUNNING": "cyan",
    "LOADED": "yellow",
    "FAILED": "bold red",
    "UNAVAILABLE": "magenta",
}
JOB_STATE_STYLES = {
    "queued": "yellow",
    "running": "cyan",
    "succeeded": "green",
    "failed": "bold red",
    "cancelled": "magenta",
    "lost": "bold red",
}
AVAILABLE = frozenset({"INITIALIZED", "RUNNING"})


def well(record: Mapping[str, Any]) -> bool:
    """Available, or switched off on purpose by the operator."""
    return record.get("state") in AVAILABLE or record.get("enabled") is False


def all_well(records: Iterable[Mapping[str, Any]]) -> bool:
    """Every plugin the config enables is available."""
    return all(well(record) for record in records)
