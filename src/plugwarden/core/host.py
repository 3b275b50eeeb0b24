"""The host (SPEC section 6): discovery -> manifest -> checks -> load ->
init/validate -> registry, and every call through a guard."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from plugwarden.config import HostConfig
from plugwarden.core.discovery import Discovery, discover
from plugwarden.core.guards import Outcome
from plugwarden.core.health import HealthPoller
from plugwarden.core.inline import ElasticExecutor, HostMemoryWatch, InlineRunner
from plugwarden.core.lifecycle import State, iso
from plugwarden.core.output import OutputPump
from plugwarden.core.pipeline import Pipeline, PluginSlot
from plugwarden.core.process import MemoryMonitor, ProcessRunner
from plugwarden.core.registry import PluginStatus, Registry
from plugwarden.core.result import CallResult
from plugwarden.core.runner import BUSY, Attempt, Runner
from plugwarden.core.zygote import Zygote
from plugwarden.exceptions import PlugwardenError, UnknownPlugin

__all__ = ["Host"]

log = logging.getLogger("plugwarden.host")


class Host:
    """Finds, checks, loads and guards every installed plugin.

    ``config`` is a :class:`HostConfig`, a mapping shaped like the TOML file,
    a path to one, or None (``plugwarden.toml`` here, else the defaults).
    ``search_path`` limits discovery to those directories (default
    ``sys.path``)."""

    def __init__(
        self,
        config: HostConfig | Mapping[str, Any] | str | os.PathLike[str] | None = None,
        *,
        search_path: Sequence[str] | None = None,
    ) -> None:
        if isinstance(config, HostConfig):
            self.config = config
        elif isinstance(config, Mapping):
            self.config = HostConfig.from_dict(config).with_env()
        else:
            self.config = HostConfig.load(config)
        self._search_path = None if search_path is None else list(search_path)
        self.registry = Registry(self.config.lock_timeout_s)
        self._plugins: dict[str, PluginSlot] = {}
        self._inline_executor = ElasticExecutor()
        self._inline_memory = HostMemoryWatch()
        self._zygote = Zygote()
        self._output = OutputPump()
        self._memory = MemoryMonitor()
        self._started = threading.Event()
        self._start_lock = threading.Lock()
        self._closed = False
        self._health: HealthPoller | None = None

    # -- lifecycle of the host -------------------------------------------------

    def start(self) -> None:
        """Discover, check, load, initialise and validate every plugin,
        concurrently. Never raises for a plugin's fault; a second call does
        nothing (use :meth:`restart` for one plugin)."""
        with self._start_lock:
            if self._plugins or self._started.is_set():
                return
            self._start()

    def _start(self) -> None:
        found = discover(self._search_path)
        self._register_duplicates(found)
        shared: dict[str, Any] = {}
        for name, source in found.plugins.items():
            self._plugins[name] = PluginSlot(source)
        workers = max(1, min(32, len(found.plugins)))
        with ThreadPoolExecutor(workers, thread_name_prefix="plugwarden-start") as pool:
            for name in found.plugins:
                pool.submit(self._bring_up_safely, name, shared, False)
        self._started.set()

    @property
    def started(self) -> bool:
        return self._started.is_set()

    @property
    def closing(self) -> bool:
        return self._closed

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._health is not None:
            self._health.stop()
        runners = [p.runner for p in self._plugins.values() if p.runner is not None]
        if runners:
            with ThreadPoolExecutor(min(32, len(runners))) as pool:
                list(pool.map(lambda runner: runner.close(), runners))
        self._memory.close()
        self._zygote.close()
        self._output.close()

    def __enter__(self) -> Host:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- reading -----------------------------------------------------------------

    def status(self, name: str) -> PluginStatus:
        return self.registry.status(name)

    def statuses(self) -> list[PluginStatus]:
        return self.registry.statuses()

    def worker_pids(self, name: str) -> list[int]:
        """The live worker processes of a ``process`` plugin (empty for inline)."""
        runner = self._runner_of(name)
        return runner.pids() if runner is not None else []

    def resident_bytes(self, name: str) -> int | None:
        """Resident memory of a process plugin's workers and their children."""
        runner = self._runner_of(name)
        return runner.resident_bytes() if runner is not None else None

    def _runner_of(self, name: str) -> Runner | None:
        """The plugin's runner; None for one that has none (a duplicate name)."""
        plugin = self._plugins.get(name)
        if plugin is None and name not in self.registry:
            raise UnknownPlugin(name, self.registry.names())
        return None if plugin is None else plugin.runner

    def _known(self, name: str) -> PluginSlot:
        plugin = self._plugins.get(name)
        if plugin is None:
            raise UnknownPlugin(name, list(self._plugins))
        return plugin

    # -- calls -------------------------------------------------------------------

    def call(self, name: str, tool: str, args: Mapping[str, Any] | None = None) -> CallResult:
        """Run ``tool`` of plugin ``name``; always a result record, never raises."""
        arguments = dict(args) if isinstance(args, Mapping) else {}
        refused = self._refuse(name, tool, args)
        if refused is not None:
            return CallResult.failure(name, refused[0], refused[1], tool=tool, args=arguments)
        plugin = self._plugins[name]
        try:
            refusal = self.registry.begin_call(name)
        except PlugwardenError as exc:
            return CallResult.failure(name, str(exc), type(exc).__name__, tool=tool, args=arguments)
        if refusal is not None:
            return CallResult.failure(
                name,
                f"Plugin '{name}' is {refusal.state.value}: {refusal.reason}",
                "PluginNotAvailable",
                tool=tool,
                args=arguments,
            )
        runner = plugin.runner
        if runner is None:  # restarted between begin_call and here
            attempt = Attempt(Outcome(False, error="Plugin is restarting", error_type="Restarting"))
        else:
            attempt = runner.call("run", {"tool": tool, "args": arguments}, plugin.limits.timeout_s)
        outcome = attempt.outcome
        result = CallResult(
            ok=outcome.ok,
            plugin=name,
            tool=tool,
            args=arguments,
            result=outcome.decoded() if outcome.ok else None,
            error=outcome.error,
            error_type=outcome.error_type,
            duration_ms=outcome.duration_ms,
            guard=attempt.guard,
        )
        failure = None if outcome.ok else self._call_failure(name, tool, attempt)
        try:
            self.registry.end_call(name, result, failure)
        except PlugwardenError:
            log.exception("plugin %r: could not record the end of a call", name)
        if failure is not None and runner is not None:
            runner.close()  # FAILED is terminal: free its workers until a restart
        return result

    def _refuse(self, name: str, tool: object, args: object) -> tuple[str, str] | None:
        """Input the host rejects before any plugin code runs; the plugin's
        state is untouched (bad input is not the plugin's fault)."""
        plugin = self._plugins.get(name)
        if plugin is None:
            return str(UnknownPlugin(name, list(self._plugins))), "UnknownPlugin"
        if not isinstance(tool, str) or not tool:
            return "tool must be a non-empty string", "InvalidArguments"
        if args is not None and not isinstance(args, Mapping):
            return f"args must be a JSON object, got {type(args).__name__}", "InvalidArguments"
        tools = plugin.manifest.tools
        if tools and tool not in tools:
            return (
                f"Unknown tool '{tool}' for plugin '{name}'. Available: {', '.join(sorted(tools))}",
                "UnknownTool",
            )
        return None

    @staticmethod
    def _call_failure(name: str, tool: str, attempt: Attempt) -> str:
        outcome = attempt.outcome
        if attempt.guard is not None:
            return outcome.error or f"{attempt.guard} guard tripped"
        return (
            f"run('{tool}') failed with {outcome.error}. Fix the plugin, then restart it "
            f"(plugwarden restart {name})."
        )

    # -- health ------------------------------------------------------------------

    def check_health(self, name: str) -> dict[str, Any] | None:
        """Run ``name``'s health hook now (budget: ``health_timeout_s``) and
        store its report in the registry; None when the plugin is not
        available or all its workers are busy (the last report stays)."""
        plugin = self._known(name)
        runner = plugin.runner
        if runner is None or not self.registry.status(name).available:
            return None
        budget = self.config.health_timeout_s
        attempt = runner.call("health", {}, budget, wait_s=budget)
        outcome = attempt.outcome
        if outcome.error_type == BUSY:
            return None
        report: dict[str, Any] = {
            "ok": outcome.ok,
            "checked_at": iso(datetime.now(UTC)),
            "duration_ms": round(outcome.duration_ms, 3),
            "report": None,
            "error": outcome.error,
        }
        value = outcome.decoded() if outcome.ok else None
        if outcome.ok and value is not None and not isinstance(value, dict):
            report["ok"] = False
            report["error"] = f"health() returned {type(value).__name__}; expected a dict or None"
        elif outcome.ok:
            report["report"] = value
        if attempt.guard is not None:
            runner.close()
            self.registry.fail(name, outcome.error or "health() tripped a guard")
        self.registry.set_health(name, report)
        return report

    def start_health_checks(self) -> None:
        """Check every available plugin's health every ``health_interval_s``,
        in the background, until :meth:`close`."""
        if self._health is None:
            self._health = HealthPoller(
                lambda: [s.name for s in self.registry.statuses() if s.available],
                self.check_health,
                self.config.health_interval_s,
            )
            self._health.start()

    # -- restart -----------------------------------------------------------------

    def restart(self, name: str) -> PluginStatus:
        """Rerun the whole pipeline for ``name`` with a fresh runner. A name
        claimed by two distributions stays FAILED: nothing can be loaded."""
        if name in self._plugins:
            self._bring_up_safely(name, {}, True)
        return self.registry.status(name)

    # -- the pipeline ------------------------------------------------------------

    def _register_duplicates(self, found: Discovery) -> None:
        for name, claimants in found.duplicates.items():
            names = ", ".join(f"{s.origin} ({s.value})" for s in claimants)
            self.registry.transition(
                name,
                State.FAILED,
                f"Plugin name '{name}' is claimed by {len(claimants)} distributions: {names}. "
                "Uninstall all but one, or rename an entry point.",
            )

    def _bring_up_safely(self, name: str, shared: dict[str, Any], restart: bool) -> None:
        plugin = self._plugins[name]
        with plugin.restart_lock:
            try:
                Pipeline(self, name, plugin, shared, restart).run()
            # The host must survive a bug of its own in one plugin's pipeline.
            except Exception as exc:
                log.exception("plugin %r: pipeline error", name)
                Pipeline(self, name, plugin, shared, restart=True).move(
                    State.FAILED, f"Internal error while loading: {exc!r}. Please report it."
                )

    def _make_runner(self, plugin: PluginSlot) -> Runner:
        if plugin.limits.isolation == "inline":
            return InlineRunner(
                plugin.source, plugin.limits, self._inline_executor, self._inline_memory
            )
        name = plugin.source.name
        return ProcessRunner(
            plugin.source,
            plugin.limits,
            self._zygote,
            self._output,
            self._memory,
            lambda reason: self._lost(name, reason),
        )

    def _lost(self, name: str, reason: str) -> None:
        """A worker died between calls: the plugin can no longer answer."""
        log.warning("plugin %r: %s", name, reason)
        self.registry.fail(name, reason)
