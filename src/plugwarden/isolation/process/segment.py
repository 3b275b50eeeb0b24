"""A worker's shared memory, through which binary values travel
(docs/guides/isolation.md#binary-payloads), both halves.

The host makes one memfd per worker, sized ``[server] max_blob_bytes`` (the
arguments' area) plus the plugin's ``max_result_bytes`` (the results'
area), sealed against shrinking or growing (a worker that truncated it
would make the host's reads fault), and hands it to the worker with its
other descriptors when it forks. It is sparse: only pages a call wrote are
memory, and they are the worker's memory too (its guard counts the pages
it touched). It goes with the worker: no name in ``/dev/shm``, nothing left
when either side dies.

**Host -> worker.** A request is pickled (the worker trusts its host) with
protocol 5; each bytes-like value found in it is written once into the
arguments' area and pickled out of band: the worker rebuilds it over a view
of its mapping (:func:`plugwarden.blob.rebuild`), with no copy for arrays.

**Worker -> host.** A result with binary values is JSON with ``null`` where
each value was, and an outcome header's ``blobs``: ``[path, offset,
length, kind, dtype, shape]`` for each, written once into the results'
area. The host checks every reference (inside the results' area, no
overlap, sizes that match the dtype and shape, at most
``max_result_bytes`` in all, each path ending at a ``null``) and copies
what it names out of the segment; a reference that breaks a rule is a
protocol violation. Nothing a worker sends is unpickled.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import math
import mmap
import os
import pickle
from typing import Any

from plugwarden import blob
from plugwarden.blob import BYTES, Blob, buffer_of, itemsize
from plugwarden.exceptions import PlugwardenError

__all__ = ["MEMFD_NAME", "BlobsTooLarge", "Joined", "Segment", "encode_result", "place"]

MEMFD_NAME = "plugwarden-blobs"
ALIGN = 64
MAX_BLOBS = 4096  # references in one reply
IN_BAND = 64 * 1024  # a request pickled shorter than this sends its bytes in it
_SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL
_ARGUMENT_KINDS: dict[type, str] = {
    bytes: "bytes",
    bytearray: "bytearray",
    memoryview: "memoryview",
}


class BlobsTooLarge(PlugwardenError):
    """A call's binary values do not fit the segment's area for them."""


def _aligned(offset: int) -> int:
    return -(-offset // ALIGN) * ALIGN


def _layout(sizes: list[int], start: int) -> tuple[list[int], int]:
    """Where values of ``sizes`` go, one after another from ``start``, each
    at an aligned offset; and where the last ends."""
    offsets, end = [], start
    for size in sizes:
        end = _aligned(end)
        offsets.append(end)
        end += size
    return offsets, end


def _refs(blobs: list[tuple[Any, ...]], offsets: list[int]) -> list[list[Any]]:
    """A reply's references to ``blobs`` (path, view, kind, dtype, shape) at ``offsets``."""
    return [
        [path, offset, view.nbytes, kind, dtype, list(shape)]
        for (path, view, kind, dtype, shape), offset in zip(blobs, offsets, strict=True)
    ]


class _Binary:
    """A bytes or bytearray value to send out of band (the pickler never
    offers those types to ``reducer_override``)."""

    __slots__ = ("value",)

    def __init__(self, value: bytes | bytearray) -> None:
        self.value = value


def _marked(value: Any) -> tuple[Any, bool]:
    """``value`` with its bytes and bytearrays (in dicts, lists and tuples)
    marked to travel out of band; and whether it held any."""
    kind = type(value)
    if kind is bytes or kind is bytearray:
        return _Binary(value), True
    if kind is dict:
        items = [(key, *_marked(item)) for key, item in value.items()]
        if any(found for _, _, found in items):
            return {key: item for key, item, _ in items}, True
    elif kind is list or kind is tuple:
        marked = [_marked(item) for item in value]
        if any(found for _, found in marked):
            return kind(item for item, _ in marked), True
    return value, False


class _Pickler(pickle.Pickler):
    """Protocol 5, bytes-like values out of band (one per worker: made
    once, ~1 us a call less)."""

    def reducer_override(self, obj: Any) -> Any:
        kind = type(obj)
        if kind is _Binary:
            obj = obj.value
            kind = type(obj)
        found = buffer_of(obj)
        if found is None:
            return NotImplemented
        view, what, dtype, shape = found
        if kind is memoryview or what == BYTES:
            what = _ARGUMENT_KINDS.get(kind, "bytes")
        return blob.rebuild, (pickle.PickleBuffer(view), what, dtype, shape)


class Segment:
    """One worker's shared memory: ``args_bytes`` for a call's arguments,
    then the rest for its result. ``fd`` None: make one (the host)."""

    def __init__(self, args_bytes: int, result_bytes: int, fd: int | None = None) -> None:
        own = fd is None
        if fd is None:
            size = _aligned(args_bytes) + max(result_bytes, 1)
            fd = os.memfd_create(MEMFD_NAME, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            if own:
                os.ftruncate(fd, size)
                fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
            else:
                size = os.fstat(fd).st_size
            self._map: mmap.mmap | None = mmap.mmap(fd, size)
        except OSError:
            if own:
                os.close(fd)
            raise
        self.size = size
        self.args_end = _aligned(args_bytes)
        self.fd: int | None = fd
        self._out = io.BytesIO()
        self._buffers: list[pickle.PickleBuffer] = []
        self._pickler = _Pickler(self._out, 5, buffer_callback=self._buffers.append)

    def release_fd(self) -> None:
        """Close the descriptor (the worker holds its own); the mapping stays."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def close(self) -> None:
        """Unmap and close: the memory is freed once the worker's side is gone too."""
        self.release_fd()
        if self._map is not None:
            with contextlib.suppress(BufferError):  # a view still held: freed with it
                self._map.close()
            self._map = None

    # -- host: requests out, results in ------------------------------------------

    def dumps(self, message: tuple[Any, ...]) -> bytes:
        """``message`` pickled; its binary values written to the arguments'
        area. Raises :class:`BlobsTooLarge`; any error pickling raises."""
        out, buffers = self._out, self._buffers
        self._pickle(message)
        if out.tell() > IN_BAND:  # long: bytes and bytearrays in it go out of band too
            marked, found = _marked(message)
            if found:
                self._pickle(marked)
        if not buffers:
            return out.getvalue()
        try:
            return pickle.dumps(("blobs", self._write(buffers, 0, self.args_end), out.getvalue()))
        finally:
            buffers.clear()

    def _pickle(self, message: Any) -> None:
        out = self._out
        out.seek(0)
        out.truncate()
        self._buffers.clear()
        self._pickler.clear_memo()
        try:
            self._pickler.dump(message)
        finally:
            self._pickler.clear_memo()  # no reference to the caller's objects kept

    def _write(self, buffers: list[Any], start: int, end: int) -> list[tuple[int, int]]:
        """``buffers`` written from ``start``; each one's (offset, size)
        (raises :class:`BlobsTooLarge` past ``end``)."""
        sizes = [memoryview(b).nbytes for b in buffers]
        offsets, last = _layout(sizes, start)
        if last > end:
            raise BlobsTooLarge(
                f"The call's binary values are {sum(sizes)} bytes, over the {end - start}-byte "
                "room for them (server.max_blob_bytes for arguments, max_result_bytes for a "
                "result). Send less, or raise the limit."
            )
        assert self._map is not None
        for buffer, size, offset in zip(buffers, sizes, offsets, strict=True):
            with memoryview(buffer) as view:
                self._map[offset : offset + size] = view.cast("B") if view.ndim != 1 else view
        return list(zip(offsets, sizes, strict=True))

    def copy(self, offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset`` of the results' area (checked by :func:`place`)."""
        assert self._map is not None
        return self._map[offset : offset + length]

    # -- worker: requests in, results out -----------------------------------------

    def loads(self, raw: tuple[Any, ...]) -> tuple[Any, ...]:
        """A request whose binary values wait in the arguments' area."""
        _, table, payload = raw
        assert self._map is not None
        views = [memoryview(self._map)[offset : offset + size] for offset, size in table]
        return tuple(pickle.loads(payload, buffers=views))

    def write_result(self, blobs: list[tuple[Any, ...]]) -> list[list[Any]]:
        """The outcome header's references to ``blobs`` (path, view, kind,
        dtype, shape), written to the results' area; raises :class:`BlobsTooLarge`."""
        table = self._write([b[1] for b in blobs], self.args_end, self.size)
        return _refs(blobs, [offset for offset, _ in table])


class Joined:
    """Binary values one after another in one bytes object, each at an
    aligned offset: how a Ray actor's answer carries them (no shared memory
    between nodes). Read by :func:`place` as a segment's results' area."""

    args_end = 0

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.size = len(data)

    @classmethod
    def of(cls, blobs: list[tuple[Any, ...]], max_bytes: int) -> tuple[Joined, list[list[Any]]]:
        """``blobs`` (path, view, kind, dtype, shape) joined, and their
        references; raises :class:`BlobsTooLarge` past ``max_bytes``."""
        offsets, end = _layout([b[1].nbytes for b in blobs], 0)
        if end > max_bytes:
            raise BlobsTooLarge(
                f"The result's binary values are over {max_bytes} bytes (max_result_bytes). "
                "Return less, or raise the cap."
            )
        joined = bytearray(end)
        for (_, view, *_), offset in zip(blobs, offsets, strict=True):
            joined[offset : offset + view.nbytes] = view
        return cls(bytes(joined)), _refs(blobs, offsets)

    def copy(self, offset: int, length: int) -> bytes:
        return self.data[offset : offset + length]


def encode_result(value: Any) -> tuple[str, list[tuple[Any, ...]]]:
    """``value`` as JSON with ``null`` for each binary value, and those
    values with their paths, in the order the JSON holds them. Raises
    TypeError for a value that is neither JSON nor binary."""
    found: list[tuple[memoryview, str, str, tuple[int, ...]]] = []

    def default(obj: Any) -> None:
        value = buffer_of(obj)
        if value is None:
            raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")
        found.append(value)

    text = json.JSONEncoder(
        ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=default
    ).encode(value)
    paths: list[list[Any]] = []
    if found:
        _paths(value, [], paths)
    return text, [(path, *info) for path, info in zip(paths, found, strict=True)]


def _paths(value: Any, path: list[Any], into: list[list[Any]]) -> None:
    if isinstance(value, str | int | float) or value is None:
        return
    if isinstance(value, dict):
        for key, item in value.items():
            _paths(item, [*path, key if isinstance(key, str) else _json_key(key)], into)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _paths(item, [*path, index], into)
    elif buffer_of(value) is not None:
        into.append(path)


def _json_key(key: object) -> str:
    """A dict key as the JSON encoder writes it."""
    if key is True or key is False or key is None:
        return {True: "true", False: "false", None: "null"}[key]
    return float.__repr__(key) if isinstance(key, float) else str(key)


def place(result: Any, refs: object, segment: Segment | Joined, max_bytes: int) -> Any:
    """``result`` with the binary values ``refs`` name copied out of
    ``segment`` into their places; raises ValueError saying which rule a
    reference breaks (the caller's protocol violation)."""
    if not isinstance(refs, list) or len(refs) > MAX_BLOBS:
        raise ValueError(f"'blobs' is not a list of at most {MAX_BLOBS} references")
    checked = sorted((_checked(ref, segment) for ref in refs), key=lambda ref: ref[1])
    end, total = segment.args_end, 0
    for _, offset, length, *_ in checked:
        if offset < end:
            raise ValueError(f"blob at {offset} overlaps another, or the arguments' area")
        end, total = offset + length, total + length
    if total > max_bytes:
        raise ValueError(f"blobs of {total} bytes, over max_result_bytes ({max_bytes})")
    for path, offset, length, kind, dtype, shape in checked:
        data = segment.copy(offset, length)
        value = data if kind == BYTES else Blob(data, dtype, shape)
        result = _put(result, path, value)
    return result


def _checked(ref: object, segment: Segment | Joined) -> tuple[Any, ...]:
    if not isinstance(ref, list) or len(ref) != 6:
        raise ValueError("a blob reference is not [path, offset, length, kind, dtype, shape]")
    path, offset, length, kind, dtype, shape = ref
    if not isinstance(path, list) or len(path) > 128:
        raise ValueError("a blob's path is not a list of at most 128 keys")
    if any(type(step) is not str and type(step) is not int for step in path):
        raise ValueError("a blob's path holds something other than keys and indexes")
    if type(offset) is not int or type(length) is not int or offset < 0 or length < 0:
        raise ValueError("a blob's offset or length is not a whole number")
    if offset + length > segment.size:
        raise ValueError(f"blob at {offset} of {length} bytes ends past the segment")
    if kind not in (BYTES, "array"):
        raise ValueError(f"a blob's kind is not 'bytes' or 'array': {str(kind)[:20]!r}")
    size = itemsize(dtype)
    if size is None:
        raise ValueError(f"a blob's dtype is not a plain numeric type: {str(dtype)[:20]!r}")
    if not isinstance(shape, list) or len(shape) > blob.MAX_DIMENSIONS:
        raise ValueError("a blob's shape is not a list of sizes")
    if any(type(n) is not int or n < 0 for n in shape) or math.prod(shape) * size != length:
        raise ValueError(f"a blob's shape {shape[:8]} of {dtype} is not its {length} bytes")
    return path, offset, length, kind, dtype, tuple(shape)


def _put(result: Any, path: list[Any], value: Any) -> Any:
    if not path:
        if result is not None:
            raise ValueError("a blob's path names a value that is not null")
        return value
    parent = result
    for step in path[:-1]:
        parent = _step(parent, step)
    last = path[-1]
    if _step(parent, last) is not None:
        raise ValueError("a blob's path names a value that is not null")
    parent[last] = value
    return result


def _step(parent: Any, step: Any) -> Any:
    if isinstance(parent, dict) and type(step) is str and step in parent:
        return parent[step]
    if isinstance(parent, list) and type(step) is int and 0 <= step < len(parent):
        return parent[step]
    raise ValueError("a blob's path leads nowhere in the result")
