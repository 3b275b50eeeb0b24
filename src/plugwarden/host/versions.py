"""Switching a plugin between versions without a failed call
(docs/guides/environments.md).

An upgrade brings the new version up *beside* the running one: its own
pipeline (manifest, pre-flight, load, init and validate) against a record
of its own, then a smoke check (its health hook on every worker). Only then
are new calls switched to it, in one step under the plugin's lock; calls
in flight finish on the version they started on (a job too). The old
version stays warm through ``probation_s``: if the new one loses a worker,
fails or fails a health check meanwhile, calls go back to the old one at
once (a call whose worker the new version lost is retried there, see
:class:`~plugwarden.host.calls.Calls`), and the upgrade is rolled back.
Past probation the old version's workers stop, once idle.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from plugwarden.config import HostConfig
from plugwarden.error_types import ErrorType
from plugwarden.exceptions import InstallFailed
from plugwarden.host.pipeline import Pipeline
from plugwarden.host.record import PluginRecord
from plugwarden.host.registry import Registry
from plugwarden.host.status import PluginInfo
from plugwarden.isolation.process.sandbox import Sandbox
from plugwarden.isolation.runner import LossRoute, Runner, WorkerLoss
from plugwarden.plugin.discovery import PluginSource
from plugwarden.plugin.lifecycle import State
from plugwarden.plugin.manifest import Manifest
from plugwarden.plugin.policy import RestartBudget
from plugwarden.settings import PluginSettings, resolve, resolve_policy

if TYPE_CHECKING:
    from plugwarden.host.supervisor import Supervisor

__all__ = ["Running", "Versions"]

# How a switch tells how far it got: (phase, message).
Tell = Callable[[str, str], None]
POLL_S = 0.1  # probation reads the plugin's health this often
SMOKE_TOOL = "plugwarden-smoke-check-no-such-tool"


@dataclass(slots=True, eq=False)
class Running:
    """One version of a plugin as it runs."""

    source: PluginSource
    settings: PluginSettings
    sandbox: Sandbox | None
    runner: Runner
    route: LossRoute
    info: PluginInfo

    @property
    def version(self) -> str:
        return self.info.version or self.source.dist_version


@dataclass(slots=True, eq=False)
class _Probation:
    old: Running
    new: Running
    generation: int  # the new version's
    ended: threading.Event = field(default_factory=threading.Event)
    failure: str | None = None  # why it was rolled back


class Versions:
    def __init__(self, config: HostConfig, supervisor: Supervisor) -> None:
        self.config = config
        self.supervisor = supervisor
        self.registry: Registry = supervisor.registry
        self._probations: dict[str, _Probation] = {}
        self._lock = threading.Lock()

    # -- bringing a version up beside the running one ----------------------------------

    def trial(self, name: str, source: PluginSource, tell: Tell) -> Running:
        """``source`` brought up and checked, serving nobody yet; raises
        :class:`InstallFailed` with the reason it is not fit to serve."""
        trial_registry = Registry(self.config.lock_timeout_s)
        record = PluginRecord(name, source, resolve(name, Manifest(), self.config))
        trial_registry.add(record)
        losses: list[WorkerLoss] = []
        route = LossRoute(lambda _generation, loss: losses.append(loss), -1)

        def make(found: PluginSource, slot: PluginRecord, _generation: int) -> Runner:
            return self.supervisor.make_runner(found, slot, route)

        tell("pre-flight", f"checking {source.origin}")
        pipeline = Pipeline(
            name, record, source, self.config, trial_registry, make, {},
            lambda: self.supervisor.closing,
        )  # fmt: skip
        pipeline.run()
        status = trial_registry.status(name)
        runner = record.runner
        if status.state is not State.INITIALIZED or runner is None or record.settings is None:
            self._close(runner, ErrorType.CLOSED)
            raise InstallFailed(f"{source.origin} is {status.state.value}: {status.reason}")
        tell("checking", f"smoke check of {source.origin} (its examples; an unknown tool; health)")
        reason = self._smoke(runner, record.manifest.examples) or (
            losses[0].reason if losses else None
        )
        if reason is not None:
            self._close(runner, ErrorType.CLOSED)
            raise InstallFailed(f"{source.origin} failed its smoke check: {reason}")
        return Running(source, record.settings, record.sandbox, runner, route, status.info)

    def _smoke(self, runner: Runner, examples: Mapping[str, Mapping[str, Any]]) -> str | None:
        """The level-1 conformance checks a new version can pass or fail on
        its own (docs/guides/writing-plugins.md): PW007, each tool answers the
        example its manifest gives; PW008, an unknown tool is a clear
        per-call error; PW009, health() answers, on every worker."""
        budget = self.config.health_timeout_s
        timeout = runner.limits.timeout_s
        for tool, args in examples.items():
            answer = runner.call("run", {"tool": tool, "args": dict(args)}, timeout, wait_s=timeout)
            if not answer.ok:
                return f"its example of {tool} failed: {answer.error_type}: {answer.error} (PW007)"
        unknown = runner.call("run", {"tool": SMOKE_TOOL, "args": {}}, timeout, wait_s=timeout)
        if unknown.ok:
            return f"run() of an unknown tool ({SMOKE_TOOL!r}) answered ok (PW008)"
        for _ in range(max(1, runner.limits.workers)):
            result = runner.call("health", {}, budget, wait_s=budget)
            if not result.ok:
                return f"health(): {result.error} (PW009)"
        return None

    # -- switching -------------------------------------------------------------------

    def current(self, name: str) -> Running | None:
        slot = self.supervisor.slot(name)
        if slot.source is None or slot.settings is None or slot.runner is None:
            return None
        return Running(
            slot.source, slot.settings, slot.sandbox, slot.runner, slot.route,
            self.registry.status(name).info,
        )  # fmt: skip

    def switch(self, name: str, to: Running, reason: str) -> Running | None:
        """New calls go to ``to`` from now on; returns the version that
        served until now (None: none did, e.g. it was FAILED)."""
        slot = self.supervisor.slot(name)
        with slot.lock:
            before = self.current(name)
            slot.source, slot.sandbox = to.source, to.sandbox
            slot.use(to.settings)
            slot.runner, slot.route = to.runner, to.route
            slot.budget = RestartBudget(resolve_policy(name, self.config))
            slot.restart_pending = False
            generation = self.registry.switch(name, reason, to.info)
            to.route.report = lambda gen, loss: self.supervisor.worker_lost(name, gen, loss)
            to.route.generation = generation
            if before is not None:
                before.route.generation = -1  # its reports change nothing now
        return before

    def probation(self, name: str, old: Running, new: Running, tell: Tell) -> str | None:
        """Watch ``new`` for ``probation_s``; None when it held (``old`` is
        then stopped once idle), else why it was rolled back to ``old``."""
        slot = self.supervisor.slot(name)
        seconds = self.config.server.probation_s
        probation = _Probation(old, new, slot.generation)
        with self._lock:
            self._probations[name] = probation
        tell("probation", f"watching {new.version} for {seconds:g}s")
        deadline = time.monotonic() + seconds
        try:
            while not probation.ended.wait(min(POLL_S, max(0.0, deadline - time.monotonic()))):
                if time.monotonic() >= deadline:
                    break
                if slot.health_failures > 0 and slot.generation == probation.generation:
                    error = (slot.health or {}).get("error") or "a failed health check"
                    self._roll_back(name, probation, f"health check failed: {error}")
        finally:
            with self._lock:
                self._probations.pop(name, None)
        if probation.failure is None:
            self.retire(name, old, ErrorType.RESTARTED)
        return probation.failure

    def failed_probation(self, name: str, generation: int, why: WorkerLoss | str) -> bool:
        """A failure of ``name``'s generation ``generation``: if that is a
        version in probation, it is rolled back (True)."""
        with self._lock:
            probation = self._probations.get(name)
        if probation is None or probation.generation != generation:
            return False
        self._roll_back(name, probation, why if isinstance(why, str) else why.reason)
        return True

    def _roll_back(self, name: str, probation: _Probation, why: str) -> None:
        with self._lock:
            if probation.failure is not None:
                return
            probation.failure = why
        old, new = probation.old, probation.new
        self.switch(name, old, f"Rolled back to {old.version}: {new.version} failed in probation "
                    f"({why})")  # fmt: skip
        probation.ended.set()
        # Not on this thread: it may be the new version's own call, still unwinding.
        self.supervisor.schedule(0, lambda: self._stop(name, new, ErrorType.RESTARTED))

    def retire(self, name: str, running: Running, why: str) -> None:
        """Stop ``running``'s workers once its calls in flight have ended
        (at most its longest timeout), in the background."""
        limits = running.runner.limits
        wait = max(limits.timeout_s, limits.job_timeout_s)

        def stop() -> None:
            running.runner.wait_idle(wait)
            self._stop(name, running, why)

        threading.Thread(target=stop, name="plugwarden-retire", daemon=True).start()

    def _stop(self, name: str, running: Running, why: str) -> None:
        self.supervisor.stop_runner(name, running.runner, running.source, why)

    @staticmethod
    def _close(runner: Runner | None, why: str) -> None:
        if runner is not None:
            runner.close(why)
