"""``plugwarden serve``, in the order that makes it ready soonest (README,
"Benchmarks"): bind the port (a busy one is one clear error before anything starts),
start the zygote (its interpreter boots while this one imports the host),
start the plugins, and only then import the web stack (starlette, uvicorn:
~100 ms) and build the app, while the zygote forks the workers on the
other CPUs.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading

from plugwarden.config import HostConfig
from plugwarden.exceptions import ConfigError, PlugwardenError
from plugwarden.logs import configure as configure_logging

__all__ = ["MIN_TOKEN_LENGTH", "SAMPLE_TOKENS", "listen", "serve"]

log = logging.getLogger("plugwarden.server")

SAMPLE_TOKENS = frozenset({"change-me"})  # the README's example
MIN_TOKEN_LENGTH = 16


def listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so that a busy port is one clear
    error before anything starts (uvicorn would report it after startup)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP given: asyncio sets TCP_NODELAY only on sockets that say so
    # (without it every response waits ~40 ms for a delayed ACK).
    listener = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError as exc:
        listener.close()
        raise ConfigError(
            "serve",
            None,
            f"cannot listen on {host}:{port} ({exc.strerror}). Stop what holds the port, or "
            "choose another with --port or [server] port.",
        ) from None
    listener.listen(2048)
    return listener


def serve(config: HostConfig, host: str | None = None, port: int | None = None) -> int:
    """Serve until a signal ends the server; the exit status (0: a clean drain)."""
    bind_host = host or config.server.host
    bind_port = config.server.port if port is None else port
    configure_logging(config.server.log_format)
    listener = listen(bind_host, bind_port)
    token = config.server.token
    if token is not None and (token in SAMPLE_TOKENS or len(token) < MIN_TOKEN_LENGTH):
        log.warning(
            "The [server] token is %s: anyone who guesses it can run and restart plugins. "
            "Use a random one, e.g. python -c 'import secrets; print(secrets.token_urlsafe())'",
            "the README's sample"
            if token in SAMPLE_TOKENS
            else f"under {MIN_TOKEN_LENGTH} characters",
        )
    zygote = None
    if config.defaults.isolation == "process":
        from plugwarden.isolation.process.zygote import Zygote

        zygote = Zygote()
        zygote.prestart()  # its interpreter boots while this one imports the host
    from plugwarden.host.host import Host

    plugin_host = Host(config, zygote=zygote)
    try:
        plugin_host.prepare()  # a bad jobs database: one clear error (exit 2), not a thread's
    except PlugwardenError:
        listener.close()
        plugin_host.close()
        raise
    # A SIGTERM or Ctrl-C from now on drains, even before uvicorn runs.
    early = _capture_signals()
    plugin_host.start_in_background()
    try:
        from plugwarden.web.server import run

        return run(plugin_host, config, listener, early)
    finally:
        plugin_host.close()  # uvicorn's lifespan did, unless the server never started


def _capture_signals() -> list[int]:
    """The SIGINTs and SIGTERMs that come until uvicorn handles them (it
    puts these handlers back when it stops: later ones are ignored, as the
    host is closing anyway)."""
    early: list[int] = []
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda number, _frame: early.append(number))
    return early
