"""``plugwarden serve``, in the order that makes it ready soonest
(docs/benchmarks.md): bind the port (a busy one is one clear error before
anything starts), start the zygote (its interpreter boots while this one
imports the host), start the plugins, and only then import the web stack
(starlette, uvicorn: ~100 ms) and build the app, while the zygote forks the
workers on the other CPUs."""

from __future__ import annotations

import logging
import resource
import signal
import socket
import threading

from plugwarden.config import HostConfig
from plugwarden.exceptions import ConfigError, PlugwardenError
from plugwarden.logs import configure as configure_logging

__all__ = [
    "MIN_TOKEN_LENGTH",
    "SAMPLE_TOKENS",
    "announce",
    "connection_room",
    "listen",
    "serve",
]

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
    connections = connection_room(config.server.max_connections)
    listener = listen(bind_host, bind_port)
    probe_listener = None
    if config.server.probe_port:
        try:
            probe_listener = listen(bind_host, config.server.probe_port)
        except ConfigError:
            listener.close()
            raise
    announce(listener, probe_listener, config)
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

        return run(
            plugin_host,
            config,
            listener,
            early,
            probe_listener=probe_listener,
            connections=connections,
        )
    finally:
        plugin_host.close()  # uvicorn's lifespan did, unless the server never started


def announce(listener: socket.socket, probes: socket.socket | None, config: HostConfig) -> None:
    """Where the server is, and what is off until a token is set."""
    host, port = listener.getsockname()[:2]
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}"
    log.info("plugwarden: serving %s (status page %s/, API %s/v1/plugins)", url, url, url)
    if probes is not None:
        log.info(
            "plugwarden: probes on port %d (/healthz, /readyz, /metrics)", probes.getsockname()[1]
        )
    if config.server.token is None:
        log.warning(
            "No token: run, restart and jobs are off (403) until one is set in [server] token "
            "or PLUGWARDEN_TOKEN; the page, health and metrics are open."
        )


def connection_room(wanted: int) -> int:
    """Raise the soft descriptor limit to the hard one (systemd's soft
    default, 1024, runs out under a flood of connections: then every accept
    failed), and the most connections it allows: ``wanted``, less a
    reserve for the host's own descriptors (workers' pipes, the database)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = 1 << 20 if hard == resource.RLIM_INFINITY else hard
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass  # a limit the kernel refuses: the soft one stands
    room = max(16, soft - max(64, soft // 4))
    if room < wanted:
        log.warning(
            "At most %d connections: %d descriptors (ulimit -n) leave room for no more beside "
            "the host's own; [server] max_connections is %d. Raise the limit to serve more.",
            room,
            soft,
            wanted,
        )
    return min(wanted, room)


def _capture_signals() -> list[int]:
    """The SIGINTs and SIGTERMs that come until uvicorn handles them (it
    puts these handlers back when it stops: later ones are ignored, as the
    host is closing anyway)."""
    early: list[int] = []
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda number, _frame: early.append(number))
    return early
