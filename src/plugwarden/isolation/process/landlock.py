"""Landlock: the kernel's own allowlist of paths (and TCP ports) for a process.

:func:`restrict` runs in a fresh worker (one thread, ``no_new_privs`` set):
after it, the worker and everything it starts may read only the paths
granted for reading, write only those granted for writing, bind and connect
TCP only on granted ports (ABI 4 and later), and neither signal nor trace
processes outside its own tree (ABI 6; ptrace scoping holds from ABI 1).
Each right the running kernel knows is handled, so an older kernel
enforces less and says so, never nothing silently.
"""

from __future__ import annotations

import ctypes
import os
import platform

from plugwarden.isolation.process.containment import libc

__all__ = ["abi", "restrict"]

_CREATE, _ADD_RULE, _RESTRICT = 444, 445, 446  # the same on x86_64 and aarch64
_VERSION = 1
_PATH_BENEATH, _NET_PORT = 1, 2

EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1, 2, 4, 8
# ABI 1's thirteen rights, then REFER (2), TRUNCATE (3), IOCTL_DEV (5).
_FS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 5: (1 << 16) - 1}
_FILE_ONLY = EXECUTE | WRITE_FILE | READ_FILE | (1 << 14) | (1 << 15)
READ = EXECUTE | READ_FILE | READ_DIR
_BIND_TCP, _CONNECT_TCP = 1, 2
_SCOPE_ABSTRACT_UNIX, _SCOPE_SIGNAL = 1, 2


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


class _NetPort(ctypes.Structure):
    _fields_ = [("allowed_access", ctypes.c_uint64), ("port", ctypes.c_uint64)]


def abi() -> int:
    """The Landlock ABI this kernel offers; 0: none (or not Linux on x86_64/aarch64)."""
    lib = libc()
    if lib is None or platform.machine() not in ("x86_64", "aarch64"):
        return 0
    version = lib.syscall(_CREATE, None, 0, _VERSION)
    return max(0, int(version))


def _fs_rights(version: int) -> int:
    return max(rights for since, rights in _FS_BY_ABI.items() if since <= version)


def restrict(
    read: list[str], write: list[str], network: bool | list[int], devices: list[str]
) -> dict[str, str]:
    """Confine this thread (and all it starts) to ``read`` and ``write``
    (paths that do not exist are skipped), TCP to ``network``, read-write
    character ``devices``. Protection -> "enforced", or why not."""
    version = abi()
    if version == 0:
        why = "not available here: this kernel has no Landlock (Linux 5.13+, in the LSM list)"
        return {"filesystem": why, "network": why}
    lib = libc()
    assert lib is not None
    rights = _fs_rights(version)
    attr = _RulesetAttr(rights, 0, 0)
    size = ctypes.sizeof(ctypes.c_uint64)
    report = {"filesystem": "enforced"}
    if network is True:
        report["network"] = "granted"
    elif version >= 4:
        attr.handled_access_net = _BIND_TCP | _CONNECT_TCP
        size = 2 * ctypes.sizeof(ctypes.c_uint64)
        report["network"] = "enforced"
    else:
        report["network"] = (
            f"not available here: Landlock ABI {version} cannot restrict TCP (needs 4)"
        )
    if version >= 6:
        attr.scoped = _SCOPE_ABSTRACT_UNIX | _SCOPE_SIGNAL
        size = ctypes.sizeof(_RulesetAttr)
    ruleset = lib.syscall(_CREATE, ctypes.byref(attr), size, 0)
    if ruleset < 0:
        why = f"not available here: landlock_create_ruleset failed ({_errno()})"
        return {"filesystem": why, "network": why}
    try:
        for paths, allowed in ((read, READ), (write, rights), (devices, READ | WRITE_FILE)):
            for path in paths:
                _add_path(lib, ruleset, path, allowed & rights)
        if isinstance(network, list) and attr.handled_access_net:
            for port in network:
                rule = _NetPort(_BIND_TCP | _CONNECT_TCP, port)
                lib.syscall(_ADD_RULE, ruleset, _NET_PORT, ctypes.byref(rule), 0)
        if lib.syscall(_RESTRICT, ruleset, 0) != 0:
            why = f"not available here: landlock_restrict_self failed ({_errno()})"
            return {"filesystem": why, "network": why}
    finally:
        os.close(ruleset)
    return report


def _add_path(lib: ctypes.CDLL, ruleset: int, path: str, allowed: int) -> None:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return  # nothing there to grant
    try:
        if not os.path.isdir(f"/proc/self/fd/{fd}"):
            allowed &= _FILE_ONLY
        rule = _PathBeneath(allowed, fd)
        lib.syscall(_ADD_RULE, ruleset, _PATH_BENEATH, ctypes.byref(rule), 0)
    finally:
        os.close(fd)


def _errno() -> str:
    return os.strerror(ctypes.get_errno())
