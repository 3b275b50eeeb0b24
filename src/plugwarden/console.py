"""What the CLI, ``doctor`` and the status page share: state colours (of
plugins and jobs), the all-well test, on plugin records as plain dicts (from
a local host or a server's JSON), and relative times. No rich here: the
server imports it."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

__all__ = [
    "AVAILABLE",
    "EXIT_NOT_WELL",
    "EXIT_OK",
    "EXIT_USAGE",
    "JOB_STATE_STYLES",
    "STATE_STYLES",
    "ago",
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


def ago(iso: str | None, now: float | None = None) -> str:
    """'12 s ago', '3 min ago', '2 h ago', '4 d ago', or 'never'."""
    if not iso:
        return "never"
    try:
        moment = datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return iso
    seconds = max(0, round((time.time() if now is None else now) - moment))
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"
