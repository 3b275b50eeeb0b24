"""The supervisor: the one owner of "this plugin failed".

It alone moves a plugin to FAILED (outside its own pipeline), closes or
replaces its runner, and applies the restart policy (docs/guides/states.md):

- a lost worker is replaced, the plugin staying available: at once when it
  is the first restart in the window, else after the backoff (if others
  still serve);
- a plugin with no worker able to serve (or whose pipeline failed) is
  FAILED, then restarted after a backoff (1 s doubling to 60 s, jitter);
- more than ``max_restarts`` within ``restart_window_s`` is a crash loop:
  FAILED until a manual restart, which always reruns the whole pipeline and
  resets the count.

Every report carries the generation it belongs to; one from an older bring-up
changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from plugwarden.config import HostConfig
from plugwarden.error_types import ErrorType
from plugwarden.exceptions import UnknownPlugin
from plugwarden.host.pipeline import Pipeline
from plugwarden.host.record import PluginRecord
from plugwarden.host.registry import Registry
from plugwarden.host.scheduler import Scheduler
from plugwarden.host.status import PluginStatus
from plugwarden.isolation.runner import LossRoute, Runner, RunnerFactory, WorkerLoss
from plugwarden.plugin.discovery import Discovery, PluginSource
from plugwarden.plugin.lifecycle import State
from plugwarden.plugin.manifest import Manifest
from plugwarden.plugin.policy import RestartBudget
from plugwarden.settings import Placement, resolve, resolve_policy


class Probations(Protocol):
    """Upgrades in probation (:class:`~plugwarden.host.versions.Versions`)."""

    def failed_probation(self, name: str, generation: int, why: WorkerLoss | str) -> bool:
        """A failure of a version in probation rolls it back (True)."""


__all__ = ["Supervisor"]

log = logging.getLogger("plugwarden.supervisor")


class Supervisor:
    def __init__(self, config: HostConfig, registry: Registry, backends: RunnerFactory) -> None:
        self.config = config
        self.registry = registry
        self._backends = backends
        self._scheduler = Scheduler()
        self._closing: str | None = None
        self.versions: Probations | None = None  # set by the host: upgrades in probation

    @property
    def closing(self) -> bool:
        return self._closing is not None

    def slot(self, name: str) -> PluginRecord:
        """``name``'s record; raises :class:`UnknownPlugin` for a name the host
        cannot load."""
        slot = self.registry.record(name)
        if slot is None:
            raise UnknownPlugin(name, self.registry.names())
        return slot

    # -- bringing plugins up -------------------------------------------------------

    def start(self, found: Discovery) -> None:
        """Bring every discovered plugin up, concurrently."""
        for name, claimants in found.duplicates.items():
            names = ", ".join(f"{s.origin} ({s.value})" for s in claimants)
            self.registry.transition(
                name,
                State.FAILED,
                f"Plugin name '{name}' is claimed by {len(claimants)} distributions: {names}. "
                "Uninstall all but one, or rename an entry point.",
            )
        for name, source in found.unaddressable.items():
            self.registry.transition(
                name,
                State.FAILED,
                f"Plugin name {name!r} (entry point of {source.origin}) cannot be addressed in "
                "a URL: use 1-100 letters, digits, '.', '_' or '-', starting with a letter or "
                "digit. Rename the entry point and reinstall.",
            )
        for name, source in found.plugins.items():
            self.registry.add(PluginRecord(name, source, resolve(name, Manifest(), self.config)))
        installed = set(found.plugins) | set(found.duplicates) | set(found.unaddressable)
        for name in sorted(set(self.config.plugins) - installed):
            log.warning(
                "The config (%s) has a table [plugins.%s] but no plugin %r is installed: a "
                "typo? Installed: %s.",
                self.config.source, name, name, ", ".join(sorted(installed)) or "none",
            )  # fmt: skip
        shared: dict[str, Any] = {}
        workers = max(1, min(32, len(found.plugins)))
        with ThreadPoolExecutor(workers, thread_name_prefix="plugwarden-start") as pool:
            for name in found.plugins:
                pool.submit(self.bring_up, name, shared, manual=False)

    def add(self, source: PluginSource) -> PluginStatus:
        """A plugin installed while the host runs: listed, then brought up.
        Raises :class:`ValueError` when its name is taken."""
        name = source.name
        if name in self.registry or self.registry.record(name) is not None:
            raise ValueError(f"A plugin named '{name}' is already installed")
        self.registry.add(PluginRecord(name, source, resolve(name, Manifest(), self.config)))
        self.bring_up(name, {}, manual=False)
        return self.registry.status(name)

    def remove(self, name: str, why: str) -> None:
        """``name`` is uninstalled: its runner closed (calls in flight end
        with ``why``), its record gone."""
        slot = self.slot(name)
        with slot.lock:
            self.registry.next_generation(name)  # reports of its runner change nothing now
            self._close_runner(slot, why)
            self.registry.remove(name)

    def schedule(self, delay: float, task: Callable[[], None]) -> None:
        self._scheduler.after(delay, task)

    def stop_runner(self, name: str, runner: Runner, source: PluginSource, why: str) -> None:
        """Close ``runner`` (a version of ``name`` that no longer serves),
        and its environment's zygote unless ``name`` runs from there again."""
        runner.close(why)
        environment = source.environment
        slot = self.registry.record(name)
        serving = None if slot is None or slot.source is None else slot.source.environment
        if environment is not None and serving != environment:
            self._backends.retire(environment)

    def restart(self, name: str) -> PluginStatus:
        """A manual restart: the whole pipeline again, the count reset. A
        name claimed by two distributions stays FAILED (nothing to load)."""
        if self.registry.record(name) is not None:
            self.bring_up(name, {}, manual=True)
        return self.registry.status(name)

    def bring_up(self, name: str, shared: dict[str, Any], *, manual: bool) -> None:
        slot = self.slot(name)
        source = slot.source
        if source is None:  # listed, but nothing to load (see Registry.record)
            return
        with slot.lock:
            if self._closing is not None:
                return
            self._close_runner(slot, ErrorType.RESTARTED)
            policy = resolve_policy(name, self.config)
            if manual or slot.budget.policy != policy:
                slot.budget = RestartBudget(policy)
            slot.restart_pending = False
            self.registry.next_generation(name)
            pipeline = Pipeline(
                name,
                slot,
                source,
                self.config,
                self.registry,
                self._make_runner,
                shared,
                lambda: self.closing,
            )
            if manual:  # a trace of the operator's restart, and a count apart
                pipeline.notes.append("Restarted by request (API, CLI or HTTP).")
                self.registry.record_restart(name, "manual")
            try:
                pipeline.run()
            # The host must survive a bug of its own in one plugin's pipeline.
            except Exception as exc:
                log.exception("plugin %r: pipeline error", name, extra={"plugin": name})
                pipeline.move(
                    State.FAILED, f"Internal error while loading: {exc!r}. Please report it."
                )
            status = self.registry.status(name)
            if status.state in (State.FAILED, State.UNAVAILABLE) or self._closing is not None:
                self._close_runner(slot, ErrorType.CLOSED)
            generation = slot.generation
        if status.state is State.FAILED and status.generation == generation:
            self._after_failure(name, generation, status.reason, "failed")

    def _make_runner(self, source: PluginSource, slot: PluginRecord, generation: int) -> Runner:
        name = source.name
        slot.route = LossRoute(lambda gen, loss: self.worker_lost(name, gen, loss), generation)
        return self.make_runner(source, slot, slot.route)

    def make_runner(self, source: PluginSource, slot: PluginRecord, route: LossRoute) -> Runner:
        """A runner for ``source`` with ``slot``'s settings, reporting to ``route``."""
        return self._backends.make(
            source,
            slot.limits,
            route,
            Placement() if slot.settings is None else slot.settings.placement,
            slot.sandbox,
            slot.manifest.preload,
        )

    @staticmethod
    def _close_runner(slot: PluginRecord, why: str) -> None:
        runner, slot.runner = slot.runner, None
        if runner is not None:
            runner.close(why)

    # -- failures and the restart policy ---------------------------------------------

    def worker_lost(self, name: str, generation: int, loss: WorkerLoss) -> None:
        """A runner lost a worker. A loss between calls is reported on the
        zygote's reader thread, which must stay free to report the exits that
        closing a runner waits for: it is handled on the scheduler's pool."""
        if loss.during_call:
            self._worker_lost(name, generation, loss)
        else:
            self._scheduler.after(0, lambda: self._worker_lost(name, generation, loss))

    def _worker_lost(self, name: str, generation: int, loss: WorkerLoss) -> None:
        slot = self.slot(name)
        if slot.stale(generation) or self._closing is not None:
            return
        if self.versions is not None and self.versions.failed_probation(name, generation, loss):
            return  # rolled back to the version before
        if loss.guard is None:
            # The host ended it (a forced cancel): not the plugin's failure,
            # so no trip, no backoff and no restart count; replaced at once.
            self.registry.note(name, "A forced cancel ended a worker; replacing it", generation)
            self._scheduler.after(0, lambda: self._replace(name, generation, None))
            return
        if not loss.during_call:
            self.registry.record_trip(name, loss.guard)
        # The first loss in the restart window is replaced at once, as a
        # process pool would: calls wait for the new worker and the plugin
        # stays available. A later loss with no worker left makes
        # the plugin FAILED, restarted after the backoff.
        at_once = slot.budget.policy.automatic and loss.replaceable
        if loss.serving == 0 and not (at_once and slot.budget.recent == 0):
            self.fail(name, generation, loss.reason, loss.guard)
            return
        delay = slot.budget.next_delay(at_once_first=at_once)
        if delay is None:
            self.fail(name, generation, loss.reason, loss.guard, counted=True)
            return
        # fail() logs the losses that fail the plugin; this one it survives.
        log.warning("plugin %r: %s", name, loss.reason, extra={"plugin": name})
        when = "now" if delay == 0 else f"in {delay:.1f}s"
        self.registry.note(
            name,
            f"Worker lost ({loss.reason}); {loss.serving} still serving, "
            f"a replacement starts {when}",
            generation,
        )
        self._scheduler.after(delay, lambda: self._replace(name, generation, loss.guard))

    def fail(
        self, name: str, generation: int, reason: str, cause: str, *, counted: bool = False
    ) -> None:
        """Move ``name`` to FAILED (if ``generation`` is current), close its
        runner and apply the restart policy. ``counted``: the budget already
        refused a restart for this failure (a crash loop)."""
        slot = self.slot(name)
        versions = self.versions
        if versions is not None and versions.failed_probation(name, generation, reason):
            return  # rolled back to the version before
        if counted:
            reason = self._crash_loop_reason(name, slot, reason)
        if not self.registry.fail(name, reason, generation):
            return
        log.warning(
            "plugin %r: FAILED: %s", name, reason, extra={"plugin": name, "state": "FAILED"}
        )
        if not slot.stale(generation):
            self._close_runner(slot, ErrorType.RESTARTED)
        if not counted:
            self._after_failure(name, generation, reason, cause)

    def _after_failure(self, name: str, generation: int, reason: str, cause: str) -> None:
        slot = self.slot(name)
        if self._closing is not None or not slot.budget.policy.automatic:
            return
        if slot.restart_pending or slot.stale(generation):
            return
        delay = slot.budget.next_delay()
        if delay is None:
            loop = self._crash_loop_reason(name, slot, reason)
            self.registry.fail(name, loop, generation, again=True)
            return
        slot.restart_pending = True
        self.registry.note(
            name,
            f"Automatic restart {slot.budget.recent} of at most {slot.budget.policy.max_restarts} "
            f"in {slot.budget.policy.restart_window_s:g}s, in {delay:.1f}s",
            generation,
        )
        self._scheduler.after(delay, lambda: self._auto_restart(name, generation, cause))

    def _crash_loop_reason(self, name: str, slot: PluginRecord, last: str) -> str:
        policy = slot.budget.policy
        return (
            f"Crash loop: {policy.max_restarts} automatic restarts in "
            f"{policy.restart_window_s:g}s; last: {last}. Fix the plugin, then restart it "
            f"(plugwarden restart {name})."
        )

    def _auto_restart(self, name: str, generation: int, cause: str) -> None:
        slot = self.slot(name)
        if slot.stale(generation) or self._closing is not None:
            return  # restarted by hand meanwhile, or closing
        self.registry.record_restart(name, cause)
        self.bring_up(name, {}, manual=False)

    def _replace(self, name: str, generation: int, cause: str | None) -> None:
        slot = self.slot(name)
        with slot.lock:
            runner = slot.runner
            if slot.stale(generation) or runner is None or self._closing is not None:
                return
            reason = runner.replace_lost()
        if reason is None:
            if cause is not None:
                self.registry.record_restart(name, cause)
            how = runner.replacement_note
            self.registry.note(name, f"Lost worker replaced{f' {how}' if how else ''}", generation)
            return
        self.fail(name, generation, f"A lost worker could not be replaced: {reason}", "failed")

    # -- closing -------------------------------------------------------------------

    def close(self, why: str) -> None:
        """End every plugin's runner (calls in flight end with ``why``) and
        stop restarting anything."""
        if self._closing is not None:
            return
        self._closing = why
        self._backends.refuse_new()
        self._backends.close_runners(why)
        self._scheduler.close()
        for slot in self.registry.records():
            self._close_runner(slot, why)
