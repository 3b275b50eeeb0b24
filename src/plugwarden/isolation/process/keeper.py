"""What stands between the zygote and a worker: its keeper and its init
(docs/guides/isolation.md#containment-levels).

The *init* is PID 1 of the worker's PID namespace: it sets up the worker's
mount namespace and its pids cgroup (:mod:`~plugwarden.isolation.process.sandbox`,
:mod:`~plugwarden.isolation.process.taskgroup`), forks the worker, says so
on a pipe, forwards signals to it, reaps the plugin's orphans, and when the
worker ends writes its wait status on the pipe and exits (the kernel then
ends whatever is left in the namespace). The worker is an ordinary process:
a signal it sends itself does what it does everywhere.

The *keeper* is there where the zygote cannot fork the init straight into
a namespace (a host that is not root): it enters a user and PID namespace
and forks the init, or, where no namespace can be had, forks the worker
itself and reaps its orphans; it tells the zygote the worker's pid and
exits with the worker's own status.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
from typing import Any

from plugwarden.isolation.process import containment
from plugwarden.isolation.process.sandbox import enter_mount_namespace
from plugwarden.isolation.process.taskgroup import TaskGroups

__all__ = ["fate", "keep", "run_init", "started"]


def keep(fds: list[int], told: int, request: dict[str, Any], serve: Any) -> None:
    """The keeper: contain the worker, report it, outlive it by a moment."""
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    # SIGINT and SIGTERM stay ignored, as in the zygote: a signal to the
    # server's whole process group is the host's to act on (it drains). The
    # zygote gone (the host is): end the worker and all it left, then go.
    signal.signal(signal.SIGHUP, lambda *_: _end_all())
    containment.set_death_signal(signal.SIGHUP)
    containment.set_subreaper()
    told_about: dict[str, Any]
    ending = None
    if containment.enter_pid_namespace():
        heard_r, heard_w = os.pipe()
        child = os.fork()
        if child == 0:
            os.close(told)
            os.close(heard_r)
            run_init(fds, heard_w, request, serve)
        os.close(heard_w)
        begun = started(heard_r, child)
        worker, mounts = begun if begun is not None else (None, {})
        told_about = {"pid": worker, "inner": 2, "level": "pid-namespace", "mounts": mounts}
        told_about["init"] = told_about["tree"] = child
        ending = heard_r
    else:
        if request.get("cgroup"):
            TaskGroups.join(request["cgroup"])
        child = os.fork()
        if child == 0:
            os.close(told)
            for sig in (signal.SIGINT, signal.SIGHUP):  # not the keeper's (serve sets SIGTERM's)
                signal.signal(sig, signal.SIG_DFL)
            serve(*fds, label=request.get("label", "?"), env=request.get("env"),
                  plan=request.get("sandbox"))  # fmt: skip
        # The keeper reaps the plugin's orphans (they come to it, a
        # subreaper), so its whole tree below it is the worker's to count.
        told_about = {"pid": child, "inner": child, "level": "subreaper", "tree": os.getpid()}
    for passed in fds:
        os.close(passed)
    os.write(told, json.dumps(told_about).encode())
    os.close(told)
    while True:
        try:
            pid, status = os.waitpid(-1, 0)  # the child, or an orphan of the plugin's
        except InterruptedError:
            continue
        except ChildProcessError:
            status = 70 << 8
            break
        if pid == child:
            break
    if ending is not None:
        status = fate(ending, status)
    containment.kill_descendants(os.getpid())
    if os.WIFSIGNALED(status):
        _die_like(os.WTERMSIG(status))
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 70)


# What a worker's init passes on to it: the signals a process is sent to stop
# or to act (PID 1 of a namespace would drop them, having no handler).
_FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
              signal.SIGUSR2)  # fmt: skip


def run_init(fds: list[int], heard: int, request: dict[str, Any], serve: Any) -> None:
    """PID 1 of a worker's namespace: set up its mounts, fork the worker, say
    so on ``heard``, forward signals to it, reap every orphan of the plugin,
    and when the worker ends write its wait status to ``heard`` and exit
    (the kernel then ends whatever is left in the namespace). The worker is
    an ordinary process: a signal it sends itself does what it does
    everywhere."""
    try:
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, *_FORWARDED):
            signal.signal(sig, signal.SIG_DFL)
        os.setsid()  # out of the server's process group: its Ctrl-C is the host's to handle
        containment.set_death_signal(signal.SIGKILL)
        plan = request.get("sandbox") or {}
        mounts = enter_mount_namespace(plan) if plan.get("enabled") else {}
        if plan.get("max_tasks"):
            joined = request.get("cgroup") and TaskGroups.join(request["cgroup"])
            how = "pids cgroup" if joined else "the zygote's sweep"
            mounts["tasks"] = f"enforced ({how})"
        worker = os.fork()
        if worker == 0:
            os.close(heard)
            serve(*fds, label=request.get("label", "?"), env=request.get("env"), plan=plan,
                  mounts=mounts)  # fmt: skip
        for passed in fds:
            os.close(passed)
        os.write(heard, json.dumps({"mounts": mounts}).encode() + b"\n")
        for sig in _FORWARDED:
            signal.signal(sig, lambda sig, _: _forward(worker, sig))
        while True:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                status = 70 << 8
                break
            if pid == worker:
                break
        os.write(heard, b"%d\n" % status)
    finally:
        os._exit(0)


def _forward(worker: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(worker, sig)


def started(heard: int, init: int) -> tuple[int, dict[str, str]] | None:
    """Wait for ``init``'s first line on ``heard``: the worker's pid (as this
    process sees it) and the init's mounts; None if it died first."""
    line = b""
    while not line.endswith(b"\n"):
        chunk = os.read(heard, 4096)
        if not chunk:
            return None
        line += chunk
    found = containment.children(init)
    if not found:
        return None
    try:
        mounts = json.loads(line)["mounts"]
    except (ValueError, KeyError, TypeError):
        mounts = {}
    return found[0], mounts


def fate(heard: int, init_status: int) -> int:
    """The worker's wait status as its init wrote it on ``heard`` (closed
    here); ``init_status`` where it wrote none (the init was killed: so was
    the worker, by SIGKILL)."""
    try:
        written = os.read(heard, 64)
    except OSError:
        written = b""
    finally:
        os.close(heard)
    try:
        return int(written.split()[-1])
    except (ValueError, IndexError):
        return init_status


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
