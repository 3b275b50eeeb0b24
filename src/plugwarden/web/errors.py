"""Errors as JSON, never a 500 and never a traceback.

Every error body is ``{"error": ..., "error_type": ...}``. :class:`ContainErrors`
is the innermost safety net: anything a handler did not expect is logged with
its traceback and answered 503 (the host is degraded, not the request wrong).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from plugwarden.error_types import ErrorType
from plugwarden.exceptions import RegistryTimeout

__all__ = ["ContainErrors", "error", "http_exception", "registry_timeout", "retry_headers"]

log = logging.getLogger("plugwarden.web")

RETRY_AFTER_S = 1


def error(
    message: str,
    error_type: str,
    *,
    status: int | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """The JSON error answer; its status is the error type's own
    (:meth:`ErrorType.http_status`) unless given. A 429 or 503 says when to
    retry."""
    return JSONResponse(
        {"error": message, "error_type": error_type},
        status_code=status or ErrorType.http_status(error_type),
        headers=retry_headers(status or ErrorType.http_status(error_type)) | dict(headers or {}),
    )


def retry_headers(status: int) -> dict[str, str]:
    """``Retry-After`` for an answer that says "not now" (429, 503)."""
    return {"Retry-After": str(RETRY_AFTER_S)} if status in (429, 503) else {}


async def http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own 404 / 405 / 400, in our JSON shape."""
    if not isinstance(exc, HTTPException):  # pragma: no cover - registered for HTTPException
        return error("Unexpected error", ErrorType.INTERNAL)
    names = {
        404: ErrorType.NOT_FOUND,
        405: ErrorType.METHOD_NOT_ALLOWED,
        400: ErrorType.BAD_REQUEST,
    }
    message = exc.detail if isinstance(exc.detail, str) else "Request not accepted"
    if exc.status_code == 404:
        message = f"No route for {request.method} {request.url.path}. See GET / for the routes."
    response = error(
        message, names.get(exc.status_code, ErrorType.HTTP_ERROR), status=exc.status_code
    )
    for key, value in (exc.headers or {}).items():
        response.headers[key] = value
    return response


def registry_timeout(exc: RegistryTimeout) -> JSONResponse:
    return error(
        f"{exc}. The host is busy; retry shortly.",
        ErrorType.REGISTRY_TIMEOUT,
    )


class ContainErrors:
    """Pure ASGI middleware: an exception below it becomes a JSON answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except RegistryTimeout as exc:
            if not started:
                await registry_timeout(exc)(scope, receive, send)
        # The catch-all the contract asks for: log it, answer JSON, never 500.
        except Exception:
            log.exception("unexpected error serving %s %s", scope.get("method"), scope.get("path"))
            if not started:
                response = error(
                    "Unexpected error in plugwarden; it was logged. Retry later.",
                    ErrorType.INTERNAL,
                )
                await response(scope, receive, send)
