"""The zygote process itself: it forks workers on the host's request.

Started by :class:`~plugwarden.isolation.process.zygote.Zygote`; it imports the worker
code once, then serves fork requests arriving on a Unix socket with the
worker's three file descriptors. Each worker runs under an *init*, PID 1 of
a PID namespace of its own: the init sets up the worker's mount namespace
and limits (:mod:`~plugwarden.isolation.process.sandbox`), forks the
worker, reaps the plugin's orphans, forwards signals, and writes how the
worker ended on a pipe before it exits (the kernel then kills whatever is
left in the namespace). Running as root, the zygote forks each init
straight into a new PID namespace (it unshares one before each fork).
Otherwise each worker gets a *keeper* too: a small parent that enters a
user and PID namespace where the kernel allows
(:mod:`plugwarden.isolation.process.containment`; the zygote cannot enter
one per worker), forks the init, tells the zygote the worker's pid, and
exits with the worker's own status; where no namespace can be had, the
keeper forks the worker itself and reaps its orphans. Without a keeper a
worker starts ~2 ms sooner and its exit is reported ~1 ms sooner (start,
crash recovery; docs/benchmarks.md).
The zygote is a subreaper: a stray it adopts is killed. It exits when the
host's end of the socket closes; keepers and workers die with their
parents (``PR_SET_PDEATHSIG``).

Every ``SWEEP_S`` the zygote also reads each worker tree's memory (resident,
plus the shared memory it holds and its private tmpfs mounts) and tasks
(threads plus processes, and a ``pids`` cgroup's refusals where it could
make one): it kills a tree past either limit (reported with the exit, as
``tripped``) and tells the host the memory figures that changed. The sweep runs here, between fork
requests, rather than on a thread of the host, where its ~1000 /proc reads
a second would each hand the host's GIL to and from the HTTP event loop.
A call's own waiter still watches its worker during the call.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import selectors
import signal
import site
import socket
import sys
import time
from dataclasses import dataclass
from typing import Any, NoReturn

from plugwarden.isolation.process import containment
from plugwarden.isolation.process.keeper import fate, keep, run_init, started
from plugwarden.isolation.process.sandbox import private_bytes
from plugwarden.isolation.process.taskgroup import TaskGroups
from plugwarden.isolation.process.treememory import TreeMemory
from plugwarden.isolation.process.zygote import MAX_MESSAGE

__all__ = ["SWEEP_S", "main"]

SWEEP_S = 0.25  # between calls, each worker tree's memory is read this often
_REPORT_CHUNK = 1000  # memory figures per message (each well under MAX_MESSAGE)


@dataclass
class _Watched:
    """A worker whose tree's memory and tasks the zygote reads."""

    memory: TreeMemory
    limit: int  # bytes; 0: none
    max_tasks: int  # threads plus processes; 0: none
    private: tuple[int, str] | None  # its init and tmp dir, where its tmpfs mounts are its own
    group: str | None  # its pids cgroup, where the zygote could make one
    reported: int = -1  # the figure last sent to the host
    tripped: tuple[str, int] | None = None  # the guard that killed it, and the figure past it
    # Its shared memory for binary values (segment.py), known by its inode: the
    # pages it touched are in its resident set already (a name proves nothing)
    segment: tuple[int, int] | None = None


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
    refusal = preload(given.get("preload") or [], given.get("sites") or [])

    # The host decides when to stop: a Ctrl-C, or a SIGTERM to the server's
    # whole process group (timeout, job control, kill -- -PGID), drains the
    # host, which then closes this zygote. Its children set their own.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    # No PR_SET_PDEATHSIG here: it fires when the host *thread* that started
    # the zygote ends. The zygote exits on EOF of the host's socket instead.
    containment.set_subreaper()
    _Forker(socket.socket(fileno=fd), worker.serve, refusal).run()


def preload(modules: list[str], sites: list[str]) -> str | None:
    """Import the manifest's ``preload`` modules (docs/guides/environments.md),
    so that every worker forked later has them; why not, or None. ``sites``:
    the plugin's own environment's site-packages, read first (the operator
    trusts its code here by allowing preload). A module that initialises
    CUDA is refused: a forked child cannot use a CUDA context it inherited."""
    for folder in sites if modules else ():
        site.addsitedir(folder)
    for name in modules:
        try:
            importlib.import_module(name)
        # A plugin's module: whatever it raises is the refusal's reason.
        except BaseException as exc:  # noqa: BLE001
            return f"preload of {name!r} failed: {type(exc).__name__}: {exc}"
        cuda = _cuda_in_use()
        if cuda:
            return (
                f"preloading {name!r} initialised CUDA ({cuda}): a worker forked from it cannot "
                "use a CUDA context it inherits. Remove it from preload, or move its CUDA use "
                "into init()."
            )
    return None


def _cuda_in_use() -> str | None:
    torch = sys.modules.get("torch")
    cuda = getattr(torch, "cuda", None)
    if cuda is not None and getattr(cuda, "is_initialized", lambda: False)():
        return "torch.cuda is initialised"
    for entry in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{entry}")
            if target.startswith("/dev/nvidia"):
                return f"it holds {target} open"
    return None


class _Forker:
    """The zygote's loop: fork requests, keepers telling their worker's pid,
    exits to reap, memory to sweep. A keeper is not waited for: the next
    request is forked while earlier keepers still set their worker up, so
    fifty plugins starting at once do not queue behind each other's
    namespace set-up."""

    def __init__(self, sock: socket.socket, serve: Any, refusal: str | None = None) -> None:
        self.sock = sock
        self.serve = serve
        self.refusal = refusal  # why this zygote forks no worker (a failed preload)
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
        self.hearing: dict[int, tuple[dict[str, Any], int]] = {}  # an init's fd -> request, init
        self.fates: dict[int, int] = {}  # init pid -> the fd it writes its worker's end to
        # Root: each worker forked straight into a namespace of its own.
        self.direct = containment.may_unshare_pid_namespace()
        self.groups = TaskGroups()

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
                elif key.fd in self.hearing:
                    self._heard(key.fd)
            if time.monotonic() >= next_sweep:
                self._sweep()
                next_sweep = time.monotonic() + SWEEP_S

    def _tell_host(self, message: dict[str, Any]) -> None:
        try:
            self.sock.send(json.dumps(message).encode())
        except OSError:  # a host killed at once (SIGKILL): no traceback, just go
            self._host_gone()

    def _host_gone(self) -> NoReturn:
        self.groups.close()
        os._exit(0)  # keepers and workers follow through PDEATHSIG

    def _fork(self) -> None:
        try:
            data, fds, _, _ = socket.recv_fds(self.sock, MAX_MESSAGE, 8)
        except OSError:
            data, fds = b"", []
        if not data:
            self._host_gone()
        request = json.loads(data)
        if len(fds) > 3:  # its segment: counted through its resident set, not twice
            with contextlib.suppress(OSError):
                found = os.fstat(fds[3])
                request["segment"] = [found.st_dev, found.st_ino]
        if self.refusal is not None:
            for passed in fds:
                os.close(passed)
            self._tell_host({"op": "forked", "id": request["id"], "pid": None,
                             "error": self.refusal})  # fmt: skip
            return
        plan = request.get("sandbox") or {}
        # One more task than the guard's: the worker's init (or keeper) is in it.
        request["cgroup"] = self.groups.make(f"w{request['id']}", plan.get("max_tasks", 0) + 1)
        if self.direct:
            if containment.unshare_pid_namespace():
                self._fork_init(request, fds)
                return
            self.direct = False  # refused (a seccomp filter...): keepers from now on
        told_r, told_w = os.pipe()
        keeper = os.fork()
        if keeper == 0:
            try:
                os.close(told_r)
                self._leave_zygote()
                keep(fds, told_w, request, self.serve)
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
        for unused in (*self.telling, *self.hearing, *self.fates.values()):
            os.close(unused)
        for entry in self.watched.values():
            entry.memory.close()

    def _fork_init(self, request: dict[str, Any], fds: list[int]) -> None:
        """The worker's init, PID 1 of the namespace just unshared (no
        keeper): it forks the worker and says so on a pipe, where it later
        writes how the worker ended."""
        heard_r, heard_w = os.pipe()
        init = os.fork()
        if init == 0:
            try:
                os.close(heard_r)
                self._leave_zygote()
                run_init(fds, heard_w, request, self.serve)
            finally:
                os._exit(70)
        os.close(heard_w)
        for passed in fds:
            os.close(passed)
        self.keepers[init] = None  # its worker's pid is on the way
        self.hearing[heard_r] = (request, init)
        self.selector.register(heard_r, selectors.EVENT_READ)

    def _heard(self, heard_r: int) -> None:
        """An init forked its worker (or died trying)."""
        request, init = self.hearing.pop(heard_r)
        self.selector.unregister(heard_r)
        begun = started(heard_r, init)
        reply: dict[str, Any] = {"op": "forked", "id": request["id"], "pid": None}
        if begun is None:
            os.close(heard_r)
        else:
            worker, mounts = begun
            self.fates[init] = heard_r
            if init in self.keepers:
                self.keepers[init] = worker
            reply |= {"pid": worker, "inner": 2, "level": "pid-namespace", "mounts": mounts}
            # The plugin's orphans come to its init: its tree is counted too.
            reply["init"] = reply["tree"] = init
            self._watch(reply, request)
        self._tell_host(reply)

    def _watch(self, reply: dict[str, Any], request: dict[str, Any]) -> None:
        """Watch the worker ``reply`` names: below its init (or keeper:
        ``tree``), and in its own tmpfs mounts where its init made them."""
        limit = request.get("limit")
        plan = request.get("sandbox") or {}
        init, private = reply.get("init"), None
        if init is not None and reply.get("mounts", {}).get("private_shm") == "enforced":
            private = (init, plan.get("tmp_dir", ""))
        tree = reply.get("tree")
        memory = TreeMemory(tree, include_root=False) if tree else TreeMemory(reply["pid"])
        self.watched[reply["pid"]] = _Watched(
            memory,
            limit if isinstance(limit, int) else 0,
            plan.get("max_tasks", 0),
            private,
            request.get("cgroup"),
            segment=tuple(request["segment"]) if request.get("segment") else None,
        )

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
            self._watch(reply, request)
        self._tell_host(reply)

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
            for heard_r, (_, init) in list(self.hearing.items()):
                if init == pid:
                    self._heard(heard_r)
            worker = self.keepers.pop(pid)
            ending = self.fates.pop(pid, None)
            if ending is not None:
                status = fate(ending, status)
            if worker is None:
                continue  # it died before forking a worker: the host was told so
            code = os.waitstatus_to_exitcode(status)
            report: dict[str, Any] = {"op": "exit", "pid": worker, "code": code}
            entry = self.watched.pop(worker, None)
            if entry is not None:
                entry.memory.close()
                if entry.group:
                    self.groups.remove(entry.group)
                report["tripped"] = entry.tripped
            self._tell_host(report)

    def _sweep(self) -> None:
        """Read every watched tree's memory, kill those past their limit, and
        send the host the figures that changed."""
        changed: dict[str, int] = {}
        for pid, entry in self.watched.items():
            if entry.tripped is not None:
                continue
            used = entry.memory.read()
            if entry.private is None:
                used += entry.memory.shared_bytes(skip=entry.segment)
            else:  # its /dev/shm is its own: what is in it counts, open or not
                used += entry.memory.shared_bytes(("/memfd:",), entry.segment)
                used += private_bytes(*entry.private)
            tasks = entry.memory.tasks() if entry.max_tasks else 0
            if entry.limit and used > entry.limit:
                entry.tripped = ("memory", used)  # the exit report says so: the host names it
            elif entry.max_tasks and (
                tasks > entry.max_tasks or (entry.group and TaskGroups.refused(entry.group))
            ):
                entry.tripped = ("tasks", max(tasks, entry.max_tasks + 1))
            if entry.tripped is not None:
                containment.kill_group(pid)  # a keeper, or the namespace, takes what left it
            if used != entry.reported:
                entry.reported = changed[str(pid)] = used
        figures = list(changed.items())
        for start in range(0, len(figures), _REPORT_CHUNK):
            chunk = dict(figures[start : start + _REPORT_CHUNK])
            self._tell_host({"op": "memory", "rss": chunk})
