"""Installs, upgrades, rollbacks and uninstalls on a running host
(docs/guides/environments.md), each run as a job of the host's own.

A plugin installed here gets an environment of its own
(:mod:`plugwarden.environments`); it is discovered, checked and started
beside the others, which keep serving. An upgrade builds the new version's
environment beside the old one and switches to it only once it is up and
checked (:mod:`plugwarden.host.versions`); the environment it replaces is
kept for ``plugwarden rollback``. Plugins that pip installed into the
host's own environment are left to pip.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from plugwarden.config import HostConfig
from plugwarden.environments import EnvironmentStore, InstallPlan
from plugwarden.error_types import ErrorType
from plugwarden.exceptions import InstallFailed, UnknownPlugin
from plugwarden.isolation.reporting import CallControl
from plugwarden.plugin.discovery import Discovery, PluginSource, discover
from plugwarden.plugin.lifecycle import State
from plugwarden.plugin.venv import PluginEnvironment
from plugwarden.result import CallResult

if TYPE_CHECKING:
    from plugwarden.host.supervisor import Supervisor
    from plugwarden.host.versions import Versions
    from plugwarden.isolation.backends import Backends

__all__ = ["PHASES", "Installs"]

log = logging.getLogger("plugwarden.installs")

# The phases an install job reports, in order (its progress counts them).
PHASES = (
    "building", "resolving", "downloading", "installing", "pre-flight", "starting", "checking",
    "probation",
)  # fmt: skip


class Installs:
    def __init__(
        self,
        config: HostConfig,
        supervisor: Supervisor,
        versions: Versions,
        backends: Backends,
        store: EnvironmentStore | None = None,
    ) -> None:
        self.config = config
        self.supervisor = supervisor
        self.versions = versions
        self.backends = backends
        self.store = store or EnvironmentStore(config.server.plugins_directory())

    def discovered(self) -> Discovery:
        """Every plugin of the environments installed here (removing what a
        dead install left)."""
        self.store.sweep()
        found = Discovery({}, {})
        for name, environment in self.store.current().items():
            found = found.merged(discover(environment=environment).only({name}))
        return found

    # -- the jobs ------------------------------------------------------------------

    def run(
        self,
        operation: str,
        name: str | None,
        specs: list[str] | None,
        overrides: list[str],
        control: CallControl,
    ) -> CallResult:
        """One job of the host's own: ``operation`` (install, upgrade,
        rollback, uninstall); never raises, its failure is the record's."""
        try:
            if operation == "install":
                return self.install(specs or [], overrides, control)
            if name is None:
                raise InstallFailed(f"{operation} needs a plugin name")
            if operation == "upgrade":
                return self.upgrade(name, specs, overrides, control)
            if operation == "rollback":
                return self.rollback(name, control)
            return self.uninstall(name, control)
        except InstallFailed as exc:
            log.warning("%s %s failed: %s", operation, name or " ".join(specs or []), exc.reason)
            return CallResult.failure(exc.reason, exc.error_type, hook=operation)
        except UnknownPlugin as exc:
            return CallResult.failure(str(exc), ErrorType.UNKNOWN_PLUGIN, hook=operation)

    def install(self, specs: list[str], overrides: list[str], control: CallControl) -> CallResult:
        tell = _teller(control)
        environment = self._build(specs, overrides, tell)
        try:
            source = self._one_plugin(environment, None)
            name = source.name
            if name in self.supervisor.registry:
                raise InstallFailed(
                    f"A plugin named '{name}' is already installed: upgrade it (plugwarden "
                    f"upgrade {name} SPEC), or uninstall it first."
                )
            self.store.commit(name, environment.id, source.dist_version, "installed")
        except InstallFailed:
            self.store.discard(environment.id)
            raise
        tell("starting", f"starting {source.origin}")
        status = self.supervisor.add(source)
        if not status.available:
            self.supervisor.remove(name, ErrorType.UNINSTALLED)
            self.backends.retire(environment)
            self.store.forget(name)
            raise InstallFailed(f"{source.origin} is {status.state.value}: {status.reason}")
        self._show(name)
        return _done(name, source, "installed", status.state)

    def upgrade(
        self, name: str, specs: list[str] | None, overrides: list[str], control: CallControl
    ) -> CallResult:
        tell = _teller(control)
        current = self._own(name)
        if not specs:  # what it came from, resolved again
            specs, overrides = list(current.specs), list(current.overrides)
        environment = self._build(specs, overrides, tell)
        try:
            source = self._one_plugin(environment, name)
            return self._switch_to(name, source, environment, tell, probation=True)
        except InstallFailed as exc:
            event = "rolled back" if exc.error_type == ErrorType.ROLLED_BACK else "refused"
            self.store.note(name, environment.id, _version_of(environment, name), event)
            self.backends.retire(environment)  # its trial's zygote, once no runner uses it
            self.store.discard(environment.id)
            self._show(name)
            raise

    def rollback(self, name: str, control: CallControl) -> CallResult:
        tell = _teller(control)
        self._own(name)
        previous = self.store.previous(name)
        if previous is None:
            raise InstallFailed(f"Plugin '{name}' has no previous version to roll back to.")
        source = self._one_plugin(previous, name)
        return self._switch_to(name, source, previous, tell, probation=False)

    def uninstall(self, name: str, control: CallControl) -> CallResult:
        _teller(control)("starting", f"uninstalling {name}")
        installed = self._own(name)
        self.supervisor.remove(name, ErrorType.UNINSTALLED)
        self.backends.retire(installed.environment)
        self.store.forget(name)
        return CallResult(
            True, plugin=name, hook="uninstall", result={"plugin": name, "uninstalled": True}
        )

    # -- the steps -----------------------------------------------------------------

    def _build(
        self, specs: list[str], overrides: list[str], tell: Callable[[str, str], None]
    ) -> PluginEnvironment:
        plan = InstallPlan.of(tuple(specs), self.config.server.allow_sdist, tuple(overrides))
        return self.store.build(plan, tell)

    def _own(self, name: str) -> _Installed:
        """``name``'s current environment; refuses a plugin it does not hold."""
        self.supervisor.slot(name)  # UnknownPlugin for a name never seen
        environment = self.store.installed(name)
        if environment is None:
            raise InstallFailed(
                f"Plugin '{name}' is installed in the host's own environment (with pip), not "
                "with plugwarden install: upgrade or remove it with pip, then restart the server."
            )
        return _Installed(environment, *self.store.specs(environment.id))

    def _one_plugin(self, environment: PluginEnvironment, name: str | None) -> PluginSource:
        found = discover(environment=environment)
        if name is not None:
            if name not in found.plugins:
                held = ", ".join(sorted(found.plugins)) or "none"
                raise InstallFailed(f"The new version holds no plugin '{name}' (it holds: {held}).")
            return found.plugins[name]
        if len(found.plugins) != 1:
            held = ", ".join(sorted(found.plugins)) or "no plugwarden.plugins entry point"
            raise InstallFailed(
                f"An environment holds one plugin; this install holds {held}. Install each "
                "plugin's distribution on its own."
            )
        return next(iter(found.plugins.values()))

    def _switch_to(
        self,
        name: str,
        source: PluginSource,
        environment: PluginEnvironment,
        tell: Callable[[str, str], None],
        *,
        probation: bool,
    ) -> CallResult:
        tell("starting", f"starting {source.origin} beside the running version")
        try:
            new = self.versions.trial(name, source, tell)
        except InstallFailed as exc:
            self.supervisor.registry.note(
                name, f"Upgrade to {source.origin} refused, nothing changed: {exc.reason}"
            )
            raise
        old = self.versions.switch(name, new, f"Switched to {source.origin}")
        if old is None or not probation:
            if old is not None:
                self.versions.retire(name, old, ErrorType.RESTARTED)
            self._keep(name, environment, source)
            return _done(name, source, "switched", State.INITIALIZED)
        failure = self.versions.probation(name, old, new, tell)
        if failure is not None:
            raise InstallFailed(
                f"{source.origin} was rolled back to {old.version}: {failure}",
                ErrorType.ROLLED_BACK,
            )
        self._keep(name, environment, source)
        return _done(name, source, "upgraded", State.INITIALIZED)

    def _keep(self, name: str, environment: PluginEnvironment, source: PluginSource) -> None:
        if self.store.index().get(name, {}).get("previous") == environment.id:
            self.store.swap(name, source.dist_version)  # a rollback: the two trade places
        else:
            self.store.commit(name, environment.id, source.dist_version, "upgraded")
        self._show(name)

    def _show(self, name: str) -> None:
        """The record shows the environment with its version history."""
        current = self.store.installed(name)
        registry = self.supervisor.registry
        if current is not None:
            info = registry.status(name).info
            registry.set_info(name, dataclasses.replace(info, environment=current.summary()))


class _Installed:
    def __init__(
        self, environment: PluginEnvironment, specs: tuple[str, ...], overrides: tuple[str, ...]
    ) -> None:
        self.environment = environment
        self.specs = specs
        self.overrides = overrides


def _version_of(environment: PluginEnvironment, name: str) -> str:
    found = discover(environment=environment).plugins.get(name)
    return found.dist_version if found is not None else "?"


def _teller(control: CallControl) -> Callable[[str, str], None]:
    control.starting()

    def tell(phase: str, message: str) -> None:
        if control.cancel_requested:  # between two steps: nothing is half made
            raise InstallFailed(f"Cancelled by request (before {phase}).", ErrorType.CANCELLED)
        step = PHASES.index(phase) + 1 if phase in PHASES else 0
        control.progress(step, len(PHASES), f"{phase}: {message}")

    return tell


def _done(name: str, source: PluginSource, what: str, state: State) -> CallResult:
    environment = source.environment
    result: dict[str, Any] = {
        "plugin": name,
        what: True,
        "version": source.dist_version,
        "distribution": source.origin,
        "state": state.value,
        "environment": None if environment is None else environment.root,
    }
    return CallResult(True, plugin=name, hook=what, result=result)
