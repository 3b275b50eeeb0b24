"""``plugwarden serve``: the app under uvicorn, with the host's lifecycle.

The server listens at once; plugins load in the background (``/healthz``
answers, ``/readyz`` says 503 until startup has finished), as a Kubernetes
probe expects.

SIGTERM or SIGINT drains: ``/readyz`` answers 503 at once and new runs 503
with ``Retry-After``; calls in flight get up to ``drain_timeout_s`` to
finish, then the workers are killed and the callers still waiting get a
``ShuttingDown`` record; then uvicorn stops. A second signal exits at once.
The exit status is 0 after a clean drain, 1 if calls had to be cut short.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from types import FrameType
from typing import TYPE_CHECKING, Any

import uvicorn
from starlette.applications import Starlette
from uvicorn.protocols.http.h11_impl import H11Protocol

from plugwarden.config import HostConfig
from plugwarden.error_types import ErrorType
from plugwarden.web.app import create_app

if TYPE_CHECKING:  # the app is handed a Host; it never makes one
    from plugwarden.host.host import Host

__all__ = ["DrainingServer", "GuardedH11Protocol", "build", "run", "uvicorn_config"]

log = logging.getLogger("plugwarden.server")

# After the drain, what uvicorn still waits for is the last responses going out.
GRACEFUL_SHUTDOWN_S = 5


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, plus a deadline for a request's headers: a
    connection that sends nothing, or its headers a byte at a time
    (slowloris), is closed after ``idle_timeout_s`` instead of holding an fd
    forever. A request in progress is never cut."""

    idle_timeout_s = 15.0
    _deadline: asyncio.TimerHandle | None = None
    _idle_since = 0.0  # loop time: when the connection last began to wait

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._idle_since = self.loop.time()
        self._deadline = self.loop.call_later(self.idle_timeout_s, self._expire)

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
        waiting = self.cycle is None or self.cycle.response_complete
        left = self._idle_since + self.idle_timeout_s - self.loop.time()
        if waiting and left <= 0:
            self.transport.close()
            return
        # A request in progress (never cut), or the wait began later: look again.
        again = left if waiting else self.idle_timeout_s
        self._deadline = self.loop.call_later(again, self._expire)


def uvicorn_config(app: Starlette, config: HostConfig, **options: Any) -> uvicorn.Config:
    """uvicorn's settings for plugwarden: bounded connections, idle ones
    closed, the guarded h11 protocol. ``options`` go to uvicorn as they are."""
    server = config.server
    protocol = type(
        "ConfiguredH11Protocol", (GuardedH11Protocol,), {"idle_timeout_s": server.idle_timeout_s}
    )
    return uvicorn.Config(
        app,
        http=protocol,
        limit_concurrency=server.max_connections,
        timeout_keep_alive=min(5, int(server.idle_timeout_s)) or 1,
        **options,
    )


def build(host: Host, config: HostConfig, *, start: bool = True) -> Starlette:
    """The app, with a lifespan that starts the host in the background
    (unless ``start`` is False: the caller started it) and closes it."""

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        if start:
            host.start_in_background()
        try:
            yield
        finally:
            host.close()

    return create_app(host, config, lifespan=lifespan)


class DrainingServer(uvicorn.Server):
    """uvicorn, whose first SIGTERM/SIGINT drains the host before stopping.
    ``early``: signals that came before uvicorn took the handlers over (the
    plugins start before it runs), handled as soon as it has."""

    def __init__(
        self,
        config: uvicorn.Config,
        host: Host,
        drain_timeout_s: float,
        early: list[int] | None = None,
    ) -> None:
        super().__init__(config)
        self.host = host
        self.drain_timeout_s = drain_timeout_s
        self.drained_clean = True
        self._drainer: threading.Thread | None = None
        self._early = early if early is not None else []

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            for sig in list(self._early):  # no longer appended to: uvicorn's handlers are in
                self.handle_exit(sig, None)
            yield

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._drainer is None:
            log.info(
                "Signal %d: draining (up to %gs for the calls in flight)", sig, self.drain_timeout_s
            )
            self._drainer = threading.Thread(
                target=self._drain, name="plugwarden-drain", daemon=True
            )
            self._drainer.start()
            return
        log.warning("Second signal %d: ending the calls in flight and exiting now", sig)
        self.drained_clean = False
        # Not uvicorn's force_exit: that cancels requests mid-way (a 500 each).
        # Closing the host ends every call at once with a ShuttingDown record.
        threading.Thread(target=self._close_now, name="plugwarden-close", daemon=True).start()

    def _close_now(self) -> None:
        try:
            self.host.close(ErrorType.SHUTTING_DOWN)
        finally:
            self.should_exit = True

    def _drain(self) -> None:
        try:
            clean = self.host.drain(self.drain_timeout_s)
            self.drained_clean = self.drained_clean and clean
            if not clean:
                log.warning("Drain timed out: the calls still running were ended (ShuttingDown)")
        finally:
            self.should_exit = True


def run(
    host: Host, config: HostConfig, listener: socket.socket, early: list[int] | None = None
) -> int:
    """Serve ``host`` (already starting) on ``listener`` until a signal
    ends the server; the exit status (0: a clean drain). ``early``: the
    signals that came before (see :class:`DrainingServer`)."""
    server = DrainingServer(
        uvicorn_config(
            build(host, config, start=False),
            config,
            log_level="info",
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
            lifespan="on",
            # JSON: uvicorn's own records go through our formatter too.
            **({"log_config": None} if config.server.log_format == "json" else {}),
        ),
        host,
        config.server.drain_timeout_s,
        early,
    )
    server.run(sockets=[listener])
    if not server.started:
        return 1
    log.info(
        "plugwarden: stopped (%s)", "clean drain" if server.drained_clean else "calls cut short"
    )
    return 0 if server.drained_clean else 1
