"""Plugins' own environments (docs/guides/environments.md): virtual
environments built with uv under ``[server] plugins_dir``, one per installed
version of a plugin, each holding the host's own ``plugwarden`` for the
worker side.

The host package drives installs, upgrades and rollbacks through
:class:`EnvironmentStore`; nothing here starts a plugin.
"""

from plugwarden.environments.store import EnvironmentStore, InstallPlan, spec_problem
from plugwarden.environments.uvtool import Phase

__all__ = ["EnvironmentStore", "InstallPlan", "Phase", "spec_problem"]
