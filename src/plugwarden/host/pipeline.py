"""One run of the pipeline for one plugin (docs/guides/states.md): manifest
-> pre-flight checks -> load -> init -> validate, each step's outcome a
lifecycle transition with its reason.

The pipeline gets what it needs (the config, the registry, a way to make a
runner), never the host; the supervisor runs it and owns what it leaves
behind in the :class:`PluginRecord`.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from plugwarden.config import HostConfig
from plugwarden.environments.runtime import WORKER_PACKAGES
from plugwarden.exceptions import LoadError, ManifestError
from plugwarden.host.record import PluginRecord
from plugwarden.host.registry import Registry
from plugwarden.host.status import PluginInfo
from plugwarden.isolation.process.sandbox import Sandbox
from plugwarden.isolation.runner import Runner
from plugwarden.plugin.discovery import PluginSource
from plugwarden.plugin.lifecycle import State
from plugwarden.plugin.manifest import RAY_ISOLATIONS, Manifest, read_manifest
from plugwarden.plugin.venv import PluginEnvironment
from plugwarden.preflight.causes import REINSTALL
from plugwarden.preflight.context import Check, PreflightContext, run_preflight
from plugwarden.preflight.gpu import check_gpu
from plugwarden.preflight.models import check_models
from plugwarden.preflight.packages import check_packages, check_requirements
from plugwarden.settings import host_secrets, plugin_home, resolve

__all__ = ["PREFLIGHT", "Pipeline", "RunnerMaker"]

log = logging.getLogger("plugwarden.lifecycle")

# Cheapest first; the GPU probe runs only for plugins that ask for a GPU.
LOCAL_PREFLIGHT: list[Check] = [check_requirements, check_packages, check_models]
PREFLIGHT: list[Check] = [*LOCAL_PREFLIGHT, check_gpu]


RunnerMaker = Callable[[PluginSource, PluginRecord, int], Runner]


NO_MANIFEST = (
    "No manifest (manifest.toml in its package): it declares no tools (any tool name is "
    "accepted), packages, model files or guards, so nothing of it is checked before a call. "
    "Add one: plugwarden check NAME says what is missing."
)


class Pipeline:
    """One run of manifest -> checks -> load -> init/validate, as generation
    ``slot.generation`` of plugin ``name``."""

    def __init__(
        self,
        name: str,
        slot: PluginRecord,
        source: PluginSource,
        config: HostConfig,
        registry: Registry,
        make_runner: RunnerMaker,
        shared: dict[str, Any],
        closing: Callable[[], bool],
    ) -> None:
        self.name = name
        self.slot = slot
        self.source = source
        self.config = config
        self.registry = registry
        self.make_runner = make_runner
        self.shared = shared
        self.closing = closing
        self._first = True
        self.notes: list[str] = []  # for the history, after the first move

    def move(self, state: State, reason: str) -> None:
        level = logging.WARNING if state is State.FAILED else logging.INFO
        log.log(level, "plugin %r: %s: %s", self.name, state.value, reason,
                extra={"plugin": self.name, "state": state.value})  # fmt: skip
        self.registry.transition(
            self.name,
            state,
            reason,
            restart=self._first,
            generation=self.slot.generation,
            info=self.info(),
        )
        self._first = False
        while self.notes:
            note = self.notes.pop(0)
            log.warning("plugin %r: %s", self.name, note, extra={"plugin": self.name})
            self.registry.note(self.name, note, self.slot.generation)

    def run(self) -> None:
        slot, name, config = self.slot, self.name, self.config
        defaults = slot.use(resolve(name, Manifest(), config))  # none of the last bring-up
        if not defaults.enabled:  # nothing of a disabled plugin is read, let alone run
            self.move(
                State.UNAVAILABLE,
                f"Disabled in the host config ({config.source}: [plugins.{name}] "
                "enabled = false). Set enabled = true to load it.",
            )
            return
        try:
            manifest = read_manifest(self.source.package_dir)
        except ManifestError as exc:
            self.move(
                State.FAILED,
                f"{exc} (the installed copy). Fix the manifest in the plugin's source, then "
                f"{REINSTALL}.",
            )
            return
        settings = slot.use(resolve(name, manifest, config))
        if manifest.path is None:  # none in its package: it runs, undeclared
            self.notes.append(NO_MANIFEST)
        self.notes.extend(settings.notes)
        context = PreflightContext(
            self.source,
            settings.manifest,
            settings.init_config,
            settings.models_dir,
            shared=self.shared,
        )
        environment = self.source.environment
        if environment is not None and settings.limits.isolation != "process":
            self.move(
                State.UNAVAILABLE,
                f"isolation = {settings.limits.isolation!r} is not available to a plugin in an "
                f"environment of its own ({environment.root}): its code runs in that "
                "environment's workers only. Remove the isolation setting for it, or install it "
                "into the host's environment (pip install).",
            )
            return
        # On Ray, the GPU question is the cluster's: the runner asks it.
        checks = LOCAL_PREFLIGHT if settings.limits.isolation in RAY_ISOLATIONS else PREFLIGHT
        verdict = run_preflight(context, checks)
        if verdict.state is not None:
            self.move(verdict.state, verdict.reason)
            return
        if self.closing():  # close() began while this plugin was being checked
            return
        slot.sandbox = Sandbox.draw(
            grants=settings.grants,
            search_path=import_path(self.source),
            prefixes=None if environment is None else python_prefixes(environment),
            extra_read=[str(path) for path in context.facts.get("models", {}).values()],
            secrets=host_secrets(config),
            home=plugin_home(name, settings.limits.worker_user),
            gpu=settings.manifest.requires_gpu,
            limits=settings.limits,
            env=settings.env,
        )
        try:
            runner = slot.runner = self.make_runner(self.source, slot, slot.generation)
            runner.load()
        except LoadError as exc:
            self.move(State.UNAVAILABLE if exc.unavailable else State.FAILED, exc.reason)
            return
        self.move(State.LOADED, f"imported from {self.source.origin}")
        models = context.facts.get("models", {})
        private = {"models": models, "state_dir": slot.sandbox.state_dir}
        reason = runner.initialise({**settings.init_config, **private})
        if reason is not None:
            self.move(State.FAILED, reason)
            return
        self.move(State.INITIALIZED, "ready")

    def info(self) -> PluginInfo:
        environment = self.source.environment
        manifest, source = self.slot.manifest, self.source
        settings, runner = self.slot.settings, self.slot.runner
        return PluginInfo(
            description=manifest.description or "",
            version=manifest.version or source.dist_version,
            distribution=source.origin,
            isolation=self.slot.limits.isolation,
            tools=tuple(manifest.tools),
            enabled=self.slot.settings is None or self.slot.settings.enabled,
            requires_gpu=manifest.requires_gpu,
            workers=self.slot.limits.workers if self.slot.limits.isolation != "inline" else 0,
            permissions={} if settings is None else settings.grants.as_dict(),
            protections={} if runner is None else dict(runner.protections),
            environment=None if environment is None else environment.summary(),
        )


def python_prefixes(environment: PluginEnvironment) -> tuple[str, ...]:
    """A plugin's own environment's Python: the environment and the base
    installation it was made from (never the host's environment)."""
    return (environment.root, sys.base_prefix, sys.base_exec_prefix)


def import_path(source: PluginSource) -> list[str]:
    """What a plugin's workers import from, for their sandbox: the host's
    path and the plugin's, or its own environment's and the host's worker
    side (the runtime folder and what its links point to)."""
    environment = source.environment
    if environment is None:
        return [*sys.path, *source.search_path]
    runtime = environment.runtime
    linked = [os.path.realpath(os.path.join(runtime, name)) for name in WORKER_PACKAGES]
    return [*environment.sys_path, runtime, *linked]
