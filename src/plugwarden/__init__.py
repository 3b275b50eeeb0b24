"""plugwarden: a crash-proof plugin host for Python."""

from plugwarden.config import HostConfig
from plugwarden.core.host import Host
from plugwarden.core.lifecycle import State, Transition
from plugwarden.core.registry import PluginStatus
from plugwarden.core.result import CallResult
from plugwarden.exceptions import (
    ConfigError,
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
    "Host",
    "HostConfig",
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

__version__ = "0.1.0"
