"""One run of the pipeline for one plugin (SPEC section 3):
manifest -> pre-flight checks -> load -> init -> validate, each step's
outcome a lifecycle transition with its reason."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from plugwarden.core.checks import Check, PreflightContext, run_preflight
from plugwarden.core.discovery import PluginSource
from plugwarden.core.gpu import check_gpu
from plugwarden.core.guards import Limits
from plugwarden.core.lifecycle import TERMINAL, State
from plugwarden.core.loader import LoadError
from plugwarden.core.manifest import Manifest, read_manifest
from plugwarden.core.models import check_models
from plugwarden.core.packages import check_packages, check_requirements
from plugwarden.core.registry import PluginInfo
from plugwarden.core.runner import Attempt, Runner
from plugwarden.exceptions import ManifestError

if TYPE_CHECKING:
    from plugwarden.core.host import Host

__all__ = ["PREFLIGHT", "Pipeline", "PluginSlot"]

# Cheapest first; the GPU probe runs only for plugins that ask for a GPU.
PREFLIGHT: list[Check] = [check_requirements, check_packages, check_models, check_gpu]


@dataclass(slots=True)
class PluginSlot:
    """What the host holds for one plugin between pipeline runs."""

    source: PluginSource
    manifest: Manifest = field(default_factory=Manifest)
    limits: Limits = field(default_factory=Limits)
    runner: Runner | None = None
    restart_lock: threading.Lock = field(default_factory=threading.Lock)


class Pipeline:
    """One run of discovery -> manifest -> checks -> load -> init/validate."""

    def __init__(
        self, host: Host, name: str, plugin: PluginSlot, shared: dict[str, Any], restart: bool
    ) -> None:
        self.host = host
        self.name = name
        self.plugin = plugin
        self.shared = shared
        self.restart = restart

    def move(self, state: State, reason: str) -> None:
        if state in TERMINAL and self.plugin.runner is not None:
            self.plugin.runner.close()  # a terminal state keeps no worker alive
        self.host.registry.transition(
            self.name, state, reason, restart=self.restart, info=self.info()
        )
        self.restart = False

    def run(self) -> None:
        host, plugin, name = self.host, self.plugin, self.name
        if plugin.runner is not None:
            plugin.runner.close()
            plugin.runner = None
        settings = host.config.plugin(name)
        source = plugin.source
        plugin.manifest = Manifest()
        if not settings.enabled:  # nothing of a disabled plugin is read, let alone run
            self.move(
                State.UNAVAILABLE,
                f"Disabled in the host config ({host.config.source}: [plugins.{name}] "
                "enabled = false). Set enabled = true to load it.",
            )
            return
        try:
            plugin.manifest = read_manifest(source.package_dir)
        except ManifestError as exc:
            self.move(State.FAILED, f"{exc}. Fix the manifest, then restart the plugin.")
            return
        plugin.limits = host.config.limits_for(name, plugin.manifest.guards)
        context = PreflightContext(
            source, plugin.manifest, settings.settings, settings.models_dir, shared=self.shared
        )
        verdict = run_preflight(context, PREFLIGHT)
        if verdict.state is not None:
            self.move(verdict.state, verdict.reason)
            return
        if host.closing:  # close() began while this plugin was being checked
            return
        runner = plugin.runner = host._make_runner(plugin)
        try:
            runner.load()
        except LoadError as exc:
            self.move(State.FAILED, exc.reason)
            return
        self.move(State.LOADED, f"imported from {source.origin}")
        config = {**settings.settings, "models": context.facts.get("models", {})}
        self.initialise(runner, config)

    def info(self) -> PluginInfo:
        manifest, source = self.plugin.manifest, self.plugin.source
        return PluginInfo(
            description=manifest.description or "",
            version=manifest.version or source.dist_version,
            distribution=source.origin,
            isolation=self.plugin.limits.isolation,
            tools=tuple(manifest.tools),
        )

    def initialise(self, runner: Runner, config: dict[str, Any]) -> None:
        budget = self.plugin.limits.load_timeout_s
        attempt = runner.call("init", {"config": config}, budget)
        if not attempt.outcome.ok:
            self.move(State.FAILED, self._hook_failure("init", attempt))
            return
        attempt = runner.call("validate", {}, budget)
        verdict = _validate_verdict(attempt)
        if verdict is not None:
            self.move(State.FAILED, verdict)
            return
        self.move(State.INITIALIZED, "ready")

    def _hook_failure(self, hook: str, attempt: Attempt) -> str:
        outcome = attempt.outcome
        if attempt.guard is not None:
            return outcome.error or f"{hook}() tripped the {attempt.guard} guard"
        return f"{hook}() failed with {outcome.error}. Fix the plugin, then restart it."


def _validate_verdict(attempt: Attempt) -> str | None:
    """None when validate() said ready, else the reason it is not."""
    outcome = attempt.outcome
    if attempt.guard is not None:
        return outcome.error
    if not outcome.ok:
        return f"validate() raised {outcome.error}. Fix the plugin, then restart it."
    value = outcome.value
    if value is None or value is True:
        return None
    if value is False:
        return "validate() returned False: the plugin reports it is not ready."
    if isinstance(value, str):
        return f"validate() reported: {value}"
    return (
        f"validate() returned {type(value).__name__}; expected None, True, False or a "
        "reason string."
    )
