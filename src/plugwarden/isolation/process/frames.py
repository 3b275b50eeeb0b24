"""Reading a worker's replies, and the host's memory for long ones
(docs/guides/isolation.md#the-worker-boundary).

:class:`FrameReader` cuts the bytes of a worker's connection into frames
(multiprocessing.Connection's framing: a 4-byte big-endian length, then the
frame). A reply longer than :data:`LONG_FRAME` is read straight into a
buffer of its own size (no copy out of the inbox), taken from one host-wide
budget (``[server] result_memory_mb``): a result the host passes on, over
HTTP, holds its buffer until the answer is written, and gives its bytes
back to the budget when it is dropped. A reply that does not fit the budget
is read and dropped (its call answers Busy; the worker is fine).
"""

from __future__ import annotations

import os
import struct
import threading
import weakref
from typing import Any

from plugwarden.isolation.fates import Fate, FateName

__all__ = ["LONG_FRAME", "Frame", "FrameReader", "ResultMemory"]

LONG_FRAME = 1 << 20
_LENGTH = struct.Struct("!i")  # a frame's head: multiprocessing.Connection's framing
_CHUNK = 64 * 1024  # bytes asked of one read while a frame's length is unknown...
_MOST = 1024 * 1024  # ...and at most, for the rest of a long one (a socket holds less)


class Frame(bytearray):
    """A long reply's bytes (a bytearray that can be watched for its end)."""

    __slots__ = ("__weakref__",)


class ResultMemory:
    """The bytes of long replies the host holds at once, at most ``limit``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self._lock = threading.Lock()

    def frame(self, size: int) -> Frame | None:
        """A buffer of ``size`` bytes, or None when the budget has no room."""
        with self._lock:
            if self.held + size > self.limit:
                return None
            self.held += size
        try:
            frame = Frame(size)
        except MemoryError:
            self._give(size)
            return None
        weakref.finalize(frame, self._give, size)
        return frame

    def _give(self, size: int) -> None:
        with self._lock:
            self.held -= size


class FrameReader:
    """The frames of one connection, from what :meth:`read` takes off it."""

    def __init__(self, max_bytes: int, results: ResultMemory) -> None:
        self.max_bytes = max_bytes
        self._results = results
        self._inbox = bytearray()  # read from the connection, not yet a whole frame
        self._long: Frame | None = None  # a long frame being read into its own buffer
        self._filled = 0  # ...this much of it so far
        self._dropped = 0  # the size of a long frame the budget had no room for...
        self._dropping = 0  # ...and how much of it is still to be read and dropped

    @property
    def pending(self) -> bool:
        """Bytes of a next frame came with the last one's."""
        return bool(self._inbox)

    def read(self, fd: int) -> bool:
        """Take what ``fd`` has (it polled readable); False at its end."""
        inbox, long = self._inbox, self._long
        wanted = _CHUNK
        if long is None and not self._dropping and len(inbox) >= _LENGTH.size:
            missing = _LENGTH.size + _LENGTH.unpack_from(inbox)[0] - len(inbox)
            wanted = min(max(wanted, missing), _MOST)  # the rest of a frame of known length
        try:
            if long is not None:
                with memoryview(long) as view:
                    got = os.readv(fd, [view[self._filled :]])
                self._filled += got
                return got > 0
            chunk = os.read(fd, min(self._dropping, _MOST) or wanted)
        except BlockingIOError:  # polled readable, yet nothing there after all
            return True
        except OSError:
            return False
        if self._dropping:
            self._dropping -= len(chunk)
        else:
            inbox += chunk
        return bool(chunk)

    def next(self) -> tuple[FateName, Any] | None:
        """The first whole frame: (REPLY, its bytes), (OVERSIZE, None) past
        ``max_bytes``, (VIOLATION, why) for a length that is none, (SHED,
        its size) for a long one dropped; None while incomplete."""
        if self._long is not None:
            if self._filled < len(self._long):
                return None
            frame, self._long = self._long, None
            return Fate.REPLY, frame
        if self._dropped:
            if self._dropping:
                return None
            size, self._dropped = self._dropped, 0
            return Fate.SHED, size
        inbox = self._inbox
        if len(inbox) < _LENGTH.size:
            return None
        (size,) = _LENGTH.unpack_from(inbox)
        if size == -1 or size > self.max_bytes:  # -1: a length past 2 GiB follows
            return Fate.OVERSIZE, None
        if size < 0:
            return Fate.VIOLATION, f"a frame of length {size}"
        end = _LENGTH.size + size
        if len(inbox) < end:
            if size > LONG_FRAME:  # read the rest straight into a buffer of its own
                have = len(inbox) - _LENGTH.size
                long = self._results.frame(size)
                if long is None:
                    self._dropped, self._dropping = size, size - have
                else:
                    long[:have] = inbox[_LENGTH.size :]
                    self._long, self._filled = long, have
                del inbox[:]
            return None
        with memoryview(inbox) as view:
            whole = bytes(view[_LENGTH.size : end])
        del inbox[:end]
        return Fate.REPLY, whole
