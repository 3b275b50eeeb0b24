"""The install routes (docs/guides/environments.md): install,
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
    wanted = await _wanted(request, required=True)
    if isinstance(wanted, Response):
        return wanted
    return await _submit(request, "install", None, *wanted)


async def upgrade(request: Request) -> Response:
    wanted = await _wanted(request, required=False)
    if isinstance(wanted, Response):
        return wanted
    specs, overrides = wanted
    return await _submit(request, "upgrade", request.path_params["name"], specs or None, overrides)


async def rollback(request: Request) -> Response:
    denied = authorise(request, request.app.state.token)
    return denied or await _submit(request, "rollback", request.path_params["name"], None, [])


async def uninstall(request: Request) -> Response:
    denied = authorise(request, request.app.state.token)
    return denied or await _submit(request, "uninstall", request.path_params["name"], None, [])


async def _wanted(request: Request, *, required: bool) -> tuple[list[str], list[str]] | Response:
    """The body's ``spec`` and ``overrides`` (each a string or a list of
    them), or the answer that refuses the request."""
    state = request.app.state
    denied = authorise(request, state.token)
    if denied is not None:
        return denied
    if not required and not await _has_body(request):
        return [], []
    body = await json_body(request, state.server.max_body_bytes, state.server.body_timeout_s)
    if isinstance(body, Response):
        return body
    problem = body_problem(body, ("spec", "overrides"))
    if problem is None and required and "spec" not in body:
        problem = 'Missing "spec": a requirement or a wheel (or a list of them).'
    if problem is not None:
        return error(problem, ErrorType.INVALID_REQUEST)
    found = [_lines(body, key) for key in ("spec", "overrides")]
    for key, lines in zip(("spec", "overrides"), found, strict=True):
        if isinstance(lines, str):
            return error(f'"{key}": {lines}', ErrorType.INVALID_REQUEST)
    specs, overrides = found
    return list(specs), list(overrides)


def _lines(body: dict[str, Any], key: str) -> list[str] | str:
    """``body[key]`` as a list of requirement lines, or what is wrong with it."""
    found: Any = body.get(key, [])
    lines = [found] if isinstance(found, str) else found
    if not isinstance(lines, list) or len(lines) > MAX_SPECS or (key == "spec" and not lines):
        return f"expected a string or a list of 1 to {MAX_SPECS} strings"
    return next((p for p in map(spec_problem, lines) if p), None) or lines


async def _has_body(request: Request) -> bool:
    length = request.headers.get("content-length")
    return length not in (None, "0") or "transfer-encoding" in request.headers


async def _submit(
    request: Request,
    operation: str,
    name: str | None,
    specs: list[str] | None,
    overrides: list[str],
) -> Response:
    host = request.app.state.host
    try:
        job = await run_in_threadpool(host.change, operation, name, specs, overrides)
    except UnknownPlugin as exc:
        return error(str(exc), ErrorType.UNKNOWN_PLUGIN)
    except JobRefused as exc:
        return error(str(exc), exc.error_type)
    headers = {"Location": f"/v1/jobs/{job.id}"}
    return Response(job.to_json(), 202, headers, media_type="application/json")


INSTALL_ROUTES = [
    Route("/v1/plugins", install, methods=["POST"]),
    Route("/v1/plugins/{name}/upgrade", upgrade, methods=["POST"]),
    Route("/v1/plugins/{name}/rollback", rollback, methods=["POST"]),
    Route("/v1/plugins/{name}", uninstall, methods=["DELETE"]),
]
