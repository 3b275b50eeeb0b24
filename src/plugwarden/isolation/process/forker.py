"""The zygote process itself: it forks workers on the host's request.

Started by :class:`~plugwarden.isolation.process.zygote.Zygote`; it imports the worker
code once, then serves fork requests arriving on a Unix socket with the
worker's three file descriptors. Running as root, the zygote forks each
worker straight into a PID namespace of its own (it unshares one before
each fork): the worker is PID 1 there, the kernel kills what it leaves
behind, and the zygote reads its exit status itself. Otherwise each worker
gets a *keeper*: a small parent that puts it in a PID namespace of its own
where the kernel allows (:mod:`plugwarden.isolation.process.containment`; an
unprivileged one needs a user namespace, which the zygote cannot enter
once per worker), tells the zygote the worker's pid, waits for it, kills
whatever it left behind, and exits with the worker's own status, which the
zygote reports to the host. Without a keeper a worker starts ~2 ms sooner
and its exit is reported ~1 ms sooner (start, crash recovery; README, "Benchmarks").
The zygote is a subreaper: a stray it adopts is killed. It exits when the
host's end of the socket closes; keepers and workers die with their
parents (``PR_SET_PDEATHSIG``).

Every ``SWEEP_S`` the zygote also reads each worker tree's memory: it kills
a tree past its limit (reported with the exit, as ``memory_peak``) and
tells the host the figures that changed. The sweep runs here, between fork
requests, rather than on a thread of the host, where its ~1000 /proc reads
a second would each hand the host's GIL to and from the HTTP event loop.
A call's own waiter still watches its worker during the call.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import selectors
import signal
import socket
import time
from dataclasses import dataclass
from typing import Any

from plugwarden.isolation.process import containment
from plugwarden.isolation.process.treememory import TreeMemory
from plugwarden.isolation.process.zygote import MAX_MESSAGE

__all__ = ["SWEEP_S", "main"]

SWEEP_S = 0.25  # between calls, each worker tree's memory is read this often
_REPORT_CHUNK = 1000  # memory figures per message (each well under MAX_MESSAGE)


@dataclass
class _Watched:
    """A worker whose tree's memory the zygote reads."""

    memory: TreeMemory
    limit: int  # bytes; 0: none
    reported: int = -1  # the figure last sent to the host
    killed_at: int | None = None  # the figure it was killed at, past its limit


def main(fd: int, options: str = "{}") -> None:
    """Entry point of the zygote process. ``options``: JSON of what tests
    hand it apart from the environment (a fault plan file, a forced
    containment level)."""
    from plugwarden.isolation import injection
    from plugwarden.isolation.process import worker  # the import this process exists to do once

    given = json.loads(options)
    injection.configure(given.get("faults"))
    containment.force(given.get("containment"))
    worker.warm()

    # The host decides when to stop: a Ctrl-C, or a SIGTERM to the server's
    # whole process group (timeout, job control, kill -- -PGID), drains the
    # host, which then closes this zygote. Its children set their own.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    # No PR_SET_PDEATHSIG here: it fires when the host *thread* that started
    # the zygote ends. The zygote exits on EOF of the host's socket instead.
    containment.set_subreaper()
    _Forker(socket.socket(fileno=fd), worker.serve).run()


class _Forker:
    """The zygote's loop: fork requests, keepers telling their worker's pid,
    exits to reap, memory to sweep. A keeper is not waited for: the next
    request is forked while earlier keepers still set their worker up, so
    fifty plugins starting at once do not queue behind each other's
    namespace set-up."""

    def __init__(self, sock: socket.socket, serve: Any) -> None:
        self.sock = sock
        self.serve = serve
        self.wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self.selector = selectors.DefaultSelector()
        self.selector.register(sock, selectors.EVENT_READ)
        self.selector.register(self.wake_r, selectors.EVENT_READ)
        self.inherited = [self.wake_r, wake_w]  # what a keeper closes
        self.keepers: dict[int, int | None] = {}  # keeper pid -> worker pid, once told
        self.telling: dict[int, tuple[dict[str, Any], int]] = {}  # told fd -> request, keeper
        self.watched: dict[int, _Watched] = {}  # worker pid -> its memory
        # Root: each worker forked straight into a namespace of its own.
        self.direct = containment.may_unshare_pid_namespace()

    def run(self) -> None:
        next_sweep = time.monotonic() + SWEEP_S
        while True:
            for key, _ in self.selector.select(max(0.0, next_sweep - time.monotonic())):
                if key.fileobj is self.sock:
                    self._fork()
                elif key.fileobj == self.wake_r:
                    os.read(self.wake_r, 4096)
                    self._reap()
                elif key.fd in self.telling:  # not heard already by _reap this round
                    self._told(key.fd)
            if time.monotonic() >= next_sweep:
                self._sweep()
                next_sweep = time.monotonic() + SWEEP_S

    def _fork(self) -> None:
        try:
            data, fds, _, _ = socket.recv_fds(self.sock, MAX_MESSAGE, 8)
        except OSError:
            data, fds = b"", []
        if not data:
            os._exit(0)  # the host is gone; keepers and workers follow through PDEATHSIG
        request = json.loads(data)
        if self.direct:
            if containment.unshare_pid_namespace():
                self._fork_worker(request, fds)
                return
            self.direct = False  # refused (a seccomp filter...): keepers from now on
        told_r, told_w = os.pipe()
        keeper = os.fork()
        if keeper == 0:
            try:
                os.close(told_r)
                self._leave_zygote()
                _keep(fds, told_w, request.get("label", "?"), request.get("env"), self.serve)
            finally:
                os._exit(70)
        os.close(told_w)
        for passed in fds:
            os.close(passed)
        self.keepers[keeper] = None  # not a stray: its worker's pid is on the way
        self.telling[told_r] = (request, keeper)
        self.selector.register(told_r, selectors.EVENT_READ)

    def _leave_zygote(self) -> None:
        """In a child: nothing of the zygote's own reaches the worker (its
        socket, selector, pipes, the keepers' pipes, /proc files)."""
        signal.set_wakeup_fd(-1)  # before its pipe closes: a signal must not write there
        for unused in (self.sock.fileno(), self.selector.fileno(), *self.inherited):
            os.close(unused)
        for unused in self.telling:
            os.close(unused)
        for entry in self.watched.values():
            entry.memory.close()

    def _fork_worker(self, request: dict[str, Any], fds: list[int]) -> None:
        """The worker itself, PID 1 of the namespace just unshared: no keeper."""
        worker = os.fork()
        if worker == 0:
            try:
                self._leave_zygote()
                for sig in (signal.SIGCHLD, signal.SIGINT):
                    signal.signal(sig, signal.SIG_DFL)
                self.serve(*fds, label=request.get("label", "?"), env=request.get("env"))
            finally:
                os._exit(70)
        for passed in fds:
            os.close(passed)
        self.keepers[worker] = worker  # its own keeper: reaped and reported as one
        self._watch(worker, request)
        reply = {
            "op": "forked",
            "id": request["id"],
            "pid": worker,
            "inner": 1,
            "level": "pid-namespace",
        }
        self.sock.send(json.dumps(reply).encode())

    def _watch(self, worker: int, request: dict[str, Any]) -> None:
        limit = request.get("limit")
        self.watched[worker] = _Watched(TreeMemory(worker), limit if isinstance(limit, int) else 0)

    def _told(self, told_r: int) -> None:
        """A keeper wrote its worker's pid (it writes once, then closes)."""
        request, keeper = self.telling.pop(told_r)
        self.selector.unregister(told_r)
        with os.fdopen(told_r, "rb") as told:
            answer = told.read()
        reply: dict[str, Any] = {"op": "forked", "id": request["id"], "pid": None}
        with contextlib.suppress(ValueError):
            reply |= json.loads(answer)
            if keeper in self.keepers:  # not reaped already
                self.keepers[keeper] = reply["pid"]
            self._watch(reply["pid"], request)
        self.sock.send(json.dumps(reply).encode())

    def _reap(self) -> None:
        for child in containment.children(os.getpid()):
            if child not in self.keepers:
                # A stray adopted as subreaper: the process it belonged to is gone.
                containment.kill_descendants(child)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGKILL)
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid not in self.keepers:
                continue  # a stray, killed above
            for told_r, (_, keeper) in list(self.telling.items()):
                if keeper == pid:  # it told, then exited: hear it first
                    self._told(told_r)
            worker = self.keepers.pop(pid)
            if worker is None:
                continue  # it died before forking a worker: the host was told so
            code = os.waitstatus_to_exitcode(status)
            report: dict[str, Any] = {"op": "exit", "pid": worker, "code": code}
            entry = self.watched.pop(worker, None)
            if entry is not None:
                entry.memory.close()
                report["memory_peak"] = entry.killed_at
            self.sock.send(json.dumps(report).encode())

    def _sweep(self) -> None:
        """Read every watched tree's memory, kill those past their limit, and
        send the host the figures that changed."""
        changed: dict[str, int] = {}
        for pid, entry in self.watched.items():
            if entry.killed_at is not None:
                continue
            used = entry.memory.read()
            if entry.limit and used > entry.limit:
                entry.killed_at = used  # the exit report says so: the host names the guard
                containment.kill_group(pid)  # a keeper, or the namespace, takes what left it
            if used != entry.reported:
                entry.reported = changed[str(pid)] = used
        figures = list(changed.items())
        for start in range(0, len(figures), _REPORT_CHUNK):
            chunk = dict(figures[start : start + _REPORT_CHUNK])
            self.sock.send(json.dumps({"op": "memory", "rss": chunk}).encode())


def _keep(fds: list[int], told: int, label: str, env: dict[str, str] | None, serve: Any) -> None:
    """The keeper: contain the worker, report it, outlive it by a moment."""
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    # SIGINT and SIGTERM stay ignored, as in the zygote: a signal to the
    # server's whole process group is the host's to act on (it drains). The
    # zygote gone (the host is): end the worker and all it left, then go.
    signal.signal(signal.SIGHUP, lambda *_: _end_all())
    containment.set_death_signal(signal.SIGHUP)
    containment.set_subreaper()
    level = "pid-namespace" if containment.enter_pid_namespace() else "subreaper"
    worker = os.fork()
    if worker == 0:
        os.close(told)
        for sig in (signal.SIGINT, signal.SIGHUP):  # not the keeper's (serve sets SIGTERM's)
            signal.signal(sig, signal.SIG_DFL)
        serve(*fds, label=label, env=env)
    for passed in fds:
        os.close(passed)
    inner = 1 if level == "pid-namespace" else worker
    os.write(told, json.dumps({"pid": worker, "inner": inner, "level": level}).encode())
    os.close(told)
    while True:
        try:
            _, status = os.waitpid(worker, 0)
            break
        except InterruptedError:
            continue
    containment.kill_descendants(os.getpid())
    if os.WIFSIGNALED(status):
        _die_like(os.WTERMSIG(status))
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 70)


def _end_all() -> None:
    containment.kill_descendants(os.getpid())
    os._exit(0)


def _die_like(sig: int) -> None:
    """End with ``sig``, as the worker did, so the host reads the same fate."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    with contextlib.suppress(OSError, ValueError):
        signal.signal(sig, signal.SIG_DFL)
    os.kill(os.getpid(), sig)
    os._exit(128 + sig)  # a signal that does not kill (SIGCHLD...)
