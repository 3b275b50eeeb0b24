"""Helpers for testing plugwarden plugins: real distributions on a temporary
path, and (through the pytest plugin) fixtures that build hosts over them."""

from plugwarden.testing.dists import ECHO_PLUGIN, plugin_source, write_plugin

__all__ = ["ECHO_PLUGIN", "plugin_source", "write_plugin"]
