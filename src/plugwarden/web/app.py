"""The HTTP app (docs/guides/operating.md#http): a Starlette application over one Host.

Handlers read the registry and call the host; they hold no logic of their
own. Plugin calls run in a thread pool, off the event loop.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import anyio.to_thread
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

import plugwarden
from plugwarden.config import HostConfig
from plugwarden.encoding import compact_json
from plugwarden.error_types import ErrorType
from plugwarden.exceptions import RegistryTimeout, UnknownPlugin
from plugwarden.host.admission import Deadline
from plugwarden.host.status import PluginStatus
from plugwarden.result import CallResult
from plugwarden.web.errors import (
    ContainErrors,
    error,
    http_exception,
    registry_timeout,
    retry_headers,
)
from plugwarden.web.installroutes import INSTALL_ROUTES
from plugwarden.web.jobroutes import job_routes
from plugwarden.web.listing import Listing, PolledRoutesApp
from plugwarden.web.openapi import document
from plugwarden.web.page import render_page
from plugwarden.web.payloads import mixed_answer, pieces, run_body, wants_parts
from plugwarden.web.requests import authorise, body_problem

if TYPE_CHECKING:  # the app is handed a Host; it never makes one
    from plugwarden.host.host import Host

__all__ = ["create_app", "readiness"]

T = TypeVar("T")
Lifespan = Callable[[Starlette], AbstractAsyncContextManager[None]]

# Each plugin's own bound on concurrent HTTP runs (and, apart, on restarts):
# a slow plugin flooded with callers holds its own threads, never another's.
PLUGIN_CALLS = 8


class PluginLimiters:
    """One capacity limiter per plugin and purpose, made on first use."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._limiters: dict[str, anyio.CapacityLimiter] = {}

    def __getitem__(self, name: str) -> anyio.CapacityLimiter:
        limiter = self._limiters.get(name)
        if limiter is None:
            limiter = self._limiters[name] = anyio.CapacityLimiter(self._capacity)
        return limiter


def create_app(
    host: Host, config: HostConfig | None = None, *, lifespan: Lifespan | None = None
) -> Starlette:
    """The app for ``host``; its ``[server]`` settings come from ``config``
    (default: the host's own config)."""
    server = (config or host.config).server
    token = server.token.encode() if server.token else None
    max_body = server.max_body_bytes
    scrape = _Scraper(host)
    # Plugin calls get threads of their own, bounded per plugin: hung runs
    # never take the ones that /metrics, contended registry reads, other
    # plugins' runs or any restart use.
    run_limiters = PluginLimiters(PLUGIN_CALLS)
    restart_limiters = PluginLimiters(1)

    listing = Listing(host)

    def read_refused(request: Request) -> Response | None:
        """Plugin records, metrics and the page are open unless the
        operator closed them (``public_reads = false``)."""
        return None if server.public_reads else authorise(request, token)

    async def plugins(request: Request) -> Response:
        denied = read_refused(request)
        if denied is not None:
            return denied
        # What the cache could not answer (PolledRoutesApp asked it first).
        version = host.records_version
        statuses = await _read(host.statuses)
        return Response(listing.build(version, statuses), media_type="application/json")

    async def health(request: Request) -> Response:
        denied = read_refused(request)
        if denied is not None:
            return denied
        try:
            status = await _read(host.status, request.path_params["name"])
        except UnknownPlugin as exc:
            return error(str(exc), ErrorType.UNKNOWN_PLUGIN)
        return Response(status.to_json(), media_type="application/json")

    async def plugin(request: Request) -> Response:
        denied = read_refused(request)
        if denied is not None:
            return denied
        name = request.path_params["name"]
        try:
            status = await _read(host.status, name)
        except UnknownPlugin as exc:
            return error(str(exc), ErrorType.UNKNOWN_PLUGIN)
        # The full record also carries the workers' memory, read now (/proc),
        # and where they run (a Ray plugin's nodes).
        memory = await run_in_threadpool(host.resident_bytes, name)
        extra = {
            "worker_resident_bytes": memory,
            "worker_gpu_bytes": host.gpu_bytes(name),
            "worker_gpus": host.worker_gpus(name),
            "worker_nodes": host.worker_nodes(name),
        }
        return Response(_with(status.to_json(), extra), media_type="application/json")

    async def run(request: Request) -> Response:
        name = request.path_params["name"]
        # The call's one deadline starts as it arrives: the wait for one of
        # the plugin's HTTP threads and then for a worker both come out of it.
        deadline = Deadline.after(host.call_timeout(name))
        denied = authorise(request, token)
        if denied is not None:
            return denied
        body = await run_body(request, max_body, server.max_blob_bytes, server.body_timeout_s)
        if isinstance(body, Response):
            return body
        problem = body_problem(body)
        if problem is not None:
            return error(problem, ErrorType.INVALID_REQUEST)
        tool, args = body.get("tool"), body.get("args")
        refused = host.refusal(name, tool, args)
        if refused is not None:
            return error(refused.error or "Refused", refused.error_type or ErrorType.INTERNAL)
        answer: tuple[CallResult, list[bytes | memoryview] | None] | None = None
        mixed = wants_parts(request)
        with anyio.move_on_after(deadline.left()):  # only the wait for a thread is cancelled
            answer = await anyio.to_thread.run_sync(
                _call_encoded, host, name, tool, args, deadline, mixed, limiter=run_limiters[name]
            )
        if answer is None:
            return error(
                f"Plugin '{name}' already has {PLUGIN_CALLS} calls in progress over HTTP, "
                f"and none finished within {deadline.timeout_s:g}s (its timeout_s). Retry later.",
                ErrorType.BUSY,
            )
        return _answer(*answer)

    async def restart(request: Request) -> Response:
        denied = authorise(request, token)
        if denied is not None:
            return denied
        name = request.path_params["name"]
        try:
            await _read(host.status, name)
        except UnknownPlugin as exc:
            return error(str(exc), ErrorType.UNKNOWN_PLUGIN)
        if host.draining:
            return error(
                "The server is shutting down: no restarts. Retry against another instance.",
                ErrorType.SHUTTING_DOWN,
            )
        status = await anyio.to_thread.run_sync(host.restart, name, limiter=restart_limiters[name])
        return JSONResponse(status.to_dict())

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "alive"})

    async def readyz(request: Request) -> Response:
        reasons = readiness(host, await _read(host.statuses))
        body = {"ready": not reasons, "reasons": reasons}
        return JSONResponse(body, status_code=503 if reasons else 200)

    async def metrics(request: Request) -> Response:
        denied = read_refused(request)
        if denied is not None:
            return denied
        content, media_type = await run_in_threadpool(scrape)
        return Response(content, media_type=media_type)

    async def gpus(request: Request) -> Response:
        denied = read_refused(request)
        # NVML as the GPU watch last read it; its first read may block: a thread.
        return denied or JSONResponse(await run_in_threadpool(host.gpus))

    async def openapi(request: Request) -> Response:
        denied = read_refused(request)
        return denied or JSONResponse(document(plugwarden.__version__))

    async def page(request: Request) -> Response:
        denied = read_refused(request)
        if denied is not None:
            return denied
        statuses = await _read(host.statuses)
        running = host.live_jobs()
        page = render_page(
            statuses, readiness(host, statuses), host.memory_seen(), running, host.gpus()
        )
        return HTMLResponse(page)

    # Starlette tries routes in order: the ones probes poll come first.
    routes = [
        Route("/v1/plugins/{name}/health", health, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/v1/plugins", plugins, methods=["GET"]),
        Route("/v1/plugins/{name}", plugin, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/v1/gpus", gpus, methods=["GET"]),
        Route("/", page, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/v1/plugins/{name}/run", run, methods=["POST"]),
        Route("/v1/plugins/{name}/restart", restart, methods=["POST"]),
        *job_routes(host, token, server),
        *INSTALL_ROUTES,
    ]
    app = PolledRoutesApp(
        routes=by_path(routes),
        lifespan=lifespan,
        middleware=[Middleware(ContainErrors)],
        exception_handlers={
            HTTPException: http_exception,
            RegistryTimeout: lambda request, exc: registry_timeout(exc),
        },
    )
    app.listing = listing if server.public_reads else None  # its caches answer anyone
    app.state.host, app.state.token, app.state.server = host, token, server
    return app


def by_path(routes: list[Route]) -> list[Route]:
    """One route per path, dispatching on the method: a path served by
    several handlers (GET and DELETE of a job) answers a wrong method with a
    405 whose ``Allow`` names them all, not only the first route's."""
    handlers: dict[str, dict[str, Callable[[Request], Any]]] = {}
    for route in routes:
        for method in route.methods or ():
            handlers.setdefault(route.path, {})[method] = route.endpoint

    def dispatch(by_method: dict[str, Callable[[Request], Any]]) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            # The router answered any other method 405; HEAD is GET's (Starlette).
            response: Response = await by_method[request.method](request)
            return response

        return endpoint

    return [Route(path, dispatch(found), methods=list(found)) for path, found in handlers.items()]


def _with(record_json: str, fields: dict[str, Any]) -> str:
    """A record's cached JSON with ``fields`` spliced in last."""
    return f"{record_json[:-1]},{compact_json(fields)[1:]}"


def _call_encoded(
    host: Host, name: str, tool: str, args: Any, deadline: Deadline, mixed: bool
) -> tuple[CallResult, list[bytes | memoryview] | None]:
    """A call and its JSON, both on a worker thread: a large result is never
    encoded (or decoded) on the event loop. ``mixed``: the answer will be
    multipart (web/payloads.py), encoded apart."""
    result = host.call(name, tool, args, deadline=deadline, decode=False)
    return result, None if mixed else result.json_parts()


def _answer(result: CallResult, parts: list[bytes | memoryview] | None) -> Response:
    """A run's answer: the result record of a call that ran, or was in
    flight when the host ended it (a drain: 503 with ``Retry-After``); the
    error body of one that never got a worker (``Busy``: 429). ``parts``
    None: as ``multipart/mixed``, binary values in parts of their own."""
    status = ErrorType.http_status(result.error_type)
    if status != 200 and result.error_type not in ErrorType.ENDED_BY_HOST:
        return error(result.error or "Refused", result.error_type or ErrorType.INTERNAL)
    headers = retry_headers(status)
    if parts is None:
        return mixed_answer(result, status, headers)
    if len(parts) == 1:
        return Response(parts[0], status, headers, media_type="application/json")
    headers["Content-Length"] = str(sum(len(part) for part in parts))
    return StreamingResponse(pieces(parts), status, headers, media_type="application/json")


class _Scraper:
    """``GET /metrics``'s exposition. prometheus-client (~13 ms of imports)
    and the collector are loaded at the first scrape, not on the way to
    serving (start; docs/benchmarks.md)."""

    def __init__(self, host: Host) -> None:
        self._host = host
        self._lock = threading.Lock()
        self._registry: Any = None

    def __call__(self) -> tuple[bytes, str]:
        from plugwarden.web.prometheus import collector_registry, exposition

        with self._lock:
            if self._registry is None:
                self._registry = collector_registry(self._host)
        return exposition(self._registry)


async def _read(read: Callable[..., T], *args: Any) -> T:
    """A registry read: on the event loop when the lock is free at once (the
    common case, no thread hop), else in a thread with the full lock timeout,
    so a busy registry never stalls other requests (or /healthz)."""
    try:
        return read(*args, lock_timeout=0)
    except RegistryTimeout:
        return await run_in_threadpool(read, *args)


def readiness(host: Host, statuses: list[PluginStatus]) -> list[str]:
    """Why the host is not ready (empty: ready): shutting down, startup
    unfinished, or a plugin the config marks ``required`` is not available
    or not healthy."""
    if host.draining or host.closing:
        return ["shutting down: finishing the calls in flight"]
    if not host.started:
        return ["startup has not finished: plugins are still loading"]
    reasons = []
    known = {s.name: s for s in statuses}
    for name, settings in sorted(host.config.plugins.items()):
        if not settings.required:
            continue
        status = known.get(name)
        if status is None:
            reasons.append(f"required plugin '{name}' is not installed")
        elif not status.available:
            reasons.append(f"required plugin '{name}' is {status.state.value}: {status.reason}")
        elif not status.healthy:
            last = (status.health or {}).get("error")
            reasons.append(f"required plugin '{name}' is unhealthy: its health check failed {last}")
    return reasons
