"""uvicorn's h11 protocol with plugwarden's rules for connections
(docs/guides/operating.md#bounds): a deadline for a request's headers, and a
bounded number of connections in which an idle one makes room for a new one.

No client can hold the server's descriptors or starve its probes by
opening connections and sending nothing: past ``max_connections`` the
connection waiting longest for a request (idle, or sending its headers a
byte at a time) is closed for the new one. A connection younger than
``YOUNG_S`` is not taken (a probe gets the time to send its request); when
every other is young or has a request in progress, the new one is closed.
A flood of new connections can still crowd the main port: ``[server]
probe_port`` serves the probes on a listener of their own.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["YOUNG_S", "GuardedH11Protocol"]

YOUNG_S = 1.0
# Requests answered past uvicorn's limit on requests in progress (503).
_PROBES = (b"GET /healthz ", b"GET /healthz?", b"GET /readyz ", b"GET /readyz?")


class GuardedH11Protocol(H11Protocol):
    """A connection that sends nothing, or its headers a byte at a time
    (slowloris), is closed after ``idle_timeout_s`` instead of holding an fd
    forever. A request in progress is never cut."""

    idle_timeout_s = 15.0
    max_connections = 1024
    _deadline: asyncio.TimerHandle | None = None
    _idle_since = 0.0  # loop time: when the connection last began to wait
    _opened_at = 0.0
    _limit: int | None = None  # uvicorn's limit on requests in progress

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._limit = self.limit_concurrency
        self._idle_since = self._opened_at = self.loop.time()
        self._deadline = self.loop.call_later(self.idle_timeout_s, self._expire)
        if len(self.connections) > self.max_connections:
            self._make_room()

    def _make_room(self) -> None:
        """Close the connection that has waited longest for a request, or
        this one when every other is young or has a request in progress."""
        live = [c for c in self.connections if not c.transport.is_closing()]
        if len(live) <= self.max_connections:
            return
        old = self.loop.time() - YOUNG_S
        idle = [
            c
            for c in live
            if isinstance(c, GuardedH11Protocol) and c._waiting and c._opened_at <= old
        ]
        victim = min(idle, key=lambda c: c._idle_since) if idle else self
        victim.transport.close()

    def data_received(self, data: bytes) -> None:
        self.limit_concurrency = None if data.startswith(_PROBES) else self._limit
        super().data_received(data)

    @property
    def _waiting(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # No timer moved per response (that cost ~4% of a probe's throughput):
        # the one timer, when it fires, looks at when the wait began.
        self._idle_since = self.loop.time()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        super().connection_lost(exc)

    def _expire(self) -> None:
        if self.transport.is_closing():
            return
        left = self._idle_since + self.idle_timeout_s - self.loop.time()
        if self._waiting and left <= 0:
            self.transport.close()
            return
        # A request in progress (never cut), or the wait began later: look again.
        again = left if self._waiting else self.idle_timeout_s
        self._deadline = self.loop.call_later(again, self._expire)
