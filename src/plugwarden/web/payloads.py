"""Binary values over HTTP (docs/guides/isolation.md#binary-payloads).

A run or a job takes, besides a JSON body:

- ``multipart/form-data``: a ``request`` part holding the JSON body, and
  file parts its args refer to as ``{"$blob": "PART"}`` (the part's bytes),
  or ``{"$blob": "PART", "dtype": "|u1", "shape": [1080, 1920, 3]}`` (an
  array: a numpy array in the plugin);
- ``application/octet-stream``: the body is one binary argument; the query
  names the tool (``tool``), the argument (``arg``), optionally other args
  (``args``, a JSON object) and an array's ``dtype`` and ``shape``
  (``1080,1920,3``).

Both are bounded by ``[server] max_blob_bytes``; the JSON ``request`` part
by ``max_body_bytes`` as any JSON body. The parser is this module's own: the
core depends on no multipart library (Starlette's form parsing needs
python-multipart), and the standard library's ``email`` parser walks a
frame's bytes line by line; here each part is found with one ``bytes.find``
and passed on as a view, never copied.

An answer carries binary values as base64 in JSON (``{"$base64": ...,
"dtype": ..., "shape": ...}``), or, for a client that accepts
``multipart/mixed``, as parts of their own after the JSON record, which
refers to them as ``{"$blob": "b0", ...}``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from plugwarden.blob import buffer_of, part_value, summary_json, with_parts
from plugwarden.error_types import ErrorType
from plugwarden.result import CallResult
from plugwarden.web.errors import error
from plugwarden.web.requests import decode_json, json_body, read_body

__all__ = ["MIXED", "PIECE_BYTES", "mixed_answer", "pieces", "run_body", "wants_parts"]

MULTIPART = "multipart/form-data"
OCTETS = "application/octet-stream"
MIXED = "multipart/mixed"
MAX_PARTS = 64
MAX_PART_HEAD = 8192  # a part's headers
PIECE_BYTES = 1 << 20  # a large answer is written this much at a time
_PARAM = re.compile(r';\s*([A-Za-z0-9_*.-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;\s]*)')


def _media(header: str) -> tuple[str, dict[str, str]]:
    """A Content-Type's media type (lower case) and parameters."""
    kind, _, rest = header.partition(";")
    params = {
        key.lower(): value[1:-1].replace('\\"', '"') if value.startswith('"') else value
        for key, value in _PARAM.findall(";" + rest)
    }
    return kind.strip().lower(), params


async def run_body(request: Request, max_body: int, max_blob: int, timeout_s: float) -> Any:
    """A run's (or job's) body as JSON data, its args' binary values in
    place; or the 4xx Response that says what is wrong."""
    kind, params = _media(request.headers.get("content-type", ""))
    if kind in ("", "application/json") or kind.endswith("+json"):
        return await json_body(request, max_body, timeout_s)
    if kind not in (MULTIPART, OCTETS):
        return error(
            f"Unsupported Content-Type {kind!r}: send application/json, {MULTIPART} (a "
            f"'request' part and file parts) or {OCTETS} (one binary argument).",
            ErrorType.UNSUPPORTED_MEDIA_TYPE,
        )
    raw = await read_body(request, max_blob, timeout_s, "max_blob_bytes")
    if isinstance(raw, Response):
        return raw
    try:
        if kind == OCTETS:
            return _octets(request, memoryview(raw))
        parts = _multipart(memoryview(raw), params.get("boundary", ""))
        request_part = parts.pop("request", None)
        if request_part is None:
            raise ValueError("no 'request' part: send the JSON body as a part named 'request'")
        if len(request_part) > max_body:
            return error(f"The 'request' part is over {max_body} bytes (max_body_bytes).",
                         ErrorType.PAYLOAD_TOO_LARGE)  # fmt: skip
        body = decode_json(request_part, "The 'request' part")
        if isinstance(body, Response) or not isinstance(body, dict):
            return body
        used: set[str] = set()
        body["args"] = with_parts(body.get("args"), parts, used)
        unused = sorted(set(parts) - used)
        if unused:
            raise ValueError(f"part {unused[0]!r} is not referred to by any argument "
                             '(refer to it as {"$blob": "' + unused[0] + '"})')  # fmt: skip
        return body
    except ValueError as exc:
        return error(f"Cannot read the request: {exc}", ErrorType.INVALID_REQUEST)


def _octets(request: Request, raw: memoryview) -> dict[str, Any] | Response:
    query = request.query_params
    tool, arg = query.get("tool"), query.get("arg")
    if not tool or not arg:
        raise ValueError(
            "an application/octet-stream body needs ?tool=TOOL&arg=ARGUMENT (the argument "
            "that takes the bytes), and may add args={...} (JSON), dtype and shape"
        )
    # As any JSON body: finite numbers of sane length, bounded nesting.
    args = decode_json((query.get("args") or "{}").encode(), "The query's args")
    if isinstance(args, Response):
        return args
    if not isinstance(args, dict):
        raise ValueError("the query's args must be a JSON object")
    shape = query.get("shape")
    dims = [int(n) for n in shape.split(",")] if shape else None
    args[arg] = part_value(raw, query.get("dtype"), dims)
    return {"tool": tool, "args": args}


def _multipart(body: memoryview, boundary: str) -> dict[str, memoryview]:
    """Each part's bytes by its name, as views of ``body``."""
    if not 0 < len(boundary) <= 70:
        raise ValueError("the Content-Type has no multipart boundary")
    data = body.obj if isinstance(body.obj, bytes) else bytes(body)
    delimiter = b"--" + boundary.encode("latin-1")
    position = data.find(delimiter)
    if position < 0:
        raise ValueError("the body holds no part (no boundary line)")
    position += len(delimiter)
    parts: dict[str, memoryview] = {}
    while not data.startswith(b"--", position):
        if not data.startswith(b"\r\n", position):
            raise ValueError("a boundary line is not followed by CRLF")
        head_end = data.find(b"\r\n\r\n", position + 2, position + 2 + MAX_PART_HEAD)
        if head_end < 0:
            raise ValueError(f"a part's headers do not end within {MAX_PART_HEAD} bytes")
        headers = _headers(data[position + 2 : head_end])
        end = data.find(b"\r\n" + delimiter, head_end + 4)
        if end < 0:
            raise ValueError("the last part has no closing boundary")
        disposition, params = _media(headers.get("content-disposition", ""))
        name = params.get("name")
        if disposition != "form-data" or not name:
            raise ValueError("each part needs Content-Disposition: form-data; name=...")
        if name in parts or len(parts) >= MAX_PARTS:
            raise ValueError(f"part {name!r} twice, or over {MAX_PARTS} parts")
        parts[name] = body[head_end + 4 : end]
        position = end + 2 + len(delimiter)
    return parts


def _headers(block: bytes) -> dict[str, str]:
    headers = {}
    for line in block.decode("latin-1").split("\r\n"):
        key, colon, value = line.partition(":")
        if not colon:
            raise ValueError(f"a part's header line {line[:40]!r} has no colon")
        headers[key.strip().lower()] = value.strip()
    return headers


# -- answers -------------------------------------------------------------------


def wants_parts(request: Request) -> bool:
    """The client accepts an answer's binary values as parts of their own."""
    return MIXED in request.headers.get("accept", "")


def mixed_answer(result: CallResult, status: int, headers: dict[str, str]) -> Response:
    """``result``'s record as a ``multipart/mixed`` answer: the JSON record
    first (binary values as ``{"$blob": "bN", ...}``), then one part each."""
    found: list[memoryview] = []

    def refer(value: object) -> Any:
        buffer = buffer_of(value)
        if buffer is None:
            raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")
        view, kind, dtype, shape = buffer
        found.append(view)
        ref: dict[str, Any] = {"$blob": f"b{len(found) - 1}"}
        return ref if kind == "bytes" else {**ref, "dtype": dtype, "shape": list(shape)}

    record = result.to_dict()
    record["args"] = json.loads(summary_json(result.args))
    record_json: list[bytes | memoryview]
    if result.undecoded:  # a large plain result: passed on as the worker sent it
        del record["result"]
        head = json.JSONEncoder(separators=(",", ":"), default=refer).encode(record)
        record_json = [f'{head[:-1]},"result":'.encode(), result.encoded, b"}"]  # type: ignore[list-item]
    else:
        options = {"separators": (",", ":"), "ensure_ascii": False, "allow_nan": False}
        record_json = [json.JSONEncoder(default=refer, **options).encode(record).encode()]  # type: ignore[arg-type]
    boundary = os.urandom(16).hex()
    body: list[bytes | memoryview] = [
        f"--{boundary}\r\nContent-Type: application/json\r\n"
        'Content-Disposition: inline; name="record"\r\n\r\n'.encode(),
        *record_json,
    ]
    for number, view in enumerate(found):
        body.append(
            f"\r\n--{boundary}\r\nContent-Type: {OCTETS}\r\n"
            f'Content-Disposition: attachment; name="b{number}"\r\n\r\n'.encode()
        )
        body.append(view)
    body.append(f"\r\n--{boundary}--\r\n".encode())
    headers = {**headers, "Content-Length": str(sum(len(piece) for piece in body))}
    media = f"{MIXED}; boundary={boundary}"
    return StreamingResponse(pieces(body), status, headers, media_type=media)


async def pieces(parts: list[bytes | memoryview]) -> AsyncIterator[bytes]:
    """``parts`` as bytes, a slice of a large one at a time (an answer is
    never copied whole; the client's pace holds the rest back)."""
    for part in parts:
        for start in range(0, len(part), PIECE_BYTES):
            yield bytes(part[start : start + PIECE_BYTES])
