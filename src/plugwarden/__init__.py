"""plugwarden: a crash-proof plugin host for Python."""

from importlib.metadata import PackageNotFoundError, version

from plugwarden.config import HostConfig
from plugwarden.core.host import Host
from plugwarden.core.lifecycle import State, Transition
from plugwarden.core.registry import PluginStatus
from plugwarden.core.result import CallResult
from plugwarden.error_types import ErrorType
from plugwarden.exceptions import (
    ConfigError,
    LoadError,
    ManifestError,
    PlugwardenError,
    RegistryTimeout,
    TransitionError,
    UnknownPlugin,
)
from plugwarden.hookspecs import hookimpl

__all__ = [
    "CallResult",
    "ConfigError",
    "ErrorType",
    "Host",
    "HostConfig",
    "LoadError",
    "ManifestError",
    "PluginStatus",
    "PlugwardenError",
    "RegistryTimeout",
    "State",
    "Transition",
    "TransitionError",
    "UnknownPlugin",
    "hookimpl",
]

try:
    __version__ = version("plugwarden")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"
