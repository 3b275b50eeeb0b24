"""The one record of a call's fate (docs/guides/isolation.md), in the spirit of
pluggy's ``Result.from_call``: whatever the plugin did, a value or any
``BaseException``, is captured as a :class:`CallResult`; nothing is raised.

The same record is built by the guard around the hook implementation (in
the worker or inline), crosses the worker boundary as plain JSON
(:mod:`plugwarden.isolation.wire`), and is completed by the host with the plugin,
tool and arguments of the call.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from plugwarden.blob import answer_json, summary_json
from plugwarden.encoding import compact_json
from plugwarden.error_types import GUARDS, ErrorType, Guard
from plugwarden.exceptions import describe

__all__ = ["GUARDS", "CallResult", "Guard"]


@dataclass(frozen=True, slots=True)
class CallResult:
    """What a hook call did. ``ok=False`` carries ``error`` (one line naming
    the root cause and the fix) and ``error_type`` (an :class:`ErrorType`
    name, or the class name of what the plugin raised); ``guard`` names the
    guard that tripped, if one did."""

    ok: bool
    plugin: str = ""
    hook: str = "run"
    tool: str | None = None
    args: dict[str, Any] = field(default_factory=dict)
    result: Any = None
    error: str | None = None
    error_type: str | None = None
    duration_ms: float = 0.0
    guard: Guard | None = None
    # The result as JSON text, when the guard encoded it (proof that it
    # serialises; a worker sends this text instead of encoding again), or as
    # a view of the checked bytes a worker sent (a large result, ``result``
    # then None until :meth:`decoded`).
    encoded: str | memoryview | None = field(default=None, compare=False, repr=False)

    @property
    def guard_tripped(self) -> bool:
        return self.guard is not None

    @property
    def ended_by_host(self) -> bool:
        """The host cut the call short (restart, close, drain): no crash."""
        return self.error_type in ErrorType.ENDED_BY_HOST

    @classmethod
    def from_call(
        cls,
        function: Callable[[], Any],
        *,
        hook: str,
        encode: bool,
        log: logging.Logger | None = None,
    ) -> CallResult:
        """Call ``function()``; its value or whatever it raised, as a
        record. With ``encode``, a value that is not JSON fails the call.
        What was raised goes to ``log`` with its traceback, if given."""
        start = time.perf_counter()
        try:
            value = function()
        # A broad except is what this library is for: nothing a plugin raises,
        # SystemExit and KeyboardInterrupt included, may reach the host.
        except BaseException as exc:
            elapsed = (time.perf_counter() - start) * 1000
            if log is not None:
                log.warning("hook %s raised", hook, exc_info=True)
            return cls(
                False,
                hook=hook,
                error=describe(exc),
                error_type=type(exc).__name__,
                duration_ms=elapsed,
            )
        elapsed = (time.perf_counter() - start) * 1000
        if not encode:
            return cls(True, hook=hook, result=value, duration_ms=elapsed)
        try:
            text = compact_json(value)  # what crosses the wire, and what HTTP answers
        # Plugin objects may fail to encode in any way (a __str__ that raises).
        except Exception as exc:  # noqa: BLE001
            if hook == "run" and _binary(value):  # travels apart (plugwarden.blob)
                return cls(True, hook=hook, result=value, duration_ms=elapsed)
            return cls(
                False,
                hook=hook,
                error=f"Result of {hook}() is not JSON-serialisable ({describe(exc)}). "
                "Return dicts, lists, strings, numbers, booleans or None.",
                error_type=ErrorType.RESULT_NOT_SERIALIZABLE,
                duration_ms=elapsed,
            )
        return cls(True, hook=hook, result=value, duration_ms=elapsed, encoded=text)

    @classmethod
    def failure(
        cls,
        error: str,
        error_type: str,
        *,
        plugin: str = "",
        hook: str = "run",
        tool: str | None = None,
        args: dict[str, Any] | None = None,
        duration_ms: float = 0.0,
        guard: Guard | None = None,
    ) -> CallResult:
        return cls(
            ok=False,
            plugin=plugin,
            hook=hook,
            tool=tool,
            args=dict(args or {}),
            error=error,
            error_type=error_type,
            duration_ms=duration_ms,
            guard=guard,
        )

    def of_call(self, plugin: str, tool: str | None, args: dict[str, Any]) -> CallResult:
        """This record, completed with the call it answers (spelled out:
        ``dataclasses.replace`` costs three times as much, on every call)."""
        return CallResult(
            self.ok,
            plugin,
            self.hook,
            tool,
            args,
            self.result,
            self.error,
            self.error_type,
            self.duration_ms,
            self.guard,
            self.encoded,
        )

    @property
    def undecoded(self) -> bool:
        """The result is still the JSON bytes a worker sent (``encoded``)."""
        return isinstance(self.encoded, memoryview)

    def decoded(self) -> CallResult:
        """This record with its result as Python data, for a Python caller:
        a large result from a worker stays its checked JSON bytes until then."""
        if not isinstance(self.encoded, memoryview):
            return self
        value = json.loads(self.encoded.tobytes())
        return CallResult(
            self.ok, self.plugin, self.hook, self.tool, self.args, value, self.error,
            self.error_type, self.duration_ms, self.guard,
        )  # fmt: skip

    def json_parts(self) -> list[bytes | memoryview]:
        """The record as compact JSON, in parts to write one after another: a
        large result from a worker is passed on as the bytes it sent, neither
        decoded nor copied."""
        record = self.to_dict()
        if not isinstance(self.encoded, memoryview):
            try:
                return [compact_json(record).encode()]
            except TypeError:  # binary values: the result's whole, the args' described
                record["args"] = json.loads(summary_json(self.args))
                return [answer_json(record).encode()]
        del record["result"]
        record["args"] = json.loads(summary_json(self.args))
        return [f'{compact_json(record)[:-1]},"result":'.encode(), self.encoded, b"}"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "plugin": self.plugin,
            "hook": self.hook,
            "tool": self.tool,
            "args": self.args,
            "result": self.result,
            "error": self.error,
            "error_type": self.error_type,
            "duration_ms": round(self.duration_ms, 3),
            "guard_tripped": self.guard_tripped,
            "guard": self.guard,
        }


def _binary(value: Any) -> bool:
    """Whether ``value`` is JSON data but for binary values (bytes, arrays)."""
    try:
        summary_json(value)
    # The same objects that failed to encode may fail again in any way.
    except Exception:  # noqa: BLE001
        return False
    return True
