"""The install routes (README, "Environments and live installs"): install,
upgrade, roll back and uninstall a plugin on the running server, each a
job (202, its ``Location`` under ``/v1/jobs``) whose progress and outcome
are read like any job's. Every one needs the token. The host, token and
server settings are on ``app.state``."""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from plugwarden.environments import spec_problem
from plugwarden.error_types import ErrorType
from plugwarden.exceptions import JobRefused, UnknownPlugin
from plugwarden.web.errors import error
from plugwarden.web.requests import authorise, body_problem, json_body

__all__ = ["INSTALL_ROUTES", "MAX_SPECS"]

MAX_SPECS = 32  # requirements in one install


async def install(request: Request) -> Response:
    specs = await _specs(request, required=True)
    if isinstance(specs, Response):
        return specs
    return await _submit(request, "install", None, specs)


async def upgrade(request: Request) -> Response:
    specs = await _specs(request, required=False)
    if isinstance(specs, Response):
        return specs
    return await _submit(request, "upgrade", request.path_params["name"], specs or None)


async def rollback(request: Request) -> Response:
    denied = authorise(request, request.app.state.token)
    return denied or await _submit(request, "rollback", request.path_params["name"], None)


async def uninstall(request: Request) -> Response:
    denied = authorise(request, request.app.state.token)
    return denied or await _submit(request, "uninstall", request.path_params["name"], None)


async def _specs(request: Request, *, required: bool) -> list[str] | Response:
    """The body's ``spec`` (a string or a list of them), or the answer
    that refuses the request."""
    state = request.app.state
    denied = authorise(request, state.token)
    if denied is not None:
        return denied
    if not required and not await _has_body(request):
        return []
    body = await json_body(request, state.server.max_body_bytes, state.server.body_timeout_s)
    if isinstance(body, Response):
        return body
    problem = body_problem(body, ("spec",))
    if problem is None and required and "spec" not in body:
        problem = 'Missing "spec": a requirement, a wheel or a project directory (or a list).'
    if problem is not None:
        return error(problem, ErrorType.INVALID_REQUEST)
    found: Any = body.get("spec", [])
    specs = [found] if isinstance(found, str) else found
    if (
        not isinstance(specs, list)
        or not 0 < len(specs) <= MAX_SPECS
        or (problem := next((p for p in map(spec_problem, specs) if p), None))
    ):
        return error(
            problem or f'"spec" must be a string or a list of 1 to {MAX_SPECS} strings.',
            ErrorType.INVALID_REQUEST,
        )
    return specs


async def _has_body(request: Request) -> bool:
    length = request.headers.get("content-length")
    return length not in (None, "0") or "transfer-encoding" in request.headers


async def _submit(
    request: Request, operation: str, name: str | None, specs: list[str] | None
) -> Response:
    host = request.app.state.host
    try:
        if name is not None:
            await run_in_threadpool(host.status, name)
        job = await run_in_threadpool(_start, host, operation, name, specs)
    except UnknownPlugin as exc:
        return error(str(exc), ErrorType.UNKNOWN_PLUGIN)
    except JobRefused as exc:
        return error(str(exc), exc.error_type)
    headers = {"Location": f"/v1/jobs/{job.id}"}
    return Response(job.to_json(), 202, headers, media_type="application/json")


def _start(host: Any, operation: str, name: str | None, specs: list[str] | None) -> Any:
    if operation == "install":
        return host.install(specs or [])
    if operation == "upgrade":
        return host.upgrade(name, specs)
    return host.rollback(name) if operation == "rollback" else host.uninstall(name)


INSTALL_ROUTES = [
    Route("/v1/plugins", install, methods=["POST"]),
    Route("/v1/plugins/{name}/upgrade", upgrade, methods=["POST"]),
    Route("/v1/plugins/{name}/rollback", rollback, methods=["POST"]),
    Route("/v1/plugins/{name}", uninstall, methods=["DELETE"]),
]
