"""What every request must bring, checked before any plugin code runs:
the bearer token of mutating routes, and a JSON body within bounds (size,
nesting, finite numbers of sane length). Each check answers the 4xx
:func:`~plugwarden.web.errors.error` response that says what is wrong.
"""

from __future__ import annotations

import hmac
import json
import math
from collections.abc import Collection
from typing import Any

import anyio
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from plugwarden.error_types import ErrorType
from plugwarden.isolation.plainjson import depth_within
from plugwarden.isolation.wire import MAX_DEPTH
from plugwarden.web.errors import error

__all__ = ["authorise", "body_problem", "decode_json", "json_body", "read_body"]


def authorise(request: Request, token: bytes | None) -> Response | None:
    """None when ``request`` brings ``token``; else the 401/403 that says why
    (mutating routes, and reads of jobs: they carry users' data)."""
    if token is None:
        return error(
            "Run, restart and jobs are off: no token is configured. Set [server] token in the "
            "config or the PLUGWARDEN_TOKEN environment variable.",
            ErrorType.MUTATIONS_DISABLED,
        )
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given:
        return error(
            "Missing bearer token: send 'Authorization: Bearer <token>'.",
            ErrorType.UNAUTHORIZED,
            headers={"WWW-Authenticate": 'Bearer realm="plugwarden"'},
        )
    if not hmac.compare_digest(given.strip().encode(), token):
        return error("Wrong bearer token.", ErrorType.FORBIDDEN)
    return None


# A body this far over the limit is not read to its end: the connection closes.
DRAIN_LIMIT = 64 * 2**20
MAX_INT_DIGITS = 64


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON: numbers must be finite")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:20]} is out of range")
    return value


def _short_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"integer of {len(text)} digits (at most {MAX_INT_DIGITS})")
    return int(text)


_body_decoder = json.JSONDecoder(
    parse_constant=_refuse_constant, parse_float=_finite_float, parse_int=_short_int
)


async def json_body(request: Request, limit: int, timeout_s: float) -> Any:
    """The parsed JSON body, or the 4xx Response that says what is wrong.
    Numbers must be finite and of sane length, nesting at most MAX_DEPTH;
    the whole body must arrive within ``timeout_s``."""
    raw = await read_body(request, limit, timeout_s)
    return raw if isinstance(raw, Response) else decode_json(raw)


async def read_body(
    request: Request, limit: int, timeout_s: float, knob: str = "max_body_bytes"
) -> bytes | Response:
    """The whole body, or the 4xx Response that says what is wrong: over
    ``limit`` bytes (the config key ``knob``), not all there within
    ``timeout_s``, or the client gone."""
    declared = request.headers.get("content-length")
    too_large = declared is not None and (not declared.isdigit() or int(declared) > limit)
    chunks: list[bytes] = []
    size = 0
    try:
        with anyio.move_on_after(timeout_s) as late:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    too_large = True
                if too_large:
                    # Read on (up to a bound) so the client, still sending, can
                    # read the 413 instead of a connection reset.
                    if size > DRAIN_LIMIT:
                        break
                    continue
                chunks.append(chunk)
    except ClientDisconnect:
        return error("Client disconnected while sending the body.", ErrorType.CLIENT_DISCONNECT)
    if late.cancelled_caught:
        return error(
            f"Request body not received within {timeout_s:g}s (server.body_timeout_s): "
            f"{size} bytes came. Send the body at once.",
            ErrorType.REQUEST_TIMEOUT,
            headers={"Connection": "close"},
        )
    if too_large:
        headers = {"Connection": "close"} if size > DRAIN_LIMIT else {}
        return error(
            f"Request body over {limit} bytes ({knob}). Send less.",
            ErrorType.PAYLOAD_TOO_LARGE,
            headers=headers,
        )
    return b"".join(chunks)


def decode_json(raw: bytes | memoryview, what: str = "Request body") -> Any:
    """``raw`` as JSON data, or the 4xx Response that says what is wrong."""
    if not bytes(raw).strip():
        return error(f'Empty {what.lower()}: send {{"tool": ..., "args": {{...}}}}.',
                     ErrorType.INVALID_JSON)  # fmt: skip
    try:
        body = _body_decoder.decode(bytes(raw).decode("utf-8"))
        deep = not depth_within(body, MAX_DEPTH)
    except (ValueError, UnicodeDecodeError) as exc:
        return error(f"{what} is not valid JSON: {exc}", ErrorType.INVALID_JSON)
    except RecursionError:
        deep = True
    if deep:
        return error(f"{what} nests deeper than {MAX_DEPTH} levels.", ErrorType.INVALID_JSON)
    return body


def body_problem(body: Any, fields: Collection[str] = ("tool", "args")) -> str | None:
    """What is wrong with the envelope of a run (or job) body, or None:
    it is a JSON object with no fields but ``fields``. What the fields hold
    is the host's to judge (:meth:`Host.refusal`), as for a Python caller."""
    if not isinstance(body, dict):
        return f'Body must be a JSON object like {{"tool": ..., "args": {{}}}}, got {_kind(body)}.'
    unknown = sorted(set(body) - set(fields))
    if unknown:
        expected = ", ".join(map(repr, fields))
        return f"Unknown field(s) {', '.join(map(repr, unknown))}; expected {expected}."
    return None


def _kind(value: object) -> str:
    return {
        dict: "an object",
        list: "an array",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        type(None): "null",
    }.get(type(value), "a value")
