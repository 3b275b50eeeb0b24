"""The host config (docs/guides/operating.md#host-config): a TOML file, a
dict, or built-in defaults.

``--config PATH``, else ``plugwarden.toml`` in the working directory, else the
defaults; no file is ever required. A malformed config raises
:class:`~plugwarden.exceptions.ConfigError` naming the key, never a silent default.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from plugwarden.exceptions import ConfigError, ManifestError
from plugwarden.plugin import numbers
from plugwarden.plugin.environment import env_table
from plugwarden.plugin.limits import Limits
from plugwarden.plugin.manifest import GuardSettings, ModelSpec, guard_settings, model_specs
from plugwarden.plugin.permissions import PERMISSION_KEYS, Permissions, permissions
from plugwarden.plugin.policy import RESTART_MODES, RestartPolicy
from plugwarden.sections import (
    JobsConfig,
    RayConfig,
    ServerConfig,
    jobs_table,
    ray_table,
    server_table,
)

__all__ = [
    "DEFAULT_CONFIG_NAME",
    "TABLES",
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
    "gpus",
    "env",
    "permissions",
    "preload",
}
_POLICY_KEYS = set(RestartPolicy.__dataclass_fields__)
_GUARD_KEYS = set(GuardSettings.__dataclass_fields__)
_PERMISSION_TABLE = "permissions"

# Every key each table of the host config takes, as the parser below reads
# them (docs/reference/config.md is generated from this). [plugins.NAME]
# also passes any other key on to the plugin's init as a setting.
TABLES: dict[str, frozenset[str]] = {
    "defaults": frozenset(_GUARD_KEYS | _HOST_KEYS | _HOST_COUNTS | _POLICY_KEYS),
    "defaults.permissions": frozenset(PERMISSION_KEYS),
    "plugins.NAME": frozenset(_GUARD_KEYS | _PLUGIN_KEYS | _POLICY_KEYS) - {_PERMISSION_TABLE},
    "plugins.NAME.permissions": frozenset(PERMISSION_KEYS),
    "server": frozenset(ServerConfig.__dataclass_fields__),
    "jobs": frozenset(JobsConfig.__dataclass_fields__),
    "ray": frozenset(RayConfig.__dataclass_fields__),
}


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
    gpus: tuple[int, ...] | None = None  # the GPUs its workers may be placed on (None: "auto")
    env: dict[str, str] = field(default_factory=dict)  # over the workers' clean environment
    permissions: Permissions = field(default_factory=Permissions)  # over the manifest's
    # true: the manifest's preload modules are imported by its zygote, before
    # any sandbox (the operator's trust, as for inline)
    preload: bool = False


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
        own = _HOST_KEYS | _HOST_COUNTS | _POLICY_KEYS | {_PERMISSION_TABLE}
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
            server=server_table(self.table(data, "server"), self.error),
            jobs=jobs_table(self.table(data, "jobs"), self.error),
            ray=ray_table(self.table(data, "ray"), self.error),
            policy=policy,
            source=self.source,
            permissions=permissions(
                defaults.get("permissions", {}), where="defaults.permissions", fail=self.error
            ),
            **host_values,
        )

    def positive(self, table: Mapping[str, Any], key: str, where: str) -> float:
        return numbers.positive(table[key], f"{where}.{key}", self.error)

    def count(self, table: Mapping[str, Any], key: str, where: str) -> int:
        return numbers.whole(table[key], f"{where}.{key}", self.error)

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
        guard_keys = _GUARD_KEYS
        policy = self.policy(table, where)
        guards = guard_settings(
            {k: v for k, v in table.items() if k in guard_keys}, where=where, fail=self.error
        )
        for key in ("enabled", "required", "requires_gpu", "preload"):
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
            key: numbers.amount(table[key], f"{where}.{key}", self.error)
            for key in ("num_cpus", "num_gpus")
            if key in table
        }
        gpus = table.get("gpus", "auto")
        if gpus != "auto" and (
            not isinstance(gpus, list)
            or not gpus
            or any(type(n) is not int or not 0 <= n < 1024 for n in gpus)
        ):
            raise self.error(
                f"{where}.gpus", f"expected 'auto' or a list of GPU indexes, got {gpus!r}"
            )
        try:
            env = env_table(table.get("env", {}))
        except ValueError as exc:
            raise self.error(f"{where}.env", str(exc)) from None
        return PluginConfig(
            enabled=table.get("enabled", True),
            required=table.get("required", False),
            models_dir=models_dir,
            requires_gpu=table.get("requires_gpu"),
            gpus=None if gpus == "auto" else tuple(sorted(set(gpus))),
            preload=table.get("preload", False),
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


def _fields(settings: GuardSettings) -> dict[str, Any]:
    return {name: getattr(settings, name) for name in GuardSettings.__dataclass_fields__}
