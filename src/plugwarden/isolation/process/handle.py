"""The host's handle on worker processes: one :class:`WorkerProcess` per
worker, and the memory of its whole tree.

A call's own waiter watches the worker's memory during the call and kills
its whole process group past the limit; between calls the zygote does
(:mod:`plugwarden.isolation.process.forker`), and reports the figures it reads. A worker
that dies for any reason (signal, exit code, the zygote's memory kill) is
reported by the zygote with its exit status.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

import psutil

from plugwarden.error_types import ErrorType
from plugwarden.exits import exit_reason
from plugwarden.isolation.fates import Fate, FateName, KillCause, KillCauseName
from plugwarden.isolation.process import containment
from plugwarden.isolation.process.frames import FrameReader, ResultMemory
from plugwarden.isolation.process.output import OutputPump, OutputTail
from plugwarden.isolation.process.segment import BlobsTooLarge, Segment, place
from plugwarden.isolation.process.spin import SPIN_S, AdaptiveSpin
from plugwarden.isolation.process.treememory import TreeMemory
from plugwarden.isolation.process.zygote import Zygote
from plugwarden.isolation.wire import Cancel, Encoded

__all__ = ["MEMORY_CHECK_S", "WorkerProcess"]

log = logging.getLogger("plugwarden.process")

_READABLE = select.POLLIN | select.POLLHUP | select.POLLERR
_LENGTH = struct.Struct("!i")  # a frame's head: multiprocessing.Connection's framing
_LONG = struct.Struct("!Q")  # after a head of -1: the length of a frame past...
_LONGEST = 0x7FFFFFFF  # ...the longest a head holds
CANCEL_SEND_S = 1.0  # how long a job's cancel may wait for room on the connection
MEMORY_CHECK_S = 0.005  # during a call, the worker tree's memory is read this often...


def memory_check_s(used: int, limit: int) -> float:
    """...near its limit; far below it, less often (a long call then costs
    less host CPU): no process can fault in half its limit in 20 ms."""
    if used * 4 < limit:
        return 4 * MEMORY_CHECK_S
    if used * 2 < limit:
        return 2 * MEMORY_CHECK_S
    return MEMORY_CHECK_S


class WorkerProcess:
    """One worker: its pid, its control connection, its output, its fate."""

    def __init__(
        self,
        label: str,
        limit_bytes: int,
        max_reply_bytes: int,
        zygote: Zygote,
        pump: OutputPump,
        on_death: Callable[[WorkerProcess], None],
        sandbox: dict[str, Any] | None = None,
        results: ResultMemory | None = None,
        segment: Segment | None = None,
    ) -> None:
        self.label = label
        self.limit_bytes = limit_bytes
        self.max_reply_bytes = max_reply_bytes
        self.died_with: str | None = None  # why, when it died with the zygote
        self.tail = OutputTail(label)
        self.stuck: str | None = None  # where its call was stuck when the host killed it
        self.exit_code: int | None = None
        self.exited = threading.Event()
        self.killed_by: KillCauseName | None = None
        self.peak_bytes = 0
        self.peak_tasks = 0  # the tasks counted when the task guard killed it
        self.gpu_bytes = 0  # its tree's GPU memory as NVML last showed it (a budget's watch)
        self.gpu_peak_bytes = 0  # ...and at most
        self.gpu_pids: dict[int, int] = {}  # ...by process (pid -> bytes)
        self.gpu_index: int | None = None  # the one GPU it sees, where it was placed
        self.gpu_fault: str | None = None  # the Xid that made the host kill it
        self.last_bytes = 0  # the tree's memory when last read (by a call or the zygote)
        self.busy = False  # a call (or load) is exchanging with it: the call reports its fate
        self.lost = False  # its loss was handled (once, by whoever saw it first)
        self._on_death = on_death
        # The fds are closed once, and only when no thread is inside send or
        # receive: a number freed under a reader would be reused at once by
        # the next worker's connection, and its replies read by the wrong call.
        self._fd_lock = threading.Lock()
        self._users = 0  # threads inside send or receive
        self._send_lock = threading.Lock()
        self._closed = False
        self._death_r, self._death_w = os.pipe()
        control, child_control = socket.socketpair()
        lifeline_r, self._lifeline_w = os.pipe()
        output_r, output_w = os.pipe()
        # Its shared memory for binary values (segment.py): the worker's own.
        self.segment = segment or Segment(0, max_reply_bytes)
        try:
            spawned = zygote.spawn(
                [child_control.fileno(), lifeline_r, output_w, self.segment.fd or -1],
                label,
                self._exited,
                limit_bytes=limit_bytes,
                on_memory=self._memory_read,
                sandbox=sandbox,
            )
        except BaseException:
            for fd in (self._death_r, self._death_w, self._lifeline_w, output_r):
                os.close(fd)
            control.close()
            self.segment.close()
            raise
        finally:
            self.segment.release_fd()  # the worker has its own
            child_control.close()
            os.close(lifeline_r)
            os.close(output_w)
        self.pid, self.inner_pid, self.containment = spawned.pid, spawned.inner, spawned.level
        self.requests = 0  # the id of the last request sent
        pump.add(output_r, self.tail)
        # The host's end, read and written here in multiprocessing.Connection's
        # framing (the worker's end is a Connection).
        self._control_fd = control.detach()
        os.set_blocking(self._control_fd, False)  # writes wait in poll, by a deadline
        self._room: select.poll | None = None  # made when a write first finds no room
        self._poller = select.poll()
        self._poller.register(self._control_fd, _READABLE)
        self._poller.register(self._death_r, _READABLE)
        # The worker and the plugin's orphans: every process below its init
        # (or keeper), which itself is not counted.
        tree = spawned.tree or self.pid
        self._memory = TreeMemory(tree, include_root=tree == self.pid)
        self._spin = AdaptiveSpin()  # whether to poll for a reply before sleeping
        self._frames = FrameReader(max_reply_bytes, results or ResultMemory(2**62))

    def _memory_read(self, used: int) -> None:
        """The zygote's sweep read ``used`` bytes."""
        self.last_bytes = used
        self.peak_bytes = max(self.peak_bytes, used)

    def _exited(self, code: int | None, why: str | None, tripped: tuple[str, int] | None) -> None:
        if tripped is not None and tripped[0] == "tasks":  # the zygote counted too many
            self.peak_tasks = tripped[1]
            if self.killed_by is None:
                self.killed_by = KillCause.TASKS
        elif tripped is not None:  # the zygote killed it past its memory limit
            self.peak_bytes = max(self.peak_bytes, tripped[1])
            if self.killed_by is None:
                self.killed_by = KillCause.MEMORY
        self.exit_code = code
        self.died_with = why
        self.exited.set()
        with self._fd_lock:
            if not self._closed:
                os.write(self._death_w, b"x")
        self._on_death(self)

    def next_request_id(self) -> int:
        """A new request's id: the worker's replies must carry it."""
        self.requests += 1
        return self.requests

    def send(self, message: Encoded, deadline: float) -> tuple[FateName, Any] | None:
        """Send ``message`` by ``deadline`` (monotonic); None when sent, else
        (UNSENDABLE, why) when it cannot be pickled (nothing was sent: the
        worker is untouched), (TIMEOUT, None) when the worker did not take
        it in time (it stopped reading: stopped, or a thread of the plugin
        holding its GIL), or (DIED, None)."""
        # A cancel may be sent from another thread: frames never interleave
        # (and the arguments' area of the segment holds one call's at a time).
        with self._send_lock:
            if not self._enter():
                return Fate.DIED, None
            try:
                try:
                    data = self.segment.dumps(message)
                except BlobsTooLarge as exc:
                    return Fate.UNSENDABLE, (ErrorType.PAYLOAD_TOO_LARGE, str(exc))
                # A caller's arguments may refuse to pickle in any way (a lambda,
                # a socket, a cycle too deep, a __reduce__ that raises).
                except Exception as exc:  # noqa: BLE001
                    return Fate.UNSENDABLE, (None, f"{type(exc).__name__}: {exc}")
                size = len(data)  # multiprocessing.Connection's framing, which the worker reads
                head = _LENGTH.pack(size)
                if size > _LONGEST:
                    head = _LENGTH.pack(-1) + _LONG.pack(size)
                return self._write(memoryview(b"".join((head, data))), deadline)
            finally:
                self._leave()

    def _enter(self) -> bool:
        """Hold the fds open for this thread; False once closed."""
        with self._fd_lock:
            if self._closed:
                return False
            self._users += 1
            return True

    def _leave(self) -> None:
        with self._fd_lock:
            self._users -= 1
            if self._closed and not self._users:
                self._release()

    def _write(self, frame: memoryview, deadline: float) -> tuple[FateName, Any] | None:
        """Write all of ``frame``, waiting for room at most until ``deadline``
        (the connection does not block: a blocking write to a worker that
        stopped reading would wait for ever)."""
        while True:
            try:
                written = 0 if self._closed else os.write(self._control_fd, frame)
            except BlockingIOError:
                written = 0
            except OSError:  # the worker's end is gone
                return Fate.DIED, None
            if self._closed:  # closed under us: a restart or close() racing this call
                return Fate.DIED, None
            frame = frame[written:]
            if not frame:
                return None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return Fate.TIMEOUT, None
            if self._room is None:
                self._room = select.poll()
                self._room.register(self._control_fd, select.POLLOUT)
                self._room.register(self._death_r, _READABLE)
            events = dict(self._room.poll(remaining * 1000))
            if self._death_r in events:
                return Fate.DIED, None

    def blobs(self, result: Any, refs: object, max_bytes: int) -> Any:
        """``result`` with the binary values its reply's ``refs`` name
        (:func:`~plugwarden.isolation.process.segment.place`); raises
        ValueError for a reference that breaks the rules, or a closed worker."""
        if not self._enter():
            raise ValueError("the worker was closed")
        try:
            return place(result, refs, self.segment, max_bytes)
        finally:
            self._leave()

    def send_cancel(self, request_id: int) -> None:
        """Ask the job running as request ``request_id`` to stop (no reply)."""
        self.send(Cancel.encode(request_id), time.monotonic() + CANCEL_SEND_S)

    def receive(self, deadline: float) -> tuple[FateName, Any]:
        """The next frame: (REPLY, its bytes), (TIMEOUT, None) once
        ``deadline`` (monotonic) passed, (DIED, None), (OVERSIZE, None) for a
        frame over the cap, or (VIOLATION, why) for a frame with no valid
        length (each a :class:`~plugwarden.isolation.wire.Fate`).

        The waiting thread enforces the call's limits itself: past a short
        spin it waits in slices of :func:`memory_check_s`, checking the worker
        tree's memory between them, and kills the worker past its limit (the
        death ends the wait). No other thread wakes for a call. Frames are
        read as their bytes arrive, never in a blocking read: a worker that
        sends part of a frame and stops still meets the deadline."""
        if not self._enter():
            return Fate.DIED, None
        try:
            return self._receive(deadline)
        finally:
            self._leave()

    def _receive(self, deadline: float) -> tuple[FateName, Any]:
        if self._frames.pending:  # a frame that came with the last one's bytes
            framed = self._frames.next()
            if framed is not None:
                return framed
        start = time.monotonic()
        spinning = self._spin.should_spin()
        spin_until = start + SPIN_S if spinning else start
        while True:
            now = time.monotonic()
            remaining = deadline - now
            if remaining <= 0:
                return Fate.TIMEOUT, None
            # Fast plugins answer within microseconds: poll without sleeping
            # first, sparing the thread a sleep and a wake-up (tens of us on a VM).
            polling = now < spin_until
            if polling:
                wait_ms = 0.0
            else:
                wait_ms = min(remaining, memory_check_s(self.last_bytes, self.limit_bytes)) * 1000
            events = dict(self._poller.poll(wait_ms))
            if spinning and (events or not polling):
                self._spin.caught(polling)  # the poll caught the reply, or it missed
                spinning = False
            if not events and not polling:
                self.over_memory()
            if self._control_fd in events:
                if self._closed or not self._frames.read(self._control_fd):
                    return Fate.DIED, None  # its end, or closed under us (a restart, close())
                framed = self._frames.next()
                if framed is not None:
                    return framed
            elif self._death_r in events:
                return Fate.DIED, None

    def resident_bytes(self) -> int:
        """Resident memory of the worker and every process it started."""
        total = self._memory.read()
        self.peak_bytes = max(self.peak_bytes, total)
        self.last_bytes = total
        return total

    def over_memory(self) -> bool:
        """Kill the worker if its tree is past its limit; whether it was."""
        if self.resident_bytes() <= self.limit_bytes:
            return False
        log.warning(
            "worker %s: %d bytes over its %d limit", self.label, self.peak_bytes, self.limit_bytes
        )
        self.kill(KillCause.MEMORY)
        return True

    def kill(self, why: KillCauseName) -> None:
        """SIGKILL the worker's process group and any child that left it."""
        if self.killed_by is None:
            self.killed_by = why
        if self.exited.is_set():
            return
        strays = []
        for pid in containment.tree(self.pid):
            with contextlib.suppress(psutil.Error):
                strays.append(psutil.Process(pid))
        containment.kill_group(self.pid)
        for stray in strays:
            with contextlib.suppress(psutil.Error):
                stray.kill()

    def close(self) -> None:
        """End the worker with everything it started, and wait for its exit
        report (so no zombie or stray is left behind)."""
        if self._closed:
            return
        if not self.exited.is_set():
            self.kill(KillCause.CLOSE)
            self.exited.wait(5.0)
        with self._fd_lock:
            if self._closed:
                return
            self._closed = True
            self._memory.close()
            if self._users:  # wake them; the last to leave closes the fds
                os.write(self._death_w, b"x")
            else:
                self._release()

    def _release(self) -> None:
        for fd in (self._control_fd, self._lifeline_w, self._death_r, self._death_w):
            os.close(fd)
        self.segment.close()

    def death_reason(self) -> str:
        reason = self.died_with or exit_reason(self.exit_code)
        last = self.tail.last_line()
        return f"{reason}. Last output: {last!r}" if last else reason
