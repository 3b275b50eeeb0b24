"""A plugin's own environment (docs/guides/environments.md):
the virtual environment ``plugwarden install`` built for it, as discovery
and the zygote need to know it.

A plugin found on the host's own path has none (the shared environment):
its workers fork from the host's zygote and import from the host's path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["PluginEnvironment"]


@dataclass(frozen=True, slots=True)
class PluginEnvironment:
    """An environment of its own: ``root`` (a virtual environment), its
    ``python``, the import path that Python has there (``sys_path``, the
    standard library and the environment's site-packages, nothing of the
    host's), and ``runtime``, the folder that holds the host's own
    ``plugwarden`` package for the worker side."""

    id: str
    root: str
    python: str
    sys_path: tuple[str, ...]
    runtime: str
    packages: tuple[tuple[str, str], ...] = ()  # (name, version) of what it holds
    # The plugin's versions as installed here, oldest first: {at, event, version, environment}
    versions: tuple[dict[str, str], ...] = ()
    # Packages resolved with an override (their pins elsewhere do not hold here).
    overridden: frozenset[str] = frozenset()

    @property
    def site_packages(self) -> tuple[str, ...]:
        """The path entries of the environment itself (not the standard library)."""
        root = os.path.join(self.root, "")
        return tuple(entry for entry in self.sys_path if entry.startswith(root))

    def summary(self) -> dict[str, object]:
        """What a record, the page and ``doctor`` show of it."""
        return {
            "id": self.id,
            "path": self.root,
            "python": self.python,
            "packages": dict(self.packages),
            "overridden": sorted(self.overridden),
            "versions": [dict(entry) for entry in self.versions],
        }
