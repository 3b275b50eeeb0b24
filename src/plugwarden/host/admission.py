"""Admission: whether a call or a job may run, decided once.

The Python API (:meth:`Host.call`, :meth:`Host.submit`), ``POST .../run``
and ``POST .../jobs`` all ask :meth:`Admission.refusal` before any plugin
code runs: an unknown plugin or tool, arguments that are not a JSON object,
a job timeout that is not a positive number, a host that is draining or
closed. A refusal is a failed :class:`~plugwarden.result.CallResult` whose
``error_type`` carries its HTTP status (:meth:`ErrorType.http_status`), so
every entry point answers the same mistake the same way.

A call's whole wait (for an HTTP thread, then for a worker) comes out of
one :class:`Deadline`, set when the call arrives.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from plugwarden.error_types import ErrorType
from plugwarden.exceptions import UnknownPlugin
from plugwarden.result import CallResult

if TYPE_CHECKING:
    from plugwarden.host.record import PluginRecord

__all__ = ["Admission", "Deadline"]


@dataclass(frozen=True, slots=True)
class Deadline:
    """When a call's wait for a thread and a worker ends (``time.monotonic()``)."""

    at: float
    timeout_s: float

    @classmethod
    def after(cls, timeout_s: float) -> Deadline:
        return cls(time.monotonic() + timeout_s, timeout_s)

    def left(self) -> float:
        return max(0.0, self.at - time.monotonic())


class Admission:
    def __init__(self, records: Mapping[str, PluginRecord], names: Callable[[], list[str]]) -> None:
        """``records``: the plugins the host can call (the registry's
        ``loadable``, read without its lock); ``names``: every name listed."""
        self._records = records
        self._names = names
        self.refusing: str | None = None  # an ErrorType: new calls are refused (a drain)

    def refusal(
        self,
        name: str,
        tool: object,
        args: object,
        timeout_s: object = None,
    ) -> CallResult | None:
        """Why the host refuses this call before any plugin code runs, or
        None; the plugin's state is untouched (bad input is not its fault)."""
        record = self._records.get(name)
        if record is None:  # unknown; or listed, but nothing to call (a name claimed twice)
            return CallResult.failure(
                str(UnknownPlugin(name, self._names())), ErrorType.UNKNOWN_PLUGIN
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
        # type() first: isinstance against an ABC costs ~1 us, on every call.
        if args is not None and type(args) is not dict and not isinstance(args, Mapping):
            return CallResult.failure(
                f"args must be a JSON object, got {type(args).__name__}",
                ErrorType.INVALID_ARGUMENTS,
            )
        tools = record.manifest.tools
        if tools and tool not in tools:
            return CallResult.failure(
                f"Unknown tool '{tool}' for plugin '{name}'. Available: {', '.join(sorted(tools))}",
                ErrorType.UNKNOWN_TOOL,
            )
        if timeout_s is not None and not _positive_seconds(timeout_s):
            return CallResult.failure(
                f"timeout_s must be a positive number of seconds, got {timeout_s!r}",
                ErrorType.INVALID_ARGUMENTS,
            )
        return None


def _positive_seconds(value: object) -> bool:
    return (
        not isinstance(value, bool)
        and isinstance(value, int | float)
        and math.isfinite(value)
        and value > 0
    )
