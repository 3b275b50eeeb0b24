"""The Ray agent's messages (docs/guides/ray.md): a hook call for an actor, and
its answer, whose record is a wire outcome frame the host checks as it
checks a process worker's (:mod:`plugwarden.isolation.wire`)."""

from __future__ import annotations

from typing import Any, NamedTuple

from plugwarden.isolation.wire import ProtocolViolation

__all__ = ["AgentCall", "AgentReply"]


class AgentCall(NamedTuple):
    """A hook call for a Ray actor's agent, which runs it in its own worker."""

    hook: str
    kwargs: dict[str, Any]
    timeout_s: float
    job: bool

    def encode(self) -> tuple[Any, ...]:
        return tuple(self)

    @classmethod
    def decode(cls, raw: tuple[Any, ...]) -> AgentCall:
        return cls(*raw)


class AgentReply(NamedTuple):
    """A Ray actor's answer: the guard that tripped, the worker's memory,
    the call's record as an outcome frame (checked with :func:`decode`), and
    the binary values its ``blobs`` refer to, one after another (see
    :class:`~plugwarden.isolation.process.segment.Joined`)."""

    guard: str | None
    resident_bytes: int | None
    frame: bytes
    blobs: bytes = b""

    def encode(self) -> tuple[Any, ...]:
        return tuple(self)

    @classmethod
    def decode(cls, raw: object) -> AgentReply:
        """Raises :class:`ProtocolViolation` for anything but the four fields."""
        if not isinstance(raw, tuple) or len(raw) != 4:
            raise ProtocolViolation("not a reply")
        guard, memory, frame, blobs = raw
        if guard is not None and not isinstance(guard, str):
            raise ProtocolViolation("reply's guard is not a string")
        if isinstance(memory, bool) or not isinstance(memory, int | None):
            memory = None  # a reading it cannot trust counts as none
        if not isinstance(frame, bytes) or not isinstance(blobs, bytes):
            raise ProtocolViolation("reply's frame or blobs are not bytes")
        return cls(guard, memory, frame, blobs)
