"""Logging: one event, one line.

A worker's own log records (a plugin's ``logging`` calls, the guard's
warning with its traceback) cross the output pipe as one line each, a
record separator then JSON, so that the host logs each as one event at its
own level under ``plugwarden.plugin.<plugin>``; what a plugin prints is
logged line by line at INFO. ``[server] log_format = "json"`` makes the host
write one JSON object per line (time, level, logger, message, plugin, pid,
traceback) for log shippers.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any

__all__ = ["RECORD_MARK", "JsonFormatter", "WorkerRecordFormatter", "configure", "parse_record"]

RECORD_MARK = "\x1e"  # ASCII record separator: never in what a plugin prints by accident
TEXT_FORMAT = "%(levelname)s %(name)s: %(message)s"
_PLUGIN_LOGGER = "plugwarden.plugin."


class WorkerRecordFormatter(logging.Formatter):
    """In a worker: each record as one marked JSON line, traceback included."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message = f"{message}\n{self.formatException(record.exc_info)}"
        return RECORD_MARK + json.dumps(
            {"level": record.levelno, "logger": record.name, "message": message}
        )


def parse_record(line: str) -> tuple[int, str, str] | None:
    """(level, logger, message) of a marked worker line, None for plain text."""
    if not line.startswith(RECORD_MARK):
        return None
    try:
        data = json.loads(line[1:])
        level, logger, message = data["level"], data["logger"], data["message"]
    # RecursionError: a plugin's line nested past the JSON parser's limit.
    except (ValueError, KeyError, TypeError, RecursionError):
        return None
    if not isinstance(level, int) or not isinstance(logger, str) or not isinstance(message, str):
        return None
    return min(max(level, logging.DEBUG), logging.CRITICAL), logger[:200], message


class JsonFormatter(logging.Formatter):
    """One JSON object per line: what log shippers ingest."""

    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": os.getpid(),
        }
        plugin = getattr(record, "plugin", None)
        if plugin is None and record.name.startswith(_PLUGIN_LOGGER):
            plugin = record.name[len(_PLUGIN_LOGGER) :]
        if plugin is not None:
            event["plugin"] = plugin
        for key in ("state", "call"):
            if hasattr(record, key):
                event[key] = getattr(record, key)
        if record.exc_info:
            event["traceback"] = self.formatException(record.exc_info)
        return json.dumps(event, default=str)


def configure(log_format: str = "text") -> None:
    """The host process's logging: ``text`` lines or ``json`` objects on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
