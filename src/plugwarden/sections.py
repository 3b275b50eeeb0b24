"""The host config's ``[server]``, ``[jobs]`` and ``[ray]`` tables
(docs/guides/operating.md#host-config), each a frozen value with its parser.

A parser takes the table and ``fail(key, message)``, which builds the
:class:`~plugwarden.exceptions.ConfigError` to raise.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plugwarden.plugin import numbers
from plugwarden.plugin.numbers import Fail

__all__ = [
    "DATA_ENV",
    "LOG_FORMATS",
    "STATE_ENV",
    "JobsConfig",
    "RayConfig",
    "ServerConfig",
    "jobs_table",
    "ray_table",
    "server_table",
]

LOG_FORMATS = ("text", "json")
STATE_ENV = "XDG_STATE_HOME"
DATA_ENV = "XDG_DATA_HOME"


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8765
    token: str | None = None
    max_body_bytes: int = 1_048_576
    # a call's binary values (its shared memory's room for arguments, and an
    # HTTP multipart or octet-stream body)
    max_blob_bytes: int = 64 * 2**20
    drain_timeout_s: float = 30.0
    idle_timeout_s: float = 15.0  # a connection must send a request's headers within this
    max_connections: int = 1024  # uvicorn's limit_concurrency: past it, 503
    log_format: str = "text"  # or "json": one object per line
    # /healthz, /readyz and /metrics also on this port, in a listener of their
    # own that no other client can starve (None: none)
    probe_port: int | None = None
    body_timeout_s: float = 30.0  # a request's whole body must arrive within this
    # false: the plugin listing, health records, metrics and the page need the
    # token too (probes never do; job reads always do)
    public_reads: bool = True
    result_memory_mb: float = 512.0  # results the host holds at once (in flight, cached)
    # where `plugwarden install` keeps plugins' own environments (None:
    # $XDG_DATA_HOME/plugwarden/plugins, ~/.local/share by default)
    plugins_dir: str | None = None
    allow_sdist: bool = False  # true: installs may build source distributions (runs their code)
    probation_s: float = 60.0  # after an upgrade: a failure within this rolls it back
    # a lost worker's replacement waits this long for its GPU memory to come back
    gpu_release_timeout_s: float = 30.0

    def plugins_directory(self) -> Path:
        """The environments' directory in force (see ``plugins_dir``)."""
        if self.plugins_dir:
            return Path(self.plugins_dir)
        data = os.environ.get(DATA_ENV) or str(Path.home() / ".local" / "share")
        return Path(data) / "plugwarden" / "plugins"


@dataclass(frozen=True, slots=True)
class JobsConfig:
    """``[jobs]``: where jobs are stored, for how long, and how they queue."""

    path: str | None = None  # None: jobs.sqlite3 under the user's state directory
    keep_s: float = 7 * 86400.0  # finished jobs older than this are removed
    keep_max: int = 10_000  # at most this many finished jobs are kept (newest)
    max_queued_jobs: int = 100  # per plugin; past it, submit answers Busy
    cancel_grace_s: float = 5.0  # a cancelled job's worker is killed after this
    max_result_bytes: int = 4 * 2**20  # a job's stored result; past it the job fails

    def database(self) -> str:
        """The database path in force: ``path``, else
        ``$XDG_STATE_HOME/plugwarden/jobs.sqlite3`` (``~/.local/state`` by default)."""
        if self.path:
            return self.path
        state = os.environ.get(STATE_ENV) or str(Path.home() / ".local" / "state")
        return str(Path(state) / "plugwarden" / "jobs.sqlite3")


@dataclass(frozen=True, slots=True)
class RayConfig:
    """``[ray]``: the cluster that ``isolation = "ray"`` plugins run on."""

    address: str = ""  # "" starts a local cluster; "auto", or "HOST:PORT" of a running one
    num_cpus: float | None = None  # a local cluster's CPUs (None: the machine's)
    num_gpus: float | None = None  # a local cluster's GPUs (None: what Ray detects)
    object_store_mb: float = 256.0  # a local cluster's object store (Ray's default: 30% of RAM)
    namespace: str = "plugwarden"
    connect_timeout_s: float = 30.0  # past it, the cluster is unreachable (plugins FAILED)


def _known(table: dict[str, Any], section: str, keys: set[str], fail: Fail) -> None:
    for key in table:
        if key not in keys:
            raise fail(f"{section}.{key}", f"unknown key; expected one of {sorted(keys)}")


def _port(value: Any, key: str, fail: Fail) -> int:
    return numbers.whole(value, key, fail, low=0, high=65535)


def server_table(table: dict[str, Any], fail: Fail) -> ServerConfig:
    _known(table, "server", set(ServerConfig.__dataclass_fields__), fail)
    values: dict[str, Any] = {}
    for key, value in table.items():
        where = f"server.{key}"
        if key == "host" and (not isinstance(value, str) or not value):
            raise fail(where, f"expected an address string, got {value!r}")
        if key == "token" and (not isinstance(value, str) or not value):
            raise fail(where, "expected a non-empty string")
        if key == "plugins_dir" and (not isinstance(value, str) or not value):
            raise fail(where, f"expected a directory path, got {value!r}")
        if key == "log_format" and value not in LOG_FORMATS:
            raise fail(where, f"expected 'text' or 'json', got {value!r}")
        if key in ("public_reads", "allow_sdist") and not isinstance(value, bool):
            raise fail(where, f"expected true or false, got {value!r}")
        if key in ("port", "probe_port"):
            value = _port(value, where, fail)
        elif key in ("max_body_bytes", "max_blob_bytes"):
            value = numbers.whole(value, where, fail, high=numbers.MAX_BYTES)
        elif key == "max_connections":
            value = numbers.whole(value, where, fail)
        elif key == "result_memory_mb":
            value = numbers.positive(value, where, fail, high=numbers.MAX_BYTES)
        elif key.endswith("_s"):
            value = numbers.positive(value, where, fail)
        values[key] = value
    config = ServerConfig(**values)
    if config.probe_port and config.probe_port == config.port:
        raise fail("server.probe_port", f"expected a port other than server.port ({config.port})")
    return config


def jobs_table(table: dict[str, Any], fail: Fail) -> JobsConfig:
    _known(table, "jobs", set(JobsConfig.__dataclass_fields__), fail)
    values: dict[str, Any] = {}
    for key, value in table.items():
        where = f"jobs.{key}"
        if key == "path":
            if not isinstance(value, str) or not value:
                raise fail(where, f"expected a file path or ':memory:', got {value!r}")
        elif key == "max_result_bytes":
            value = numbers.whole(value, where, fail, high=numbers.MAX_BYTES)
        elif key.endswith("_s"):
            value = numbers.positive(value, where, fail)
        else:
            value = numbers.whole(value, where, fail)
        values[key] = value
    return JobsConfig(**values)


def ray_table(table: dict[str, Any], fail: Fail) -> RayConfig:
    _known(table, "ray", set(RayConfig.__dataclass_fields__), fail)
    values: dict[str, Any] = {}
    for key, value in table.items():
        where = f"ray.{key}"
        if key in ("address", "namespace"):
            if not isinstance(value, str) or (key == "namespace" and not value):
                raise fail(where, f"expected a string, got {value!r}")
            values[key] = value.strip()
        elif key in ("num_cpus", "num_gpus"):
            values[key] = numbers.amount(value, where, fail)
        elif key == "object_store_mb":
            values[key] = numbers.positive(value, where, fail, high=numbers.MAX_AMOUNT)
        else:
            values[key] = numbers.positive(value, where, fail)
    return RayConfig(**values)
