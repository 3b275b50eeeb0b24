"""The call path (SPEC section 4): caller -> checks -> registry -> runner ->
result -> metrics -> registry, and the background health checks.

Nothing here raises to the caller: every call, whatever the plugin or the
caller did, ends in a :class:`~plugwarden.core.result.CallResult`. A call's
failure is the call's only, unless a worker was lost (the runner reports
that to the supervisor) or the operator set ``fail_on_error``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from plugwarden.config import HostConfig
from plugwarden.core.lifecycle import iso
from plugwarden.core.registry import PluginStatus, Registry, compact_json
from plugwarden.core.reporting import CallControl
from plugwarden.core.result import CallResult
from plugwarden.core.supervisor import Supervisor
from plugwarden.error_types import ErrorType
from plugwarden.exceptions import PlugwardenError, UnknownPlugin

__all__ = ["Calls"]

log = logging.getLogger("plugwarden.calls")

HEALTH_REPORT_BYTES = 16 * 1024


class Calls:
    def __init__(self, config: HostConfig, registry: Registry, supervisor: Supervisor) -> None:
        self.config = config
        self.registry = registry
        self.supervisor = supervisor
        self.refusing: str | None = None  # an ErrorType: new calls are refused (a drain)

    def call(
        self,
        name: str,
        tool: str,
        args: Mapping[str, Any] | None,
        *,
        timeout_s: float | None = None,
        control: CallControl | None = None,
    ) -> CallResult:
        """``timeout_s`` None: the plugin's ``timeout_s``. A job passes its
        own timeout and its ``control``."""
        # type() first: isinstance against an ABC costs ~1 us, on every call.
        arguments = dict(args) if type(args) is dict or isinstance(args, Mapping) else {}
        refused = self.refusal(name, tool, args)
        if refused is not None:
            return refused.of_call(name, tool, arguments)
        slot = self.supervisor.slots[name]
        try:
            ticket = self.registry.begin_call(name)
        except PlugwardenError as exc:
            return CallResult.failure(
                str(exc), ErrorType.REGISTRY_TIMEOUT, plugin=name, tool=tool, args=arguments
            )
        if isinstance(ticket, PluginStatus):
            return CallResult.failure(
                f"Plugin '{name}' is {ticket.state.value}: {ticket.reason}",
                ErrorType.PLUGIN_NOT_AVAILABLE,
                plugin=name,
                tool=tool,
                args=arguments,
            )
        runner = slot.runner
        if runner is None:  # failed or restarting between begin_call and here
            result = CallResult.failure("The plugin is restarting. Retry it.", ErrorType.RESTARTED)
        else:
            request = {"tool": tool, "args": arguments}
            timeout = slot.limits.timeout_s if timeout_s is None else timeout_s
            result = runner.call("run", request, timeout, control=control)
        result = result.of_call(name, tool, arguments)
        try:
            self.registry.end_call(name, result, ticket)
        except PlugwardenError:
            log.exception("plugin %r: could not record the end of a call", name)
        if (
            not result.ok
            and result.guard is None
            and result.error_type not in ErrorType.NOT_THE_PLUGINS
            and slot.budget.policy.fail_on_error
        ):
            self.supervisor.fail(
                name,
                ticket,
                f"run('{tool}') failed with {result.error} and fail_on_error is set. "
                f"Fix the plugin, then restart it (plugwarden restart {name}).",
                "error",
            )
        return result

    def refusal(self, name: str, tool: object, args: object) -> CallResult | None:
        """Input the host rejects before any plugin code runs; the plugin's
        state is untouched (bad input is not the plugin's fault)."""
        slot = self.supervisor.slots.get(name)
        if slot is None:
            return CallResult.failure(
                str(UnknownPlugin(name, self.registry.names())), ErrorType.UNKNOWN_PLUGIN
            )
        if self.refusing is not None:
            why = (
                "The server is shutting down: no new calls. Retry against another instance."
                if self.refusing == ErrorType.SHUTTING_DOWN
                else "The host is closed: no new calls."
            )
            return CallResult.failure(why, self.refusing)
        if not isinstance(tool, str) or not tool:
            return CallResult.failure(
                "tool must be a non-empty string", ErrorType.INVALID_ARGUMENTS
            )
        if args is not None and type(args) is not dict and not isinstance(args, Mapping):
            return CallResult.failure(
                f"args must be a JSON object, got {type(args).__name__}",
                ErrorType.INVALID_ARGUMENTS,
            )
        tools = slot.manifest.tools
        if tools and tool not in tools:
            return CallResult.failure(
                f"Unknown tool '{tool}' for plugin '{name}'. Available: {', '.join(sorted(tools))}",
                ErrorType.UNKNOWN_TOOL,
            )
        return None

    def check_health(self, name: str) -> dict[str, Any] | None:
        """Run ``name``'s health hook now (budget: ``health_timeout_s``) and
        store its report; None when the plugin is not available or all its
        workers are busy (the last report stays)."""
        slot = self.supervisor.slot(name)
        runner = slot.runner
        status = self.registry.status(name)
        if runner is None or not status.available:
            return None
        budget = self.config.health_timeout_s
        result = runner.call("health", {}, budget, wait_s=budget)
        if result.error_type in (ErrorType.BUSY, ErrorType.PLUGIN_NOT_AVAILABLE):
            return None
        if result.ended_by_host:
            return None
        report: dict[str, Any] = {
            "ok": result.ok,
            "checked_at": iso(datetime.now(UTC)),
            "duration_ms": round(result.duration_ms, 3),
            "report": None,
            "error": result.error,
        }
        value = result.result if result.ok else None
        # Inline, the guard already encoded it; from a worker it is plain JSON data.
        size = len(result.encoded if result.encoded is not None else compact_json(value))
        if result.ok and value is not None and not isinstance(value, dict):
            report["ok"] = False
            report["error"] = f"health() returned {type(value).__name__}; expected a dict or None"
        elif result.ok and size > HEALTH_REPORT_BYTES:
            # Every GET /v1/plugins carries the report: it stays small.
            report["report_dropped"] = (
                f"health() returned {size} bytes of report, over the {HEALTH_REPORT_BYTES}-byte "
                "cap for health reports; return a summary"
            )
        elif result.ok:
            report["report"] = value
        allowed = self.config.health_failures
        flipped = self.registry.set_health(name, report, status.generation, allowed)
        if flipped is False:
            log.warning(
                "plugin %r is unhealthy: %d health checks failed in a row; last: %s",
                name,
                allowed,
                report["error"],
                extra={"plugin": name, "state": "unhealthy"},
            )
        elif flipped is True:
            log.info("plugin %r is healthy again", name, extra={"plugin": name, "state": "healthy"})
        return report
