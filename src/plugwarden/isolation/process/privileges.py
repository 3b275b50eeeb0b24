"""What a worker gives up before it imports its plugin
(docs/guides/isolation.md#what-a-plugin-may-reach).

:func:`give_up_privileges` runs in the worker right after the fork, before
any thread or plugin code: no new privileges (``no_new_privs``: no setuid
binary or file capability gives any back), its Landlock rules (the paths
and TCP ports of its sandbox), no capabilities (root's, or those of its own
user namespace: the bounding, ambient, permitted and effective sets
emptied), a seccomp filter that answers EPERM (not a kill, so libraries
that probe keep working) to the system calls a plugin never needs (mounts,
ptrace and other processes' memory, kexec and modules, bpf, perf events,
keyrings, namespaces, reboot, swap, io_uring; without a network grant, any
``socket()`` of the Unix, IP or packet families), and a descriptor limit.
Each protection reports whether this machine enforced it, or why not.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import resource
from typing import Any

from plugwarden.isolation.process import landlock
from plugwarden.isolation.process.containment import libc, prctl

__all__ = ["DENIED_SYSCALLS", "MAX_DESCRIPTORS", "give_up_privileges"]

MAX_DESCRIPTORS = 1024
ENFORCED = "enforced"

_PR_SET_NO_NEW_PRIVS = 38
_PR_CAPBSET_DROP = 24
_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL = 47, 4
_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 22, 2
_CAPABILITY_VERSION_3 = 0x20080522
_AUDIT_ARCH_X86_64 = 0xC000003E
_X32_BIT = 0x40000000
_RET_ALLOW, _RET_ERRNO = 0x7FFF0000, 0x00050000
_LD_ABS_W, _JEQ, _JGE, _RET = 0x20, 0x15, 0x35, 0x06

# x86_64 numbers of what a plugin never needs (other architectures: not yet).
DENIED_SYSCALLS = {
    "ptrace": 101, "acct": 163, "mount": 165, "umount2": 166, "swapon": 167, "swapoff": 168,
    "reboot": 169, "init_module": 175, "delete_module": 176, "kexec_load": 246,
    "add_key": 248, "request_key": 249, "keyctl": 250, "unshare": 272, "perf_event_open": 298,
    "open_by_handle_at": 304, "setns": 308, "process_vm_readv": 310, "process_vm_writev": 311,
    "finit_module": 313, "kexec_file_load": 320, "bpf": 321, "pivot_root": 155,
    "fsopen": 430, "fsmount": 432, "move_mount": 429, "open_tree": 428,
    "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
}  # fmt: skip
_SOCKET, _ARG0 = 41, 16  # socket(2), and where its first argument lies in seccomp_data
_SOCKET_FAMILIES = (1, 2, 10, 17)  # AF_UNIX, AF_INET, AF_INET6, AF_PACKET


class _Filter(ctypes.Structure):
    _fields_ = [
        ("code", ctypes.c_ushort),
        ("jt", ctypes.c_ubyte),
        ("jf", ctypes.c_ubyte),
        ("k", ctypes.c_uint32),
    ]


class _Program(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_Filter))]


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def give_up_privileges(plan: dict[str, Any] | None = None) -> dict[str, str]:
    """In a fresh worker (one thread): protection -> "enforced", or why not.
    ``plan``: its sandbox (:class:`~plugwarden.isolation.process.sandbox.Sandbox`
    as sent); without one, or with one turned off, no Landlock rules and
    sockets stay open."""
    sandbox = plan if plan and plan.get("enabled") else None  # none, or turned off
    report = {"no_new_privs": _enforced(prctl(_PR_SET_NO_NEW_PRIVS, 1), "prctl refused")}
    if sandbox is not None and sandbox.get("landlock", True):
        report |= landlock.restrict(
            sandbox["read"], sandbox["write"], sandbox["network"], sandbox["devices"]
        )
    elif sandbox is not None:
        off = "not available here: Landlock turned off (PLUGWARDEN_LANDLOCK=off)"
        report["filesystem"] = report["network"] = off
    sockets_denied = sandbox is not None and sandbox["network"] is False
    if sockets_denied and not report.get("network", "").startswith("enforced"):
        report["network"] = "enforced (seccomp: no socket() of the Unix, IP or packet families)"
    report["capabilities"] = _drop_capabilities()
    report["seccomp"] = _install_filter(deny_sockets=sockets_denied)
    report["descriptors"] = _limit_descriptors(MAX_DESCRIPTORS)
    return report


def _enforced(done: bool, why: str) -> str:
    return ENFORCED if done else f"not available here: {why}"


def _drop_capabilities() -> str:
    lib = libc()
    if lib is None:
        return "not available here: no libc"
    # Root has every capability; so has an ordinary user in a user namespace
    # of its own (in that namespace): both give them all up.
    try:
        with open("/proc/sys/kernel/cap_last_cap") as file:
            last = int(file.read())
    except (OSError, ValueError):
        last = 40
    for cap in range(last + 1):  # needs CAP_SETPCAP, so before the sets are emptied
        lib.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0)
    lib.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    header = _CapHeader(_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    return _enforced(lib.capset(ctypes.byref(header), data) == 0, "capset refused")


def _program(deny_sockets: bool) -> list[tuple[int, int, int, int]]:
    """The filter, as BPF instructions: the denied calls answer EPERM; with
    ``deny_sockets``, so does ``socket()`` for the Unix, IP and packet
    families (a pair of connected sockets stays possible)."""
    refuse, allow = "refuse", "allow"
    code: list[tuple[int, Any, Any, int]] = [
        (_LD_ABS_W, 0, 0, 4), (_JEQ, 1, 0, _AUDIT_ARCH_X86_64), (_RET, 0, 0, -1),
        (_LD_ABS_W, 0, 0, 0), (_JGE, refuse, 0, _X32_BIT),
    ]  # fmt: skip
    code += [(_JEQ, refuse, 0, number) for number in sorted(set(DENIED_SYSCALLS.values()))]
    if deny_sockets:
        code += [(_JEQ, 0, allow, _SOCKET), (_LD_ABS_W, 0, 0, _ARG0)]
        code += [(_JEQ, refuse, 0, family) for family in _SOCKET_FAMILIES]
    labels = {allow: len(code), refuse: len(code) + 1}
    code += [(_RET, 0, 0, _RET_ALLOW), (_RET, 0, 0, -1)]
    program = []
    for here, (op, jt, jf, k) in enumerate(code):
        k = (_RET_ERRNO | errno.EPERM) if op == _RET and k == -1 else k
        jumps = [labels[j] - here - 1 if isinstance(j, str) else j for j in (jt, jf)]
        program.append((op, jumps[0], jumps[1], k))
    return program


def _install_filter(*, deny_sockets: bool = False) -> str:
    lib = libc()
    if lib is None:
        return "not available here: no libc"
    if platform.machine() != "x86_64":
        return f"not available here: no syscall table for {platform.machine()} yet"
    program = _program(deny_sockets)
    filters = (_Filter * len(program))(*(_Filter(*instruction) for instruction in program))
    prog = _Program(len(program), filters)
    done = lib.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) == 0
    return _enforced(done, f"prctl(PR_SET_SECCOMP) refused ({os.strerror(ctypes.get_errno())})")


def _limit_descriptors(most: int) -> str:
    try:
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        limit = most if hard == resource.RLIM_INFINITY else min(most, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
    except (OSError, ValueError) as exc:
        return f"not available here: {exc}"
    return ENFORCED
