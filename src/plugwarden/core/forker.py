"""The zygote process itself: it forks workers on the host's request.

Started by :class:`~plugwarden.core.zygote.Zygote`; it imports the worker
code once, then serves fork requests arriving on a Unix socket with the
worker's three file descriptors. Each worker gets a *keeper*: a small parent
that puts it in a PID namespace of its own where the kernel allows
(:mod:`plugwarden.core.containment`), tells the zygote the worker's pid,
waits for it, kills whatever it left behind, and exits with the worker's own
status, which the zygote reports to the host. The zygote is a subreaper:
a stray it adopts is killed. It exits when the host's end of the socket
closes; keepers and workers die with their parents (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import selectors
import signal
import socket
from typing import Any

from plugwarden.core import containment
from plugwarden.core.zygote import MAX_MESSAGE

__all__ = ["main"]


def main(fd: int) -> None:
    """Entry point of the zygote process."""
    from plugwarden.core import worker  # the import this process exists to do once

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the host decides when to stop
    # No PR_SET_PDEATHSIG here: it fires when the host *thread* that started
    # the zygote ends. The zygote exits on EOF of the host's socket instead.
    containment.set_subreaper()
    sock = socket.socket(fileno=fd)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ)
    selector.register(wake_r, selectors.EVENT_READ)
    keepers: dict[int, int] = {}  # keeper pid -> worker pid
    while True:
        for key, _ in selector.select():
            if key.fileobj is sock:
                _serve_request(sock, (wake_r, wake_w), worker.serve, keepers)
            else:
                os.read(wake_r, 4096)
                _reap(sock, keepers)


def _serve_request(
    sock: socket.socket, wake: tuple[int, int], serve: Any, keepers: dict[int, int]
) -> None:
    try:
        data, fds, _, _ = socket.recv_fds(sock, MAX_MESSAGE, 8)
    except OSError:
        data, fds = b"", []
    if not data:
        os._exit(0)  # the host is gone; keepers and workers follow through PDEATHSIG
    request = json.loads(data)
    told_r, told_w = os.pipe()
    keeper = os.fork()
    if keeper == 0:
        try:
            os.close(told_r)
            for unused in (sock.fileno(), *wake):
                os.close(unused)
            _keep(fds, told_w, request.get("label", "?"), serve)
        finally:
            os._exit(70)
    os.close(told_w)
    for passed in fds:
        os.close(passed)
    with os.fdopen(told_r, "rb") as told:
        answer = told.read()  # the keeper writes once it has forked the worker
    reply: dict[str, Any] = {"op": "forked", "id": request["id"], "pid": None}
    with contextlib.suppress(ValueError):
        reply |= json.loads(answer)
        keepers[keeper] = reply["pid"]
    sock.send(json.dumps(reply).encode())
    _reap(sock, keepers)


def _keep(fds: list[int], told: int, label: str, serve: Any) -> None:
    """The keeper: contain the worker, report it, outlive it by a moment."""
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGCHLD, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)
    # The zygote gone (the host is): end the worker and all it left, then go.
    signal.signal(signal.SIGTERM, lambda *_: _end_all())
    containment.set_death_signal(signal.SIGTERM)
    containment.set_subreaper()
    level = "pid-namespace" if containment.enter_pid_namespace() else "subreaper"
    worker = os.fork()
    if worker == 0:
        os.close(told)
        serve(*fds, label=label)
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


def _reap(sock: socket.socket, keepers: dict[int, int]) -> None:
    for child in containment.children(os.getpid()):
        if child not in keepers:
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
        worker = keepers.pop(pid, None)
        if worker is None:
            continue  # a stray, killed above
        code = os.waitstatus_to_exitcode(status)
        sock.send(json.dumps({"op": "exit", "pid": worker, "code": code}).encode())
