"""plugwarden: a crash-proof plugin host for Python."""

from importlib.metadata import PackageNotFoundError, version

from plugwarden.config import HostConfig
from plugwarden.core.host import Host
from plugwarden.core.jobs import Job, JobState
from plugwarden.core.lifecycle import State, Transition
from plugwarden.core.registry import PluginStatus
from plugwarden.core.reporting import cancelled, progress
from plugwarden.core.result import CallResult
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

try:
    __version__ = version("plugwarden")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"
