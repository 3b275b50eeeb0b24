"""The zygote: a clean process that forks plugin workers on request.

The host never forks (a process that touched CUDA or NVML must not, and
``multiprocessing``'s forkserver re-imports ``__main__`` in every child). It
starts one zygote with ``subprocess``; the zygote imports the worker code
once, then forks a worker per request in about a millisecond. The three file
descriptors a worker needs travel over a Unix socket (``SCM_RIGHTS``). The
zygote reaps its children and reports each exit status, which the host, not
being their parent, could not read itself. It exits when the host's end of
the socket closes, and its children die with it (``PR_SET_PDEATHSIG``).
Between fork requests it also watches each worker tree's memory
(:mod:`plugwarden.isolation.process.forker`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any, NamedTuple

from plugwarden.exits import exit_reason
from plugwarden.isolation.injection import FAULTS_ENV
from plugwarden.isolation.process import containment
from plugwarden.plugin.environment import base_environment

__all__ = ["MAX_MESSAGE", "ExitListener", "MemoryListener", "Spawned", "Zygote"]

log = logging.getLogger("plugwarden.zygote")

_BOOT = (
    "import sys, json; sys.path[:0] = json.loads(sys.argv[2]); "
    "from plugwarden.isolation.process.forker import main; main(int(sys.argv[1]), sys.argv[3])"
)
MAX_MESSAGE = 65536  # one control message, either way (fork request, exit report)


# Called once a worker has exited: (exit code, None, memory) or, when the
# zygote itself died and the worker with it, (None, the reason naming the
# zygote, None). memory: the tree's bytes when the zygote killed it past its
# limit, else None.
# (exit code, why, the guard the zygote killed it for and the figure past it)
ExitListener = Callable[[int | None, str | None, tuple[str, int] | None], None]
# Called with the worker tree's resident bytes whenever the zygote's sweep
# reads a new figure.
MemoryListener = Callable[[int], None]


class Spawned(NamedTuple):
    pid: int  # as the host sees it
    inner: int  # as the worker sees itself (2 in a PID namespace of its own, under its init)
    level: str  # its containment level (see plugwarden.isolation.process.containment)
    tree: int  # whose descendants are the worker's (its init or keeper: orphans go there)


class Zygote:
    """The host's handle on a zygote. Thread-safe. ``python`` and ``path``:
    the interpreter and the import path it starts with (default: the
    host's; a plugin's own environment has its own, see
    :class:`~plugwarden.plugin.venv.PluginEnvironment`, and ``isolated``
    starts it without that environment's site-packages); ``preload``:
    modules it imports before it forks any worker (a manifest's ``preload``,
    when the operator allows it)."""

    def __init__(
        self,
        python: str | None = None,
        path: list[str] | None = None,
        preload: tuple[str, ...] = (),
        *,
        isolated: bool = False,
        sites: tuple[str, ...] = (),
    ) -> None:
        self.python = python or sys.executable
        self.path = list(sys.path if path is None else path)
        self.preload = preload
        # A plugin's own environment: no site-packages at boot, so none of its
        # code (a .pth file) runs here; its workers read them in their sandbox.
        self.isolated = isolated
        self.sites = sites  # read (with their .pth files) only to preload
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._socket: socket.socket | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._next_id = 0
        self._pending: dict[int, list[Any]] = {}
        self._forked = threading.Condition()
        self._exit_listeners: dict[int, ExitListener] = {}
        self._memory_listeners: dict[int, MemoryListener] = {}
        self._exits: dict[int, tuple[int | None, Any]] = {}
        self._shut = False
        self._reader: threading.Thread | None = None
        self.level = "unknown"  # the containment level of the last worker forked

    def _ensure_running(self) -> socket.socket:
        with self._lock:
            if self._shut:
                raise OSError("the host is closing: no new workers")
            if self._socket is not None and self._process and self._process.poll() is None:
                return self._socket
            host_end, zygote_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            # No secret of the host reaches the zygote, so none reaches a
            # worker (plugin.environment); a test's fault plan and forced
            # containment level are handed over apart from the environment.
            options = {
                "faults": os.environ.get(FAULTS_ENV, ""),
                "containment": os.environ.get(containment.FORCE_ENV, ""),
                "preload": list(self.preload),
                "sites": list(self.sites),
            }
            self._process = subprocess.Popen(
                [
                    self.python,
                    *(("-I", "-S") if self.isolated else ()),
                    "-c",
                    _BOOT,
                    str(zygote_end.fileno()),
                    json.dumps(self.path),
                    json.dumps(options),
                ],
                pass_fds=(zygote_end.fileno(),),
                stdin=subprocess.DEVNULL,
                env=base_environment(os.environ),
            )
            zygote_end.close()
            self._socket = host_end
            self._reader = threading.Thread(
                target=self._read, args=(host_end,), name="plugwarden-zygote", daemon=True
            )
            self._reader.start()
            return host_end

    def prestart(self) -> None:
        """Start the zygote process now instead of at the first spawn."""
        with contextlib.suppress(OSError):
            self._ensure_running()

    def spawn(
        self,
        fds: list[int],
        label: str,
        on_exit: ExitListener,
        timeout_s: float = 30.0,
        *,
        limit_bytes: int = 0,
        on_memory: MemoryListener | None = None,
        sandbox: dict[str, Any] | None = None,
    ) -> Spawned:
        """Fork a worker holding ``fds`` (control, lifeline, output).
        ``on_exit`` is called once it has exited (a negative code: killed by
        that signal); ``on_memory`` with its tree's memory as the zygote
        reads it, killing the tree past ``limit_bytes`` (0: no limit).
        ``sandbox``: the worker's confinement, its environment variables
        among it (:class:`~plugwarden.isolation.process.sandbox.Sandbox`)."""
        sock = self._ensure_running()
        with self._forked:
            self._next_id += 1
            request_id = self._next_id
            self._pending[request_id] = []
        request = {
            "op": "fork",
            "id": request_id,
            "label": label,
            "limit": limit_bytes,
            "env": (sandbox or {}).get("env", {}),
            "sandbox": sandbox,
        }
        message = json.dumps(request).encode()
        with self._send_lock:
            socket.send_fds(sock, [message], fds)
        with self._forked:
            got = self._forked.wait_for(lambda: self._pending[request_id], timeout_s)
            answer = self._pending.pop(request_id)
            refused = answer[0].get("error") if got else None
            if isinstance(refused, str):
                raise OSError(refused)
            if not got or not isinstance(answer[0].get("pid"), int):
                raise OSError(f"the zygote did not fork a worker for {label}")
            found = answer[0]
            tree = found.get("tree")
            spawned = Spawned(
                found["pid"], found["inner"], found["level"], tree if isinstance(tree, int) else 0
            )
            self.level = spawned.level
            exited = self._exits.pop(spawned.pid, None)
            if exited is None:
                self._exit_listeners[spawned.pid] = on_exit
                if on_memory is not None:
                    self._memory_listeners[spawned.pid] = on_memory
        if exited is not None:
            on_exit(exited[0], None, exited[1])  # died before we even heard of it
        return spawned

    def _read(self, sock: socket.socket) -> None:
        while True:
            try:
                data = sock.recv(MAX_MESSAGE)
            except OSError:
                data = b""
            if not data:
                self._orphan_all(sock)
                return
            try:
                self._dispatch(json.loads(data))
            # Every later fork answer and exit report comes through this
            # thread: a listener's bug is logged, never the end of it.
            except Exception:
                log.exception("a report from the zygote was not handled: %r", data[:200])

    def _dispatch(self, message: dict[str, Any]) -> None:
        if message["op"] == "forked":
            with self._forked:
                if message["id"] in self._pending:
                    self._pending[message["id"]].append(message)
                self._forked.notify_all()
        elif message["op"] == "memory":
            self._report_memory(message["rss"])
        elif message["op"] == "exit":
            tripped = message.get("tripped")
            self._report_exit(message["pid"], message["code"], tuple(tripped) if tripped else None)

    def _report_memory(self, figures: dict[str, int]) -> None:
        listeners = self._memory_listeners
        for pid, used in figures.items():
            listener = listeners.get(int(pid))
            if listener is not None:
                listener(used)

    def _report_exit(self, pid: int, code: int | None, tripped: Any) -> None:
        with self._forked:
            self._memory_listeners.pop(pid, None)
            listener = self._exit_listeners.pop(pid, None)
            if listener is None:
                self._exits[pid] = (code, tripped)
                return
        listener(code, None, tripped)

    def _orphan_all(self, sock: socket.socket) -> None:
        """The zygote is gone: its workers died with it (PDEATHSIG)."""
        with self._forked:
            listeners = list(self._exit_listeners.values())
            self._exit_listeners.clear()
            self._memory_listeners.clear()
            for answer in self._pending.values():
                answer.append({})
            self._forked.notify_all()
        with self._lock:
            process = self._process
            if self._socket is sock:
                self._socket = None
                sock.close()
        code = None
        if process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                code = process.wait(timeout=2)
        if not self._shut:
            log.warning("the zygote process died (%s)", exit_reason(code, "it"))
        zygote = exit_reason(code, "The zygote process (it forks the workers)")
        why = f"{zygote}; the worker died with it"
        for listener in listeners:
            listener(None, why, None)

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
