"""The resident memory of a process tree, read cheaply and often.

The first ``KEPT`` processes of the tree (the worker, usually all of it)
keep ``/proc/PID/statm`` open, so a reading is one ``pread`` each instead of
an open, a read and a close (each a system call that hands the host's GIL
to another thread and back: at a hundred workers the host's memory sweep's
hand-offs slowed the HTTP event loop measurably). The others are opened at
each reading: a plugin that starts 500 children must not hold 500 of the
host's descriptors. The tree itself is re-read at most every
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
KEPT = 8  # statm files kept open per tree


def statm_resident_bytes(fd: int) -> int:
    """The resident bytes in an open ``/proc/PID/statm`` (one ``pread``)."""
    return int(os.pread(fd, 64, 0).split()[1]) * PAGE


class TreeMemory:
    """Thread-safe; :meth:`close` closes every descriptor it holds."""

    def __init__(self, root: int, refresh_s: float = 0.5, *, include_root: bool = True) -> None:
        self._root = root
        self._include_root = include_root  # False: only what is below it (a keeper's tree)
        self._refresh_s = refresh_s
        self._fds: dict[int, int] = {}
        self._others: set[int] = set()  # the tree's pids past KEPT: opened at each reading
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
            for pid in list(self._others):
                try:
                    fd = os.open(f"/proc/{pid}/statm", os.O_RDONLY | os.O_CLOEXEC)
                except OSError:
                    self._others.discard(pid)
                    continue
                try:
                    total += statm_resident_bytes(fd)
                except (OSError, ValueError, IndexError):
                    self._others.discard(pid)
                finally:
                    os.close(fd)
            return total

    def tasks(self) -> int:
        """Threads of every process of the tree, as last refreshed (a task
        guard's count: each process has at least one)."""
        with self._lock:
            pids = [*self._fds, *self._others]
        total = 0
        for pid in pids:
            try:
                total += len(os.listdir(f"/proc/{pid}/task"))
            except OSError:
                continue  # it exited
        return total

    def shared_bytes(
        self,
        prefixes: tuple[str, ...] = ("/memfd:", "/dev/shm/"),
        skip: tuple[int, int] | None = None,
    ) -> int:
        """Bytes of the shared memory files (memfd, ``/dev/shm``) the tree's
        processes hold open, each file counted once: written, never mapped,
        they are in no process's resident set. ``skip``: the (device, inode)
        of one not to count."""
        with self._lock:
            pids = [*self._fds, *self._others]
        seen: dict[tuple[int, int], int] = {}
        for pid in pids:
            try:
                fds = os.listdir(f"/proc/{pid}/fd")
            except OSError:
                continue
            for fd in fds:
                path = f"/proc/{pid}/fd/{fd}"
                try:
                    if not os.readlink(path).startswith(prefixes):
                        continue
                    stats = os.stat(path)
                except OSError:
                    continue
                seen[(stats.st_dev, stats.st_ino)] = stats.st_blocks * 512
        if skip is not None:
            seen.pop(skip, None)
        return sum(seen.values())

    def _refresh(self) -> None:
        pids = set(containment.tree(self._root))
        if self._include_root:
            pids.add(self._root)
        for pid in set(self._fds) - pids:
            self._drop(pid)
        self._others = set()
        for pid in sorted(pids - set(self._fds)):  # the oldest first: the worker's own
            if len(self._fds) >= KEPT:
                self._others.add(pid)
                continue
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
            self._others = set()
            for pid in list(self._fds):
                self._drop(pid)
