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
from collections.abc import AsyncIterator, Callable, Iterator
from types import FrameType
from typing import TYPE_CHECKING, Any

import uvicorn
from starlette.applications import Starlette

from plugwarden.config import HostConfig
from plugwarden.error_types import ErrorType
from plugwarden.web.app import create_app
from plugwarden.web.protocol import GuardedH11Protocol

if TYPE_CHECKING:  # the app is handed a Host; it never makes one
    from plugwarden.host.host import Host

__all__ = ["AcceptErrors", "DrainingServer", "build", "run", "uvicorn_config"]

log = logging.getLogger("plugwarden.server")

# After the drain, what uvicorn still waits for is the last responses going out.
GRACEFUL_SHUTDOWN_S = 5
PROBE_PATHS = ("/healthz", "/readyz", "/metrics")  # what the probe port serves
PROBE_CONNECTIONS = 64  # its own bound, apart from the main port's
ACCEPT_LOG_S = 10.0


def uvicorn_config(
    app: Starlette, config: HostConfig, *, connections: int | None = None, **options: Any
) -> uvicorn.Config:
    """uvicorn's settings for plugwarden: at most ``connections`` connections
    (default ``max_connections``; an idle one makes room for a new one),
    idle ones closed, the guarded h11 protocol. ``options`` go to uvicorn as
    they are."""
    server = config.server
    most = server.max_connections if connections is None else connections
    protocol = type(
        "ConfiguredH11Protocol",
        (GuardedH11Protocol,),
        {"idle_timeout_s": server.idle_timeout_s, "max_connections": most},
    )
    return uvicorn.Config(
        app,
        http=protocol,
        # Connections stay within `most` (the protocol makes room): past it,
        # uvicorn's 503 counts only requests in progress.
        limit_concurrency=most + 1,
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
        probes: tuple[socket.socket, uvicorn.Config] | None = None,
    ) -> None:
        super().__init__(config)
        self.host = host
        self._probes = probes  # a listener of its own for the probes, and its settings
        self._probe_server: asyncio.base_events.Server | None = None
        self.drain_timeout_s = drain_timeout_s
        self.drained_clean = True
        self._drainer: threading.Thread | None = None
        self._early = early if early is not None else []

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(AcceptErrors(loop.default_exception_handler))
        await super().startup(sockets)
        if self._probes is not None and not self.should_exit:
            listener, config = self._probes
            config.load()
            state = uvicorn.server.ServerState()  # its connections are counted apart
            self._probe_server = await loop.create_server(
                lambda: config.http_protocol_class(  # type: ignore[call-arg]
                    config=config, server_state=state, app_state={}
                ),
                sock=listener,
            )

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self._probe_server is not None:
            self._probe_server.close()
        await super().shutdown(sockets)

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
    host: Host,
    config: HostConfig,
    listener: socket.socket,
    early: list[int] | None = None,
    *,
    probe_listener: socket.socket | None = None,
    connections: int | None = None,
) -> int:
    """Serve ``host`` (already starting) on ``listener`` until a signal
    ends the server; the exit status (0: a clean drain). ``early``: the
    signals that came before (see :class:`DrainingServer`);
    ``probe_listener``: the probe port's; ``connections``: the most
    connections the descriptors allow (default ``max_connections``)."""
    app = build(host, config, start=False)
    logging_options: dict[str, Any] = {"log_level": "info"}
    if config.server.log_format == "json":  # uvicorn's own records through our formatter
        logging_options["log_config"] = None
    probes = None
    if probe_listener is not None:
        probe_app = Starlette(
            routes=[r for r in app.routes if getattr(r, "path", None) in PROBE_PATHS],
            middleware=app.user_middleware,
        )
        probe_config = uvicorn_config(
            probe_app, config, connections=PROBE_CONNECTIONS, lifespan="off", **logging_options
        )
        probes = (probe_listener, probe_config)
    server = DrainingServer(
        uvicorn_config(
            app,
            config,
            connections=connections,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
            lifespan="on",
            **logging_options,
        ),
        host,
        config.server.drain_timeout_s,
        early,
        probes,
    )
    server.run(sockets=[listener])
    if not server.started:
        return 1
    log.info(
        "plugwarden: stopped (%s)", "clean drain" if server.drained_clean else "calls cut short"
    )
    return 0 if server.drained_clean else 1


class AcceptErrors:
    """The event loop's exception handler, logging a failed accept (no
    descriptor left) once per ACCEPT_LOG_S with how many failed since: the
    loop retries each accept, and logged a traceback each time (150,000 in
    12 s under a flood of connections)."""

    def __init__(self, default: Callable[[dict[str, Any]], object]) -> None:
        self._default = default
        self._failed = 0
        self._logged_at = -ACCEPT_LOG_S

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if not str(context.get("message", "")).startswith("socket.accept() out of"):
            self._default(context)
            return
        self._failed += 1
        if loop.time() - self._logged_at >= ACCEPT_LOG_S:
            log.error(
                "%d connection(s) could not be accepted: %s. Raise the descriptor limit "
                "(ulimit -n), or lower [server] max_connections.",
                self._failed,
                context.get("exception"),
            )
            self._logged_at, self._failed = loop.time(), 0
