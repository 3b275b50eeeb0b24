"""The host config (README, "Host config"): a TOML file, a dict, or built-in defaults.

``--config PATH``, else ``plugwarden.toml`` in the working directory, else the
defaults; no file is ever required. A malformed config raises
:class:`~plugwarden.exceptions.ConfigError` naming the key, never a silent default.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from plugwarden.exceptions import ConfigError, ManifestError
from plugwarden.plugin.environment import env_table
from plugwarden.plugin.limits import Limits
from plugwarden.plugin.manifest import GuardSettings, ModelSpec, guard_settings, model_specs
from plugwarden.plugin.permissions import Permissions, permissions
from plugwarden.plugin.policy import RESTART_MODES, RestartPolicy

__all__ = [
    "DEFAULT_CONFIG_NAME",
    "URL_ENV",
    "HostConfig",
    "JobsConfig",
    "PluginConfig",
    "RayConfig",
    "ServerConfig",
]

DEFAULT_CONFIG_NAME = "plugwarden.toml"
TOKEN_ENV = "PLUGWARDEN_TOKEN"
URL_ENV = "PLUGWARDEN_URL"  # where the client commands find the running server

_HOST_KEYS = {"health_interval_s", "health_timeout_s", "lock_timeout_s"}
_HOST_COUNTS = {"health_failures"}
_PLUGIN_KEYS = {
    "enabled",
    "required",
    "models_dir",
    "requires_gpu",
    "models",
    "num_cpus",
    "num_gpus",
    "env",
    "permissions",
}
_POLICY_KEYS = set(RestartPolicy.__dataclass_fields__)
_SERVER_KEYS = {
    "host",
    "port",
    "token",
    "max_body_bytes",
    "drain_timeout_s",
    "idle_timeout_s",
    "max_connections",
    "log_format",
}
LOG_FORMATS = ("text", "json")
_JOBS_KEYS = {"path", "keep_s", "keep_max", "max_queued_jobs", "cancel_grace_s"}
STATE_ENV = "XDG_STATE_HOME"


@dataclass(frozen=True, slots=True)
class PluginConfig:
    """The operator's table for one plugin: ``[plugins.NAME]``."""

    enabled: bool = True
    required: bool = False
    models_dir: str | None = None
    requires_gpu: bool | None = None  # over the manifest's: false runs a GPU plugin on CPU
    models: dict[str, ModelSpec] = field(default_factory=dict)  # over the manifest's
    guards: GuardSettings = field(default_factory=GuardSettings)
    policy: dict[str, Any] = field(default_factory=dict)  # RestartPolicy fields set here
    settings: dict[str, Any] = field(default_factory=dict)
    num_cpus: float | None = None  # isolation "ray": each actor's CPUs (None: Ray's default)
    num_gpus: float | None = None  # isolation "ray": each actor's GPUs (None: 1 if it needs one)
    env: dict[str, str] = field(default_factory=dict)  # over the workers' clean environment
    permissions: Permissions = field(default_factory=Permissions)  # over the manifest's


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8765
    token: str | None = None
    max_body_bytes: int = 1_048_576
    drain_timeout_s: float = 30.0
    idle_timeout_s: float = 15.0  # a connection must send a request's headers within this
    max_connections: int = 1024  # uvicorn's limit_concurrency: past it, 503
    log_format: str = "text"  # or "json": one object per line


@dataclass(frozen=True, slots=True)
class JobsConfig:
    """``[jobs]``: where jobs are stored, for how long, and how they queue."""

    path: str | None = None  # None: jobs.sqlite3 under the user's state directory
    keep_s: float = 7 * 86400.0  # finished jobs older than this are removed
    keep_max: int = 10_000  # at most this many finished jobs are kept (newest)
    max_queued_jobs: int = 100  # per plugin; past it, submit answers Busy
    cancel_grace_s: float = 5.0  # a cancelled job's worker is killed after this

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


@dataclass(frozen=True, slots=True)
class HostConfig:
    defaults: Limits = field(default_factory=Limits)
    plugins: dict[str, PluginConfig] = field(default_factory=dict)
    server: ServerConfig = field(default_factory=ServerConfig)
    jobs: JobsConfig = field(default_factory=JobsConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    policy: RestartPolicy = field(default_factory=RestartPolicy)
    health_interval_s: float = 15.0
    health_timeout_s: float = 5.0
    health_failures: int = 3
    lock_timeout_s: float = 2.0
    source: str = "<built-in defaults>"
    permissions: Permissions = field(default_factory=Permissions)  # [defaults.permissions]

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None) -> HostConfig:
        """From ``path``, else ``plugwarden.toml`` here, else the defaults."""
        if path is None:
            if not Path(DEFAULT_CONFIG_NAME).is_file():
                return cls.from_dict({}, source="<built-in defaults>").with_env()
            path = DEFAULT_CONFIG_NAME
        file = Path(path)
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(str(file), None, f"cannot be read ({exc})") from exc
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(str(file), None, f"is not valid TOML ({exc})") from exc
        except RecursionError:
            raise ConfigError(str(file), None, "nests too deeply to be read") from None
        return cls.from_dict(data, source=str(file)).with_env()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "<dict>") -> HostConfig:
        return _Parser(source).config(data)

    def with_env(self) -> HostConfig:
        token = os.environ.get(TOKEN_ENV)
        if not token:
            return self
        return replace(self, server=replace(self.server, token=token))

    def plugin(self, name: str) -> PluginConfig:
        return self.plugins.get(name) or PluginConfig()


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source

    def error(self, key: str | None, message: str) -> ConfigError:
        return ConfigError(self.source, key, message)

    def table(self, data: Mapping[str, Any], key: str) -> dict[str, Any]:
        value = data.get(key, {})
        if not isinstance(value, dict):
            raise self.error(key, f"expected a table, got {value!r}")
        return value

    def config(self, data: Mapping[str, Any]) -> HostConfig:
        if not isinstance(data, Mapping):
            raise self.error(None, "expected a table")
        for key in data:
            if key not in ("defaults", "plugins", "server", "jobs", "ray"):
                raise self.error(
                    key,
                    "unknown section; expected [defaults], [plugins.NAME], [server], [jobs], [ray]",
                )
        defaults = self.table(data, "defaults")
        own = _HOST_KEYS | _HOST_COUNTS | _POLICY_KEYS | {"permissions"}
        guard_part = {k: v for k, v in defaults.items() if k not in own}
        guards = guard_settings(guard_part, where="defaults", fail=self.error)
        host_values: dict[str, Any] = {
            k: self.positive(defaults, k, "defaults") for k in _HOST_KEYS if k in defaults
        }
        host_values |= {
            k: self.count(defaults, k, "defaults") for k in _HOST_COUNTS if k in defaults
        }
        policy = RestartPolicy(**self.policy(defaults, "defaults"))
        limits = Limits(**{k: v for k, v in _fields(guards).items() if v is not None})
        plugins = {
            name: self.plugin(name, table) for name, table in self.table(data, "plugins").items()
        }
        return HostConfig(
            defaults=limits,
            plugins=plugins,
            server=self.server(self.table(data, "server")),
            jobs=self.jobs(self.table(data, "jobs")),
            ray=_ray_table(self, self.table(data, "ray")),
            policy=policy,
            source=self.source,
            permissions=permissions(
                defaults.get("permissions", {}), where="defaults.permissions", fail=self.error
            ),
            **host_values,
        )

    def positive(self, table: Mapping[str, Any], key: str, where: str) -> float:
        value = table[key]
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value <= 0
        ):
            raise self.error(f"{where}.{key}", f"expected a positive number, got {value!r}")
        return float(value)

    def amount(self, table: Mapping[str, Any], key: str, where: str) -> float:
        """A resource amount: a number >= 0 (Ray's fractions allowed)."""
        value = table[key]
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value < 0
        ):
            raise self.error(f"{where}.{key}", f"expected a number >= 0, got {value!r}")
        return float(value)

    def count(self, table: Mapping[str, Any], key: str, where: str) -> int:
        value = table[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise self.error(f"{where}.{key}", f"expected a whole number >= 1, got {value!r}")
        return value

    def policy(self, table: Mapping[str, Any], where: str) -> dict[str, Any]:
        """The restart policy keys set in ``table``, checked."""
        values: dict[str, Any] = {}
        for key in _POLICY_KEYS & set(table):
            value = table[key]
            if key == "restart":
                if value not in RESTART_MODES:
                    raise self.error(
                        f"{where}.restart", f"expected 'on-failure' or 'never', got {value!r}"
                    )
                values[key] = value
            elif key == "fail_on_error":
                if not isinstance(value, bool):
                    raise self.error(f"{where}.{key}", f"expected true or false, got {value!r}")
                values[key] = value
            elif key == "max_restarts":
                values[key] = self.count(table, key, where)
            else:
                values[key] = self.positive(table, key, where)
        return values

    def plugin(self, name: str, table: object) -> PluginConfig:
        where = f"plugins.{name}"
        if not isinstance(table, dict):
            raise self.error(where, f"expected a table, got {table!r}")
        guard_keys = set(GuardSettings.__dataclass_fields__)
        policy = self.policy(table, where)
        guards = guard_settings(
            {k: v for k, v in table.items() if k in guard_keys}, where=where, fail=self.error
        )
        for key in ("enabled", "required", "requires_gpu"):
            if key in table and not isinstance(table[key], bool):
                raise self.error(f"{where}.{key}", f"expected true or false, got {table[key]!r}")
        models_dir = table.get("models_dir")
        if models_dir is not None and not isinstance(models_dir, str):
            raise self.error(f"{where}.models_dir", f"expected a path string, got {models_dir!r}")
        models = table.get("models", {})
        if not isinstance(models, dict):
            raise self.error(
                f"{where}.models", f"expected a table of model name -> path, got {models!r}"
            )
        try:
            specs = model_specs(models, where=f"{where}.models")
        except ManifestError as exc:
            raise self.error(exc.key, exc.message) from None
        resources = {
            key: self.amount(table, key, where) for key in ("num_cpus", "num_gpus") if key in table
        }
        try:
            env = env_table(table.get("env", {}))
        except ValueError as exc:
            raise self.error(f"{where}.env", str(exc)) from None
        return PluginConfig(
            enabled=table.get("enabled", True),
            required=table.get("required", False),
            models_dir=models_dir,
            requires_gpu=table.get("requires_gpu"),
            models=specs,
            guards=guards,
            policy=policy,
            settings={
                k: v for k, v in table.items() if k not in guard_keys | _PLUGIN_KEYS | _POLICY_KEYS
            },
            env=env,
            permissions=permissions(
                table.get("permissions", {}), where=f"{where}.permissions", fail=self.error
            ),
            **resources,
        )

    def jobs(self, table: dict[str, Any]) -> JobsConfig:
        return _jobs_table(self, table)

    def server(self, table: dict[str, Any]) -> ServerConfig:
        for key in table:
            if key not in _SERVER_KEYS:
                raise self.error(
                    f"server.{key}", f"unknown key; expected one of {sorted(_SERVER_KEYS)}"
                )
        default = ServerConfig()
        host = table.get("host", default.host)
        if not isinstance(host, str) or not host:
            raise self.error("server.host", f"expected an address string, got {host!r}")
        port = table.get("port", default.port)
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise self.error("server.port", f"expected a port number 0-65535, got {port!r}")
        token = table.get("token")
        if token is not None and (not isinstance(token, str) or not token):
            raise self.error("server.token", "expected a non-empty string")
        limit = table.get("max_body_bytes", default.max_body_bytes)
        if isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0:
            raise self.error("server.max_body_bytes", f"expected a positive integer, got {limit!r}")
        drain, idle = (
            self.positive(table, key, "server") if key in table else getattr(default, key)
            for key in ("drain_timeout_s", "idle_timeout_s")
        )
        connections = (
            self.count(table, "max_connections", "server")
            if "max_connections" in table
            else default.max_connections
        )
        log_format = table.get("log_format", default.log_format)
        if log_format not in LOG_FORMATS:
            raise self.error("server.log_format", f"expected 'text' or 'json', got {log_format!r}")
        return ServerConfig(host, port, token, limit, drain, idle, connections, log_format)


def _jobs_table(parser: _Parser, table: dict[str, Any]) -> JobsConfig:
    for key in table:
        if key not in _JOBS_KEYS:
            raise parser.error(f"jobs.{key}", f"unknown key; expected one of {sorted(_JOBS_KEYS)}")
    default = JobsConfig()
    path = table.get("path", default.path)
    if path is not None and (not isinstance(path, str) or not path):
        raise parser.error("jobs.path", f"expected a file path or ':memory:', got {path!r}")
    values: dict[str, Any] = {k: parser.positive(table, k, "jobs")
                              for k in ("keep_s", "cancel_grace_s") if k in table}  # fmt: skip
    values |= {k: parser.count(table, k, "jobs") for k in ("keep_max", "max_queued_jobs")
               if k in table}  # fmt: skip
    return JobsConfig(path=path, **values)


def _ray_table(parser: _Parser, table: dict[str, Any]) -> RayConfig:
    keys = sorted(RayConfig.__dataclass_fields__)
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key not in keys:
            raise parser.error(f"ray.{key}", f"unknown key; expected one of {keys}")
        if key in ("address", "namespace"):
            if not isinstance(value, str) or (key == "namespace" and not value):
                raise parser.error(f"ray.{key}", f"expected a string, got {value!r}")
            values[key] = value.strip()
        elif key in ("num_cpus", "num_gpus"):
            values[key] = parser.amount(table, key, "ray")
        else:
            values[key] = parser.positive(table, key, "ray")
    return RayConfig(**values)


def _fields(settings: GuardSettings) -> dict[str, Any]:
    return {name: getattr(settings, name) for name in GuardSettings.__dataclass_fields__}
