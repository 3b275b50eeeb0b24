"""Containment: how far a worker's process tree is held
(docs/guides/isolation.md).

Every descendant of a worker, however it detaches (double fork, ``setsid``,
``setpgid``), must die with the worker and count against its memory limit.
The strongest level the kernel offers is used, probed once per zygote:

``pid-namespace``
    Each worker runs under a small init, PID 1 of a PID namespace of its own
    (an unprivileged user namespace first, where the host is not root).
    Orphans of the plugin are re-parented to the init, which reaps them;
    when the worker dies the init exits and the kernel kills everything
    left in the namespace. The plugin cannot see, let alone signal, the
    host, the zygote or any other worker.
``subreaper``
    Where namespaces are refused: the worker's keeper is a child subreaper
    (``PR_SET_CHILD_SUBREAPER``), so orphans of the plugin are re-parented to
    it, counted with the worker and reaped; it kills whatever is left when
    the worker ends, and the zygote kills any stray it adopts. Only Landlock
    (where the kernel has it) keeps a plugin from signalling processes of the
    same user (the host, the zygote, other workers): a hostile plugin needs
    the namespace level.

``PLUGWARDEN_CONTAINMENT=subreaper`` forces the weaker level (to test it).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import signal
import sys

__all__ = [
    "LEVELS",
    "children",
    "enter_pid_namespace",
    "force",
    "forced_down",
    "kill_descendants",
    "kill_group",
    "libc",
    "map_own_ids",
    "may_unshare_pid_namespace",
    "prctl",
    "probe",
    "set_death_signal",
    "set_subreaper",
    "tree",
    "unshare_pid_namespace",
]

LEVELS = {
    "pid-namespace": "each worker in a PID namespace of its own: every descendant dies with it "
    "and none can signal the host, the zygote or another worker",
    "subreaper": "each worker a child subreaper: descendants stay in its tree and die with "
    "it, but a plugin can still signal other processes of the same user",
}
FORCE_ENV = "PLUGWARDEN_CONTAINMENT"

_CLONE_NEWUSER = 0x10000000
_CLONE_NEWPID = 0x20000000
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36


@functools.cache
def libc() -> ctypes.CDLL | None:
    """libc, loaded once per process tree: a worker forked from the zygote
    inherits it (and the functions already looked up) instead of loading it
    again at each start (~0.3 ms of a worker's start)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def prctl(option: int, value: int) -> bool:
    lib = libc()
    return lib is not None and lib.prctl(option, value, 0, 0, 0) == 0


def set_subreaper() -> bool:
    return prctl(_PR_SET_CHILD_SUBREAPER, 1)


_forced: str | None = None  # the level the zygote was told to use (tests)


def force(level: str | None) -> None:
    """In the zygote: use ``level`` ("subreaper") whatever the machine offers
    (the host's PLUGWARDEN_CONTAINMENT, handed over apart from the
    environment, which never carries PLUGWARDEN_* into a plugin's processes)."""
    global _forced
    _forced = level or None


def forced_down() -> bool:
    """Whether the level is forced down to the subreaper's."""
    return (_forced or os.environ.get(FORCE_ENV)) == "subreaper"


def set_death_signal(sig: int = signal.SIGKILL) -> bool:
    """``sig`` to this process when its parent (thread) dies."""
    return prctl(_PR_SET_PDEATHSIG, sig)


def may_unshare_pid_namespace() -> bool:
    """Whether this process may give each child a PID namespace of its own
    with :func:`unshare_pid_namespace` (root, and the level not forced down)."""
    return not forced_down() and os.geteuid() == 0 and libc() is not None


def unshare_pid_namespace() -> bool:
    """Root only: make this process's next child PID 1 of a new PID
    namespace; whether it worked. Repeatable: the kernel unshares only from
    the process's own namespace, so the children's namespace is set back to
    it first (its fd is closed at once: a worker must not inherit a way
    back out of its namespace)."""
    lib = libc()
    if lib is None:
        return False
    try:
        own = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        if lib.setns(own, _CLONE_NEWPID) != 0:
            return False
    finally:
        os.close(own)
    return bool(lib.unshare(_CLONE_NEWPID) == 0)


def enter_pid_namespace() -> bool:
    """Make this (single-threaded) process's next child PID 1 of a new PID
    namespace; whether that worked. Root needs no user namespace."""
    if forced_down():
        return False
    lib = libc()
    if lib is None:
        return False
    if os.geteuid() == 0:  # a fresh process (a keeper): its children's namespace is its own
        return bool(lib.unshare(_CLONE_NEWPID) == 0)
    uid, gid = os.getuid(), os.getgid()
    if lib.unshare(_CLONE_NEWUSER | _CLONE_NEWPID) != 0:
        return False
    try:
        map_own_ids(uid, gid)
    except OSError:
        return False
    return True


def map_own_ids(uid: int, gid: int) -> None:
    """Just after this process unshared a user namespace: ``uid`` and
    ``gid`` the same inside as outside (files look as they do outside), no
    other id, no setgroups. Raises OSError."""
    for path, text in (
        ("/proc/self/setgroups", "deny"),
        ("/proc/self/uid_map", f"{uid} {uid} 1"),
        ("/proc/self/gid_map", f"{gid} {gid} 1"),
    ):
        with open(path, "w") as handle:
            handle.write(text)


def children(pid: int) -> list[int]:
    """The direct children of ``pid`` (every thread's), from /proc."""
    found: list[int] = []
    with contextlib.suppress(OSError, ValueError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as children:
                found += map(int, children.read().split())
    return found


def tree(pid: int) -> list[int]:
    """Every process below ``pid``, parents before their children."""
    found: list[int] = []
    pending = children(pid)
    while pending:
        child = pending.pop(0)
        found.append(child)
        pending += children(child)
    return found


def kill_group(pid: int) -> None:
    """SIGKILL the process group ``pid`` leads (a worker's: everything in it),
    or ``pid`` alone before it has made its group."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def kill_descendants(pid: int) -> None:
    """SIGKILL every process below ``pid``. The whole tree is read before any
    kill: a parent that dies first hands its children to a subreaper, out of
    reach of a walk. For this process's own tree (a subreaper's), repeat and
    reap until nothing is left, so that nothing moves on to init."""
    own = pid == os.getpid()
    for _ in range(50):
        found = tree(pid)
        if not found:
            return
        for member in found:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(member, signal.SIGKILL)
        if not own:
            return
        with contextlib.suppress(ChildProcessError):
            while True:
                os.waitpid(-1, 0)


def probe() -> str:
    """The level a new worker gets on this machine (forks a short-lived child)."""
    if forced_down():
        return "subreaper"
    child = os.fork()
    if child == 0:
        code = 1
        try:
            if enter_pid_namespace():
                grandchild = os.fork()
                if grandchild == 0:
                    os._exit(0 if os.getpid() == 1 else 1)
                _, status = os.waitpid(grandchild, 0)
                code = os.waitstatus_to_exitcode(status)
        finally:
            os._exit(code)
    _, status = os.waitpid(child, 0)
    return "pid-namespace" if os.waitstatus_to_exitcode(status) == 0 else "subreaper"


# ``python -m plugwarden.isolation.process.containment`` is what doctor runs.
if __name__ == "__main__":
    print(probe())
