"""Binary values (docs/guides/isolation.md#binary-payloads): what a
bytes-like argument or result is on each side of the worker boundary, and
its JSON forms.

Bytes, bytearrays, memoryviews and C-contiguous buffers (a numpy array, a
PIL image's bytes) travel through shared memory, not as JSON. A worker gets
back the type it was sent (a numpy array where its environment has numpy);
the host, which never imports numpy, gets ``bytes`` for bytes and a
:class:`Blob` for an array: its ``data`` (a memoryview), ``dtype`` (numpy's
type string, e.g. ``"<f4"``) and ``shape``; ``numpy.asarray(blob)`` is the
array, through its ``__array_interface__``, without a copy.

Only plain numeric dtypes travel (integers, floats, complex, bool): an
object dtype would make a reader treat the bytes as pointers.
"""

from __future__ import annotations

import base64
import importlib
import importlib.util
import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

__all__ = [
    "BYTES",
    "Blob",
    "answer_json",
    "buffer_of",
    "itemsize",
    "part_value",
    "rebuild",
    "summary_json",
    "with_parts",
]

BYTES = "bytes"  # a blob of plain bytes: bytes on the host, the sender's type in a worker
ARRAY = "array"  # a blob with a dtype and shape: a Blob on the host, numpy in a worker
# numpy's type strings for plain numbers: byte order, kind, size in bytes.
_DTYPE = re.compile(r"[<>|][iu][1248]|[<>|]f[248]|[<>|]c(8|16)|\|b1")
MAX_DIMENSIONS = 32
# struct formats of a memoryview, as numpy type strings (native byte order: little).
_FORMATS = {
    "B": "|u1", "b": "|i1", "c": "|u1", "?": "|b1", "h": "<i2", "H": "<u2", "i": "<i4",
    "I": "<u4", "l": "<i8", "L": "<u8", "q": "<i8", "Q": "<u8", "e": "<f2", "f": "<f4",
    "d": "<f8",
}  # fmt: skip

_STRUCTS = {"|u1": "B", "|i1": "b", "|b1": "?", "<i2": "h", "<u2": "H", "<i4": "i",
            "<u4": "I", "<i8": "q", "<u8": "Q", "<f2": "e", "<f4": "f", "<f8": "d"}  # fmt: skip


def itemsize(dtype: str) -> int | None:
    """Bytes per element of a plain numeric ``dtype``; None for any other."""
    if not isinstance(dtype, str) or not _DTYPE.fullmatch(dtype):
        return None
    return int(dtype[2:])


class Blob:
    """An array that came through the boundary: ``data`` (a flat memoryview
    of bytes), ``dtype`` and ``shape``. Equal to another with the same three."""

    __slots__ = ("data", "dtype", "shape")

    def __init__(self, data: Any, dtype: str = "|u1", shape: tuple[int, ...] | None = None) -> None:
        view = memoryview(data)
        if not view.c_contiguous:
            raise ValueError("a Blob's data must be C-contiguous")
        view = view.cast("B") if view.format != "B" or view.ndim != 1 else view
        size = itemsize(dtype)
        if size is None:
            raise ValueError(f"dtype {dtype!r} is not a plain numeric type (e.g. '|u1', '<f4')")
        shape = (view.nbytes // size,) if shape is None else tuple(shape)
        if len(shape) > MAX_DIMENSIONS or any(type(n) is not int or n < 0 for n in shape):
            raise ValueError(f"shape {shape!r} is not at most {MAX_DIMENSIONS} sizes >= 0")
        if math.prod(shape) * size != view.nbytes:
            raise ValueError(f"{view.nbytes} bytes are not an array of {shape} {dtype}")
        self.data, self.dtype, self.shape = view, dtype, shape

    @property
    def __array_interface__(self) -> dict[str, Any]:
        return {
            "version": 3,
            "shape": self.shape,
            "typestr": self.dtype,
            "data": self.data,
            "strides": None,
        }

    def __len__(self) -> int:
        return self.data.nbytes

    def __bytes__(self) -> bytes:
        return self.data.tobytes()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Blob):
            return NotImplemented
        return (self.dtype, self.shape) == (other.dtype, other.shape) and self.data == other.data

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Blob({self.data.nbytes} bytes, dtype={self.dtype!r}, shape={self.shape!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return Blob, (self.data.tobytes(), self.dtype, self.shape)


def buffer_of(value: object) -> tuple[memoryview, str, str, tuple[int, ...]] | None:
    """What ``value`` is as a blob: (its bytes, kind, dtype, shape), or None
    when it is not bytes-like (or is a 0-d array, a number)."""
    kind = type(value)
    if kind is bytes or kind is bytearray:
        view = memoryview(value)  # type: ignore[arg-type]
        return view, BYTES, "|u1", (view.nbytes,)
    if isinstance(value, Blob):
        return value.data, ARRAY, value.dtype, value.shape
    if kind is str or kind is int or kind is float or kind is dict or kind is list:
        return None
    interface = getattr(value, "__array_interface__", None)
    try:
        view = memoryview(value)  # type: ignore[arg-type]
    except TypeError:
        return None
    if isinstance(interface, dict):  # numpy: its own dtype and shape
        dtype, shape = interface.get("typestr"), tuple(interface.get("shape") or ())
        if not shape:
            return None
    else:
        dtype, shape = _FORMATS.get(view.format.lstrip("@=<")), tuple(view.shape or ())
    flat = view.cast("B") if view.c_contiguous else memoryview(view.tobytes())
    if kind is not memoryview and isinstance(dtype, str) and itemsize(dtype) is not None:
        return flat, ARRAY, dtype, shape
    if kind is memoryview and dtype is not None:
        return flat, ARRAY, dtype, shape
    return flat, BYTES, "|u1", (flat.nbytes,)


_numpy: Any = None


def rebuild(buffer: memoryview, kind: str, dtype: str, shape: tuple[int, ...]) -> Any:
    """In a worker: the value a blob argument was, over ``buffer`` (a view of
    the worker's shared memory, valid for the call). Bytes and bytearrays are
    copies (their types own their memory); arrays are views: a numpy array
    where numpy is installed, else a :class:`Blob`."""
    global _numpy
    if kind == "bytes":
        return bytes(buffer)
    if kind == "bytearray":
        return bytearray(buffer)
    if kind == "memoryview":  # with its element type and shape again
        fmt = _STRUCTS.get(dtype)
        return buffer.cast(fmt, shape) if fmt and shape else buffer  # type: ignore[call-overload]
    if _numpy is None:
        _numpy = importlib.import_module("numpy") if importlib.util.find_spec("numpy") else False
    if _numpy is False:
        return Blob(buffer, dtype, shape)
    return _numpy.frombuffer(buffer, dtype=dtype).reshape(shape)


def with_parts(value: Any, parts: Mapping[str, memoryview], used: set[str]) -> Any:
    """``value`` (JSON data) with each ``{"$blob": NAME}`` replaced by part
    NAME's bytes, or by an array where ``dtype`` or ``shape`` sit beside it
    (the form HTTP bodies and the CLI's ``--file`` use); the names taken go
    into ``used``. Raises ValueError naming what is wrong."""
    if isinstance(value, dict):
        if "$blob" in value:
            name = value["$blob"]
            if set(value) - {"$blob", "dtype", "shape"} or not isinstance(name, str):
                raise ValueError('a reference to a part is {"$blob": NAME} with at most '
                                 '"dtype" and "shape" beside it')  # fmt: skip
            if name not in parts:
                raise ValueError(f"an argument refers to part {name!r}, which was not sent")
            used.add(name)
            return part_value(parts[name], value.get("dtype"), value.get("shape"))
        return {key: with_parts(item, parts, used) for key, item in value.items()}
    if isinstance(value, list):
        return [with_parts(item, parts, used) for item in value]
    return value


def part_value(data: memoryview, dtype: object = None, shape: object = None) -> Any:
    """A part's bytes as an argument: bytes, or a :class:`Blob` of ``dtype``
    and ``shape`` (a list of sizes). Raises ValueError for ones that do not fit."""
    if dtype is None and shape is None:
        return bytes(data)  # a plugin takes a file's bytes as bytes
    if dtype is not None and not isinstance(dtype, str):
        raise ValueError("a blob's dtype must be a string such as '|u1' or '<f4'")
    if shape is not None and (not isinstance(shape, list) or len(shape) > MAX_DIMENSIONS):
        raise ValueError("a blob's shape must be a list of sizes")
    return Blob(data, dtype or "|u1", None if shape is None else tuple(shape))


def _answer_form(value: object) -> Any:
    found = buffer_of(value)
    if found is None:
        raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")
    view, kind, dtype, shape = found
    text = base64.b64encode(view).decode("ascii")
    if kind == BYTES:
        return {"$base64": text}
    return {"$base64": text, "dtype": dtype, "shape": list(shape)}


def _summary_form(value: object) -> Any:
    found = buffer_of(value)
    if found is None:
        raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")
    view, kind, dtype, shape = found
    if kind == BYTES:
        return {"$blob": {"bytes": view.nbytes}}
    return {"$blob": {"bytes": view.nbytes, "dtype": dtype, "shape": list(shape)}}


def _encoder(default: Callable[[Any], Any]) -> Callable[[Any], str]:
    options = {"ensure_ascii": False, "allow_nan": False, "separators": (",", ":")}
    return json.JSONEncoder(default=default, **options).encode  # type: ignore[arg-type]


# A result as an answer carries its blobs whole, as base64 with dtype and
# shape; a record's args and a job's stored args only say what they were.
answer_json = _encoder(_answer_form)
summary_json = _encoder(_summary_form)
