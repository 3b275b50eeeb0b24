"""The result record every guarded hook call returns (SPEC section 4)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["GUARDS", "CallResult", "Guard"]

Guard = Literal["timeout", "memory", "crash"]
GUARDS: tuple[Guard, ...] = ("timeout", "memory", "crash")


@dataclass(frozen=True, slots=True)
class CallResult:
    """What a hook call did. Built by plugwarden, never raised: a plugin's
    exception becomes ``ok=False`` with ``error`` and ``error_type``."""

    ok: bool
    plugin: str
    hook: str = "run"
    tool: str | None = None
    args: dict[str, Any] = field(default_factory=dict)
    result: Any = None
    error: str | None = None
    error_type: str | None = None
    duration_ms: float = 0.0
    guard: Guard | None = None

    @property
    def guard_tripped(self) -> bool:
        return self.guard is not None

    @classmethod
    def failure(
        cls,
        plugin: str,
        error: str,
        error_type: str,
        *,
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
