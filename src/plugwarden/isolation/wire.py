"""The wire between the host and a worker process, both halves: every
message is one type here, with its one encoding and its one decoding
(docs/guides/isolation.md#the-worker-boundary).

**Host -> worker: pickle.** The worker is the side at risk from that
direction, and it trusts the host that started it: the host sends only
requests it built itself (an id, an operation, the caller's arguments). A
caller's arguments that do not pickle fail that call before anything is sent.

**Worker -> host: plain JSON, checked.** Nothing a worker sends is
unpickled, imported or evaluated by the host. A reply is one length-prefixed
frame: a UTF-8 JSON header (at most ENVELOPE_BYTES, no raw newline) and, for
an outcome, a newline and the result's JSON text. The host refuses a frame
over the cap (``max_result_bytes`` plus room for the header) unread, refuses
NaN and Infinity and nesting past MAX_DEPTH, and checks the header: version,
kind, the id of the request it answers and the pid of the worker that must
have sent it. A result past RAW_ABOVE bytes is checked without being decoded
(:mod:`~plugwarden.isolation.plainjson`) and kept as its bytes, which an HTTP
answer or a job's store passes on. A breach is a :class:`ProtocolViolation`:
the worker is killed and the call fails with the reason.

Requests: :class:`Load`, :class:`Call`, :class:`Validate` and
:class:`Cancel` (a job's, while it runs; no reply), each with an
``encode(fields...)`` making the plain tuple that is pickled (pickling a
class costs ~5 us a call) and :func:`decode_request` making the typed
message again in the worker (the Ray agent's: :mod:`plugwarden.isolation.ray.messages`). A
reply's header: ``{"v": 1, "id": ..., "pid": ..., "kind": ...}`` plus, by
kind, ``loaded`` (``hooks``), ``load_error`` (``reason``, ``error_type``),
``outcome`` (``ok``, ``hook``, ``error``, ``error_type``, ``ms``; ``blobs``:
:mod:`~plugwarden.isolation.process.segment`) or a job's
``progress`` (``done``, ``total``, ``message``; throttled by the worker, a
flood of them is a violation).
"""

from __future__ import annotations

import json
import math
from typing import Any, NamedTuple

from plugwarden.error_types import ErrorType
from plugwarden.exceptions import PlugwardenError
from plugwarden.isolation import plainjson
from plugwarden.isolation.plainjson import depth_within
from plugwarden.result import CallResult

__all__ = [
    "ENVELOPE_BYTES",
    "MAX_DEPTH",
    "RAW_ABOVE",
    "VERSION",
    "Call",
    "Cancel",
    "Encoded",
    "Load",
    "Progress",
    "ProtocolViolation",
    "Request",
    "Validate",
    "decode",
    "decode_request",
    "encode_load_error",
    "encode_loaded",
    "encode_outcome",
    "encode_progress",
    "outcome",
    "progress",
    "protections",
]

VERSION = 1
MAX_DEPTH = 128  # nesting of a result, a health report or a request body
ENVELOPE_BYTES = 64 * 1024  # room for everything of a reply but its result
RAW_ABOVE = 64 * 1024  # a longer result is kept as its bytes (checked, not decoded)
MAX_TEXT = 4096  # an error, reason or error_type longer than this is cut
_KINDS = frozenset({"loaded", "load_error", "outcome", "progress"})
_dumps = json.JSONEncoder(allow_nan=False, ensure_ascii=False).encode


class ProtocolViolation(PlugwardenError):
    """A worker sent something the wire does not allow; ``reason`` says what."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


_decoder = json.JSONDecoder(parse_constant=_refuse_constant)


# -- requests: host -> worker ----------------------------------------------------

# A request as it travels: a plain tuple, its kind first (pickled by the host).
Encoded = tuple[Any, ...]


class Load(NamedTuple):
    """Import the plugin and register its hooks; answered ``loaded`` or ``load_error``."""

    id: int
    name: str
    module: str
    attr: str | None
    search_path: list[str]
    max_result_bytes: int
    blob_bytes: int  # the arguments' area of its shared memory

    @staticmethod
    def encode(
        id: int,
        name: str,
        module: str,
        attr: str | None,
        search_path: list[str],
        cap: int,
        blob_bytes: int,
    ) -> Encoded:
        return ("load", id, name, module, attr, search_path, cap, blob_bytes)


class Call(NamedTuple):
    """Call one hook; answered by its ``outcome`` (a job's after its ``progress``)."""

    id: int
    hook: str
    kwargs: dict[str, Any]
    job: bool  # progress out and cancel in while it runs

    @staticmethod
    def encode(id: int, hook: str, kwargs: dict[str, Any], job: bool) -> Encoded:
        # Fields in, tuple out: no message object on the host's side of a call.
        return ("call", id, hook, kwargs, job)


class Validate(NamedTuple):
    """Call validate(); the worker answers its verdict: None (ready) or the reason."""

    id: int

    @staticmethod
    def encode(id: int) -> Encoded:
        return ("validate", id)


class Cancel(NamedTuple):
    """Ask the job running as request ``id`` to stop; no reply."""

    id: int

    @staticmethod
    def encode(id: int) -> Encoded:
        return ("cancel", id)


Request = Load | Call | Validate | Cancel
_REQUESTS: dict[str, type[Request]] = {
    "load": Load,
    "call": Call,
    "validate": Validate,
    "cancel": Cancel,
}


def decode_request(raw: Encoded) -> Request:
    """A request as the host encoded it (the worker trusts its host)."""
    return _REQUESTS[raw[0]]._make(raw[1:])


class Progress(NamedTuple):
    """A job's report, as a ``progress`` frame carries it."""

    done: float
    total: float | None
    message: str


# -- worker side ---------------------------------------------------------------


def _envelope(request_id: int, pid: int, kind: str) -> str:
    return f'{{"v":{VERSION},"id":{int(request_id)},"pid":{int(pid)},"kind":"{kind}"'


def encode_loaded(
    request_id: int, pid: int, hooks: list[str], protections: dict[str, str] | None = None
) -> bytes:
    body = _dumps({"hooks": hooks, "protections": protections or {}})
    return f"{_envelope(request_id, pid, 'loaded')},{body[1:]}".encode()


def encode_load_error(request_id: int, pid: int, reason: str, error_type: str) -> bytes:
    body = _dumps({"reason": reason[:MAX_TEXT], "error_type": error_type[:200]})
    return f"{_envelope(request_id, pid, 'load_error')},{body[1:]}".encode()


def encode_progress(
    request_id: int, pid: int, done: float, total: float | None, message: str
) -> bytes:
    body = _dumps({"done": done, "total": total, "message": message})
    return f"{_envelope(request_id, pid, 'progress')},{body[1:]}".encode()


def encode_outcome(
    request_id: int, pid: int, result: CallResult, max_result_bytes: int, blobs: Any = None
) -> bytes:
    """A hook's record as a reply: its header (with ``blobs``, the references
    to binary values in shared memory, if any), a newline, and the result as
    the JSON text the guard already made (a value that was not encoded, of
    init or validate, must be plain already). A result over
    ``max_result_bytes`` is ResultTooLarge, one nesting past MAX_DEPTH
    ResultTooDeep: that call's error, not a violation of the wire."""
    text = result.encoded if isinstance(result.encoded, str) else None
    if text is None:
        try:
            text = _dumps(result.result)
        except (TypeError, ValueError, RecursionError) as exc:
            result = _refused(result, f"The plugin's {result.hook}() value cannot be sent to "
                              f"the host ({exc}).", ErrorType.RESULT_NOT_SERIALIZABLE)  # fmt: skip
            text = "null"
    payload = text.encode()
    if len(payload) > max_result_bytes:
        result = _refused(
            result,
            f"Result of {result.hook}() is {len(payload)} bytes, over the {max_result_bytes}-byte "
            "cap (max_result_bytes). Return less, or raise the cap.",
            ErrorType.RESULT_TOO_LARGE,
        )
        payload = b"null"
    elif not plainjson.nests_within(payload, result.result, MAX_DEPTH):
        result = _refused(
            result,
            f"Result of {result.hook}() nests deeper than {MAX_DEPTH} levels of lists and "
            "objects. Return flatter data.",
            ErrorType.RESULT_TOO_DEEP,
        )
        payload = b"null"
    ms = result.duration_ms if math.isfinite(result.duration_ms) else 0.0
    if result.error is None and result.error_type is None:  # the common case, spelled out
        fields = f'"ok":{"true" if result.ok else "false"},"hook":{_dumps(result.hook)},' + (
            f'"error":null,"error_type":null,"ms":{ms!r}'
        )
    else:
        error, kind = result.error, result.error_type
        fields = _dumps({"ok": result.ok, "hook": result.hook, "ms": ms,
                         "error": None if error is None else error[:MAX_TEXT],
                         "error_type": None if kind is None else kind[:200]})[1:-1]  # fmt: skip
    if blobs and result.ok:
        fields += f',"blobs":{_dumps(blobs)}'
    head = f"{_envelope(request_id, pid, 'outcome')},{fields}}}\n"
    return b"".join((head.encode(), payload))


def _refused(result: CallResult, error: str, error_type: str) -> CallResult:
    return CallResult.failure(error, error_type, hook=result.hook, duration_ms=result.duration_ms)


# -- host side -----------------------------------------------------------------


def decode(data: bytes | bytearray, request_id: int, pid: int) -> dict[str, Any]:
    """One reply, checked; raises :class:`ProtocolViolation`.

    The header (up to the first newline, at most ENVELOPE_BYTES) is decoded;
    an outcome's result after it is decoded too when short (``result``), and
    otherwise only checked, then kept as a view of its bytes (``raw``): a
    result of small objects takes ~50 times its size as Python objects.
    (Each level of nesting takes two bytes: a result shorter than twice the
    depth cap needs no walk.)"""
    newline = data.find(b"\n", 0, ENVELOPE_BYTES)
    head_end = len(data) if newline < 0 else newline
    if head_end > ENVELOPE_BYTES:
        raise ProtocolViolation(f"reply's header is over {ENVELOPE_BYTES} bytes")
    message = _plain(bytes(data[:head_end]), "reply")
    if not isinstance(message, dict) or message.get("v") != VERSION:
        raise ProtocolViolation("reply is not a version-1 message")
    if message.get("kind") not in _KINDS:
        raise ProtocolViolation(f"unknown reply kind {str(message.get('kind'))[:40]!r}")
    if message.get("id") != request_id:
        raise ProtocolViolation(
            f"reply to request {str(message.get('id'))[:20]} while request {request_id} waits"
        )
    if message.get("pid") != pid:
        raise ProtocolViolation(
            f"reply from pid {str(message.get('pid'))[:20]}, not from the worker (pid {pid}): "
            "did the plugin fork?"
        )
    message.pop("result", None)  # a result comes after the header, nowhere else
    message.pop("raw", None)
    if (newline >= 0) != (message["kind"] == "outcome"):
        raise ProtocolViolation("only an outcome, and every outcome, has a result after its header")
    if newline >= 0:
        start = newline + 1
        size = len(data) - start
        if size <= RAW_ABOVE:
            result = _plain(bytes(data[start:]), "result")
            if size > 2 * MAX_DEPTH and not depth_within(result, MAX_DEPTH):
                raise ProtocolViolation(f"result nests deeper than {MAX_DEPTH} levels")
            message["result"] = result
        else:
            try:
                plainjson.check(data, MAX_DEPTH, start)
            except plainjson.NotPlainJSON as exc:
                raise ProtocolViolation(f"result is not plain JSON: {exc}") from None
            message["raw"] = memoryview(data)[start:]
    return message


def _plain(text: bytes, what: str) -> Any:
    try:
        return _decoder.decode(text.decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        raise ProtocolViolation(f"{what} is not plain JSON ({type(exc).__name__})") from None


def _text(message: dict[str, Any], key: str, *, required: bool = False) -> str | None:
    value = message.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise ProtocolViolation(f"reply field {key!r} is not a string")
    return value[:MAX_TEXT]


def outcome(message: dict[str, Any]) -> CallResult:
    """The CallResult an ``outcome`` reply carries, its fields checked."""
    if message["kind"] != "outcome":
        raise ProtocolViolation(f"expected an outcome, got {message['kind']!r}")
    ok, ms, hook = message.get("ok"), message.get("ms"), message.get("hook")
    error, error_type = message.get("error"), message.get("error_type")
    if not isinstance(ok, bool):
        raise ProtocolViolation("reply field 'ok' is not a boolean")
    if ms.__class__ is not float and (
        isinstance(ms, bool) or not isinstance(ms, int | float) or not math.isfinite(ms)
    ):
        raise ProtocolViolation("reply field 'ms' is not a number")
    if not isinstance(hook, str):
        raise ProtocolViolation("reply field 'hook' is not a string")
    if error is not None or error_type is not None:
        error, error_type = _text(message, "error"), _text(message, "error_type")
    return CallResult(
        ok,
        hook=hook[:40],
        result=message.get("result"),
        error=error,
        error_type=error_type,
        duration_ms=float(ms),
        encoded=message.get("raw"),
    )


def progress(message: dict[str, Any]) -> Progress:
    """The report a ``progress`` frame carries, its fields checked."""
    done, total, text = message.get("done"), message.get("total"), message.get("message")
    for value in (done, total):
        if value is not None and (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise ProtocolViolation("progress field is not a finite number")
    if done is None:
        raise ProtocolViolation("progress frame without 'done'")
    if not isinstance(text, str):
        raise ProtocolViolation("progress field 'message' is not a string")
    return Progress(float(done), None if total is None else float(total), text[:MAX_TEXT])


def protections(value: object) -> dict[str, str]:
    """A worker's report of its protections, as plain short strings (it is
    the plugin's process that sends it: nothing else is kept)."""
    if not isinstance(value, dict):
        return {}
    return {
        str(key)[:40]: text[:300] for key, text in list(value.items())[:20] if isinstance(text, str)
    }
