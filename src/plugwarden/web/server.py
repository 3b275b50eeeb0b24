"""``plugwarden serve``: the app under uvicorn, with the host's lifecycle.

The server listens at once; plugins load in the background (``/healthz``
answers, ``/readyz`` says 503 until startup has finished), as a Kubernetes
probe expects. SIGTERM or SIGINT: uvicorn stops accepting, lets requests in
flight finish, then the host closes every worker.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import AsyncIterator

import uvicorn
from starlette.applications import Starlette

from plugwarden.config import HostConfig
from plugwarden.core.host import Host
from plugwarden.web.app import create_app

__all__ = ["build", "serve"]

log = logging.getLogger("plugwarden.server")

GRACEFUL_SHUTDOWN_S = 10


def build(host: Host, config: HostConfig) -> Starlette:
    """The app, with a lifespan that starts the host and closes it."""
    app = create_app(host, config)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        def start() -> None:
            host.start()
            host.start_health_checks()
            log.info("plugwarden: %d plugins started", len(host.registry.names()))

        threading.Thread(target=start, name="plugwarden-start", daemon=True).start()
        try:
            yield
        finally:
            host.close()

    app.router.lifespan_context = lifespan
    return app


def serve(config: HostConfig, host: str | None = None, port: int | None = None) -> int:
    bind_host = host or config.server.host
    bind_port = config.server.port if port is None else port
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    app = build(Host(config), config)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=bind_host,
            port=bind_port,
            log_level="info",
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
            lifespan="on",
        )
    )
    server.run()
    return 0 if server.started else 1
