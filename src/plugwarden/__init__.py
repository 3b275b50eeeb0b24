"""plugwarden: a crash-proof plugin host for Python.

The names below are imported on first use (PEP 562), not with the package:
a plugin's ``from plugwarden import hookimpl`` and the zygote that forks the
workers then import the hook markers alone, not the whole host (that was
~200 ms of every zygote's boot).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from plugwarden.config import HostConfig
    from plugwarden.error_types import ErrorType
    from plugwarden.exceptions import (
        ConfigError,
        JobRefused,
        JobStoreError,
        LoadError,
        ManifestError,
        PlugwardenError,
        RegistryTimeout,
        TransitionError,
        UnknownJob,
        UnknownPlugin,
    )
    from plugwarden.hookspecs import hookimpl
    from plugwarden.host.host import Host
    from plugwarden.host.status import PluginStatus
    from plugwarden.isolation.reporting import cancelled, progress
    from plugwarden.jobs.job import Job, JobState
    from plugwarden.plugin.lifecycle import State, Transition
    from plugwarden.result import CallResult

_EXPORTS = {
    "CallResult": "plugwarden.result",
    "ConfigError": "plugwarden.exceptions",
    "ErrorType": "plugwarden.error_types",
    "Host": "plugwarden.host.host",
    "HostConfig": "plugwarden.config",
    "Job": "plugwarden.jobs.job",
    "JobRefused": "plugwarden.exceptions",
    "JobState": "plugwarden.jobs.job",
    "JobStoreError": "plugwarden.exceptions",
    "LoadError": "plugwarden.exceptions",
    "ManifestError": "plugwarden.exceptions",
    "PluginStatus": "plugwarden.host.status",
    "PlugwardenError": "plugwarden.exceptions",
    "RegistryTimeout": "plugwarden.exceptions",
    "State": "plugwarden.plugin.lifecycle",
    "Transition": "plugwarden.plugin.lifecycle",
    "TransitionError": "plugwarden.exceptions",
    "UnknownJob": "plugwarden.exceptions",
    "UnknownPlugin": "plugwarden.exceptions",
    "cancelled": "plugwarden.isolation.reporting",
    "hookimpl": "plugwarden.hookspecs",
    "progress": "plugwarden.isolation.reporting",
}

__all__ = [
    "CallResult",
    "ConfigError",
    "ErrorType",
    "Host",
    "HostConfig",
    "Job",
    "JobRefused",
    "JobState",
    "JobStoreError",
    "LoadError",
    "ManifestError",
    "PluginStatus",
    "PlugwardenError",
    "RegistryTimeout",
    "State",
    "Transition",
    "TransitionError",
    "UnknownJob",
    "UnknownPlugin",
    "cancelled",
    "hookimpl",
    "progress",
]


def __getattr__(name: str) -> Any:
    if name == "__version__":
        value: Any = _version()
    elif name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    else:
        raise AttributeError(f"module 'plugwarden' has no attribute {name!r}")
    globals()[name] = value  # the next access is a plain lookup
    return value


def __dir__() -> list[str]:
    return [*__all__, "__version__"]


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("plugwarden")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0.0.0+unknown"
