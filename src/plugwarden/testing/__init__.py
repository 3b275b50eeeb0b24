"""Helpers for testing plugwarden plugins
(docs/guides/writing-plugins.md#writing-and-testing-a-plugin): real
distributions on a temporary path, the conformance checks, fault injection,
and (through the pytest plugin) fixtures that build hosts over them.

``PluginConformance`` needs pytest (``pip install plugwarden[testing]``); it
is imported on first use, so the rest works without pytest."""

from typing import Any

from plugwarden.testing.assertions import assert_state, wait_for, wait_for_state
from plugwarden.testing.dists import ECHO_PLUGIN, plugin_source, write_plugin, write_wheel
from plugwarden.testing.faults import FakeNvml, FaultPlan, fake_gpu
from plugwarden.testing.stale import StaleInstallWarning

__all__ = [
    "ECHO_PLUGIN",
    "FakeNvml",
    "FaultPlan",
    "LiveServer",
    "PluginConformance",
    "StaleInstallWarning",
    "assert_state",
    "fake_gpu",
    "plugin_source",
    "wait_for",
    "wait_for_state",
    "write_plugin",
    "write_wheel",
]


def __getattr__(name: str) -> Any:
    if name == "PluginConformance":
        from plugwarden.testing.conformance import PluginConformance

        return PluginConformance
    if name == "LiveServer":
        from plugwarden.testing.pytest_plugin import LiveServer

        return LiveServer
    raise AttributeError(f"module 'plugwarden.testing' has no attribute {name!r}")
