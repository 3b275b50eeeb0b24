"""The call path (docs/guides/isolation.md): caller -> checks -> registry ->
runner -> result -> metrics -> registry, and the background health checks.

Nothing here raises to the caller: every call, whatever the plugin or the
caller did, ends in a :class:`~plugwarden.result.CallResult`. A call's
failure is the call's only, unless a worker was lost (the runner reports
that to the supervisor) or the operator set ``fail_on_error``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from plugwarden.config import HostConfig
from plugwarden.encoding import compact_json
from plugwarden.error_types import ErrorType
from plugwarden.exceptions import PlugwardenError, UnknownPlugin
from plugwarden.host.admission import Admission, Deadline
from plugwarden.host.registry import Registry
from plugwarden.host.status import PluginStatus
from plugwarden.isolation.reporting import CallControl
from plugwarden.plugin.lifecycle import iso
from plugwarden.result import CallResult

__all__ = ["Calls", "FailPlugin"]

# The supervisor's fail(name, generation, reason, cause): FAILED, then the restart policy.
FailPlugin = Callable[[str, int, str, str], None]

log = logging.getLogger("plugwarden.calls")

HEALTH_REPORT_BYTES = 16 * 1024
# A call that lost its worker this way, on a version no longer serving, is retried.
RETRIED = frozenset(
    {
        ErrorType.WORKER_DIED, ErrorType.PROTOCOL, ErrorType.MEMORY_LIMIT,
        ErrorType.TASK_LIMIT, ErrorType.RESTARTED,
    }
)  # fmt: skip


class Calls:
    def __init__(
        self,
        config: HostConfig,
        registry: Registry,
        fail: FailPlugin,
        admission: Admission,
    ) -> None:
        self.config = config
        self.registry = registry
        self.fail = fail
        self.admission = admission

    def call(
        self,
        name: str,
        tool: str,
        args: Mapping[str, Any] | None,
        *,
        timeout_s: float | None = None,
        control: CallControl | None = None,
        deadline: Deadline | None = None,
    ) -> CallResult:
        """``timeout_s`` None: the plugin's ``timeout_s``. A job passes its
        own timeout and its ``control``. The wait for a free worker ends at
        ``deadline`` (set when the call arrived; default: ``timeout_s`` from
        now), then the call is ``Busy``."""
        # type() first: isinstance against an ABC costs ~1 us, on every call.
        arguments = dict(args) if type(args) is dict or isinstance(args, Mapping) else {}
        refused = self.admission.refusal(name, tool, args)
        # Admitted: the plugin has a record to call (see Admission.refusal).
        slot = self.registry.loadable.get(name)
        if refused is not None or slot is None:
            return (refused or _unknown(name, self.registry)).of_call(name, tool, arguments)
        ticket = self._begin(name)
        if isinstance(ticket, CallResult):  # not counted in flight: nothing to record
            return ticket.of_call(name, tool, arguments)
        runner = slot.runner
        if runner is None:  # failed or restarting between begin_call and here
            result = CallResult.failure("The plugin is restarting. Retry it.", ErrorType.RESTARTED)
        else:
            request = {"tool": tool, "args": arguments}
            timeout = slot.limits.timeout_s if timeout_s is None else timeout_s
            wait_s = timeout if deadline is None else deadline.left()
            result = runner.call("run", request, timeout, wait_s, control=control)
            again = slot.runner
            if (
                not result.ok
                and result.error_type in RETRIED
                and again is not None
                and again.source.dist_version != runner.source.dist_version
            ):
                # The version it ran on was switched away from meanwhile (an
                # upgrade rolled back in probation): once more on the one serving.
                wait_s = timeout if deadline is None else deadline.left()
                result = again.call("run", request, timeout, wait_s, control=control)
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
            self.fail(
                name,
                ticket,
                f"run('{tool}') failed with {result.error} and fail_on_error is set. "
                f"Fix the plugin, then restart it (plugwarden restart {name}).",
                "error",
            )
        return result

    def _begin(self, name: str) -> int | CallResult:
        """Count a call in flight: the generation it runs against, or why it
        cannot run (the plugin not available, or the registry busy)."""
        try:
            ticket = self.registry.begin_call(name)
        except UnknownPlugin:  # found, but its bring-up has not said a word yet
            why = f"Plugin '{name}' is starting: its pre-flight has not finished. Retry shortly."
            return CallResult.failure(why, ErrorType.PLUGIN_NOT_AVAILABLE)
        except PlugwardenError as exc:
            return CallResult.failure(str(exc), ErrorType.REGISTRY_TIMEOUT)
        if isinstance(ticket, PluginStatus):
            return CallResult.failure(
                f"Plugin '{name}' is {ticket.state.value}: {ticket.reason}",
                ErrorType.PLUGIN_NOT_AVAILABLE,
            )
        return ticket

    def check_health(self, name: str) -> dict[str, Any] | None:
        """Run ``name``'s health hook now (budget: ``health_timeout_s``) and
        store its report; None when the plugin is not available or all its
        workers are busy (the last report stays)."""
        slot = self.registry.record(name)
        if slot is None:
            raise UnknownPlugin(name, self.registry.names())
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


def _unknown(name: str, registry: Registry) -> CallResult:
    return CallResult.failure(str(UnknownPlugin(name, registry.names())), ErrorType.UNKNOWN_PLUGIN)
