"""The resident memory of a process tree, read cheaply and often.

Each process of the tree keeps ``/proc/PID/statm`` open, so a reading is
one ``pread`` per process instead of an open, a read and a close (each a
system call that hands the host's GIL to another thread and back: at a
hundred workers the host's memory sweep's hand-offs slowed the HTTP event loop
measurably). The tree itself is re-read at most every
``refresh_s``. A descriptor of a process that has exited reads ESRCH, never
another process's memory, so a reused pid is never counted.
"""

from __future__ import annotations

import os
import threading
import time

from plugwarden.isolation.process import containment

__all__ = ["TreeMemory", "statm_resident_bytes"]

PAGE = os.sysconf("SC_PAGE_SIZE")


def statm_resident_bytes(fd: int) -> int:
    """The resident bytes in an open ``/proc/PID/statm`` (one ``pread``)."""
    return int(os.pread(fd, 64, 0).split()[1]) * PAGE


class TreeMemory:
    """Thread-safe; :meth:`close` closes every descriptor it holds."""

    def __init__(self, root: int, refresh_s: float = 0.5) -> None:
        self._root = root
        self._refresh_s = refresh_s
        self._fds: dict[int, int] = {}
        self._checked = 0.0
        self._lock = threading.Lock()
        self._closed = False

    def read(self) -> int:
        """Resident bytes of the root and every process below it."""
        with self._lock:
            if self._closed:
                return 0
            now = time.monotonic()
            if now - self._checked > self._refresh_s:
                self._refresh()
                self._checked = now
            total = 0
            for pid, fd in list(self._fds.items()):
                try:
                    total += statm_resident_bytes(fd)
                except (OSError, ValueError, IndexError):
                    self._drop(pid)  # it exited
            return total

    def _refresh(self) -> None:
        pids = {self._root, *containment.tree(self._root)}
        for pid in set(self._fds) - pids:
            self._drop(pid)
        for pid in pids - set(self._fds):
            try:
                self._fds[pid] = os.open(f"/proc/{pid}/statm", os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue  # gone already

    def _drop(self, pid: int) -> None:
        fd = self._fds.pop(pid, None)
        if fd is not None:
            os.close(fd)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for pid in list(self._fds):
                self._drop(pid)
