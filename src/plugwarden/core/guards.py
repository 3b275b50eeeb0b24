"""Guards around every hook implementation (SPEC section 4).

:class:`GuardedHook` is a wrapt proxy put around each hook implementation
once it is registered with pluggy. It turns whatever the plugin does
(a value, any ``BaseException``, an unserialisable result) into an
:class:`Outcome` value, and times the call. It runs wherever the plugin runs,
in the host (``inline``) or in a worker; the runners enforce the timeout and
memory limits from outside, since a plugin cannot be trusted to stop itself.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import wrapt

__all__ = ["GuardedHook", "Limits", "Outcome", "describe"]

log = logging.getLogger("plugwarden.guards")

# Built once: json.dumps with a non-default option builds an encoder per call.
_encode = json.JSONEncoder(allow_nan=False).encode


@dataclass(frozen=True, slots=True)
class Limits:
    """The guard values in force for one plugin, every layer merged."""

    timeout_s: float = 60.0
    load_timeout_s: float = 120.0
    memory_mb: float = 1024.0
    isolation: str = "process"
    workers: int = 1


@dataclass(slots=True)
class Outcome:
    """What one hook implementation did; plain data, so it crosses a pipe.

    For ``run``, ``text`` holds the result as JSON, proof that it serialises;
    a worker sends the text and drops ``value``."""

    ok: bool
    value: Any = None
    text: str | None = None
    error: str | None = None
    error_type: str | None = None
    duration_ms: float = 0.0

    def to_wire(self) -> tuple[Any, ...]:
        """A plain tuple (pickles several times faster than the dataclass);
        the JSON text travels instead of the value when there is one."""
        value = None if self.text is not None else self.value
        return (self.ok, value, self.text, self.error, self.error_type, self.duration_ms)

    @classmethod
    def from_wire(cls, wire: tuple[Any, ...]) -> Outcome:
        return cls(*wire)

    def decoded(self) -> Any:
        return json.loads(self.text) if self.value is None and self.text is not None else self.value


def describe(exc: BaseException) -> str:
    """One line naming the exception, never a traceback."""
    if isinstance(exc, SystemExit):
        return f"SystemExit: plugin called sys.exit({exc.code!r})"
    if isinstance(exc, KeyboardInterrupt):
        return "KeyboardInterrupt: plugin raised KeyboardInterrupt"
    message = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {message[0]}" if message else type(exc).__name__


class GuardedHook(wrapt.FunctionWrapper):  # type: ignore[misc,type-arg,unused-ignore]
    """A hook implementation that never raises and always returns an Outcome."""

    def __init__(self, wrapped: Any, hook: str, plugin: str) -> None:
        super().__init__(wrapped, _Capture(hook, plugin))


@dataclass(frozen=True, slots=True)
class _Capture:
    """The wrapt wrapper: runs the implementation, captures what it did."""

    hook: str
    plugin: str

    def __call__(self, wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Outcome:
        start = time.perf_counter()
        try:
            value = wrapped(*args, **kwargs)
        # A broad except is what this library is for: nothing a plugin raises,
        # SystemExit and KeyboardInterrupt included, may reach the host.
        except BaseException as exc:
            duration = (time.perf_counter() - start) * 1000
            log.warning("plugin %r: hook %s raised", self.plugin, self.hook, exc_info=True)
            return Outcome(
                False, error=describe(exc), error_type=type(exc).__name__, duration_ms=duration
            )
        duration = (time.perf_counter() - start) * 1000
        if self.hook not in ("run", "health"):
            return Outcome(True, value, duration_ms=duration)
        try:
            text = _encode(value)
        except (TypeError, ValueError, RecursionError) as exc:
            return Outcome(
                False,
                error=f"Result of {self.hook}() is not JSON-serialisable ({exc}). "
                "Return dicts, lists, strings, numbers, booleans or None.",
                error_type="ResultNotSerializable",
                duration_ms=duration,
            )
        return Outcome(True, value, text, duration_ms=duration)
