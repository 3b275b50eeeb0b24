"""The zygote: a clean process that forks plugin workers on request.

The host never forks (a process that touched CUDA or NVML must not, and
``multiprocessing``'s forkserver re-imports ``__main__`` in every child). It
starts one zygote with ``subprocess``; the zygote imports the worker code
once, then forks a worker per request in about a millisecond. The three file
descriptors a worker needs travel over a Unix socket (``SCM_RIGHTS``). The
zygote reaps its children and reports each exit status, which the host, not
being their parent, could not read itself. It exits when the host's end of
the socket closes, and its children die with it (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["Zygote"]

log = logging.getLogger("plugwarden.zygote")

_BOOT = (
    "import sys, json; sys.path[:0] = json.loads(sys.argv[2]); "
    "from plugwarden.core.zygote import main; main(int(sys.argv[1]))"
)
_MAX_MESSAGE = 65536


class Zygote:
    """The host's handle on its zygote. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._socket: socket.socket | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._next_id = 0
        self._pending: dict[int, list[Any]] = {}
        self._forked = threading.Condition()
        self._exit_listeners: dict[int, Callable[[int | None], None]] = {}
        self._exits: dict[int, int | None] = {}
        self._shut = False
        self._reader: threading.Thread | None = None

    def _ensure_running(self) -> socket.socket:
        with self._lock:
            if self._shut:
                raise OSError("the host is closing: no new workers")
            if self._socket is not None and self._process and self._process.poll() is None:
                return self._socket
            host_end, zygote_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            self._process = subprocess.Popen(
                [sys.executable, "-c", _BOOT, str(zygote_end.fileno()), json.dumps(sys.path)],
                pass_fds=(zygote_end.fileno(),),
                stdin=subprocess.DEVNULL,
            )
            zygote_end.close()
            self._socket = host_end
            self._reader = threading.Thread(
                target=self._read, args=(host_end,), name="plugwarden-zygote", daemon=True
            )
            self._reader.start()
            return host_end

    def spawn(
        self,
        fds: list[int],
        label: str,
        on_exit: Callable[[int | None], None],
        timeout_s: float = 30.0,
    ) -> int:
        """Fork a worker holding ``fds`` (control, lifeline, output); returns
        its pid. ``on_exit(code)`` is called once it has exited (negative:
        killed by that signal; None: its exit status could not be known)."""
        sock = self._ensure_running()
        with self._forked:
            self._next_id += 1
            request_id = self._next_id
            self._pending[request_id] = []
        message = json.dumps({"op": "fork", "id": request_id, "label": label}).encode()
        with self._send_lock:
            socket.send_fds(sock, [message], fds)
        with self._forked:
            got = self._forked.wait_for(lambda: self._pending[request_id], timeout_s)
            answer = self._pending.pop(request_id)
            if not got or answer[0] is None:
                raise OSError(f"the zygote did not fork a worker for {label}")
            pid: int = answer[0]
            already_exited = pid in self._exits
            code = self._exits.pop(pid, None)
            if not already_exited:
                self._exit_listeners[pid] = on_exit
        if already_exited:
            on_exit(code)  # died before we even heard of it
        return pid

    def _read(self, sock: socket.socket) -> None:
        while True:
            try:
                data = sock.recv(_MAX_MESSAGE)
            except OSError:
                data = b""
            if not data:
                self._orphan_all(sock)
                return
            message = json.loads(data)
            if message["op"] == "forked":
                with self._forked:
                    if message["id"] in self._pending:
                        self._pending[message["id"]].append(message.get("pid"))
                    self._forked.notify_all()
            elif message["op"] == "exit":
                self._report_exit(message["pid"], message["code"])

    def _report_exit(self, pid: int, code: int | None) -> None:
        with self._forked:
            listener = self._exit_listeners.pop(pid, None)
            if listener is None:
                self._exits[pid] = code
                return
        listener(code)

    def _orphan_all(self, sock: socket.socket) -> None:
        """The zygote is gone: its workers died with it (PDEATHSIG)."""
        with self._forked:
            listeners = list(self._exit_listeners.values())
            self._exit_listeners.clear()
            for answer in self._pending.values():
                answer.append(None)
            self._forked.notify_all()
        with self._lock:
            if self._socket is sock:
                self._socket = None
        for listener in listeners:
            listener(None)

    def close(self) -> None:
        with self._lock:
            self._shut = True
            sock, process, reader = self._socket, self._process, self._reader
            self._socket = self._process = self._reader = None
        if sock is not None:
            # shutdown, not just close: our reader thread is blocked in recv
            # on this socket, and only shutdown makes the zygote see EOF now.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        if process is not None:
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if reader is not None:
            reader.join()


# -- the zygote process ---------------------------------------------------------


def main(fd: int) -> None:
    """Entry point of the zygote process."""
    from plugwarden.core import worker  # the import this process exists to do once

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the host decides when to stop
    sock = socket.socket(fileno=fd)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ)
    selector.register(wake_r, selectors.EVENT_READ)
    while True:
        for key, _ in selector.select():
            if key.fileobj is sock:
                _serve_request(sock, wake_r, wake_w, worker.serve)
            else:
                os.read(wake_r, 4096)
                _reap(sock)


def _serve_request(sock: socket.socket, wake_r: int, wake_w: int, serve: Any) -> None:
    try:
        data, fds, _, _ = socket.recv_fds(sock, _MAX_MESSAGE, 8)
    except OSError:
        data, fds = b"", []
    if not data:
        os._exit(0)  # the host is gone; workers follow through PDEATHSIG
    request = json.loads(data)
    pid = os.fork()
    if pid == 0:
        try:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            for unused in (sock.fileno(), wake_r, wake_w):
                os.close(unused)
            serve(*fds, label=request.get("label", "?"))
        finally:
            os._exit(70)
    with contextlib.suppress(OSError):
        os.setpgid(pid, pid)  # also done by the child; whichever runs first
    for passed in fds:
        os.close(passed)
    sock.send(json.dumps({"op": "forked", "id": request["id"], "pid": pid}).encode())
    _reap(sock)


def _reap(sock: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        code = os.waitstatus_to_exitcode(status)
        sock.send(json.dumps({"op": "exit", "pid": pid, "code": code}).encode())
