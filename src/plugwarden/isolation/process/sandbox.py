"""The sandbox a worker runs in: what it may read, write and reach
(docs/guides/isolation.md#what-a-plugin-may-reach).

The host draws a :class:`Sandbox` for each plugin: the paths its workers
read (the Python installation and search path, system libraries, a handful
of ``/etc`` files, its model files, granted paths), write (its private
state and temporary directories, granted paths), the TCP ports it may use,
and the host's secrets to hide. In a worker's namespaces, its init
(:func:`enter_mount_namespace`) gives it a ``/proc`` of its own PID
namespace, a private ``/dev/shm`` and temporary directory (memory, counted
by its guard, gone with it) and hides the host's config and job database;
the worker then confines itself with Landlock, drops its privileges and
installs its seccomp filter (:mod:`~plugwarden.isolation.process.privileges`).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pwd
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

from plugwarden.isolation.process import landlock
from plugwarden.isolation.process.containment import libc, map_own_ids
from plugwarden.plugin.limits import Limits
from plugwarden.plugin.permissions import Grants, within

__all__ = [
    "PROTECTIONS",
    "SYSTEM_READ",
    "Sandbox",
    "enter_mount_namespace",
    "limit_inotify",
    "machine_support",
    "private_bytes",
    "switch_user",
]

# Each protection a worker reports, and what it stops (docs/guides/isolation.md, doctor).
PROTECTIONS = {
    "own_proc": "a /proc of its own PID namespace: no other process seen, signalled or read",
    "private_shm": "its own /dev/shm and tmp (memory, counted by its guard, gone with it)",
    "filesystem": "Landlock: reads only code, libraries, its models and grants; writes only "
    "its state, tmp and grants (not the config, the job database, site-packages, /etc/shadow)",
    "network": "no TCP connect or bind, no socket() at all, unless [permissions] network",
    "no_new_privs": "no setuid binary or file capability gives privilege back",
    "capabilities": "every capability dropped (root's too)",
    "seccomp": "mount, ptrace, process_vm_*, bpf, kexec, modules, keyrings, namespaces, "
    "io_uring answer EPERM",
    "descriptors": "at most 1024 open descriptors",
    "tasks": "threads plus processes past max_tasks kill the worker (TaskLimitExceeded)",
    "inotify": "a user namespace of its own, its inotify instances capped: not all the user's",
}

# What programs read on any Linux machine, and nothing that holds a secret.
SYSTEM_READ = (
    "/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin", "/sys", "/proc", "/dev",
    "/etc/ssl", "/etc/pki", "/etc/ca-certificates", "/etc/alternatives", "/etc/fonts",
    "/etc/resolv.conf", "/etc/hosts", "/etc/host.conf", "/etc/gai.conf", "/etc/nsswitch.conf",
    "/etc/passwd", "/etc/group", "/etc/localtime", "/etc/timezone", "/etc/mime.types",
    "/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/os-release",
)  # fmt: skip
DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty")
GPU_DEVICES = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia-modeset")
SHM = "/dev/shm"

LANDLOCK_ENV = "PLUGWARDEN_LANDLOCK"  # "off": workers go without it (tests of the fallback)
_CLONE_NEWNS = 0x00020000
_MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 2, 4, 8
_MS_BIND, _MS_REC, _MS_PRIVATE = 4096, 16384, 1 << 18


@dataclass(frozen=True, slots=True)
class Sandbox:
    """One plugin's confinement, as plain data for the fork request."""

    enabled: bool = True
    read: tuple[str, ...] = ()
    write: tuple[str, ...] = ()
    network: bool | tuple[int, ...] = False
    devices: tuple[str, ...] = DEVICES
    hide: tuple[str, ...] = ()  # the host's secrets: covered in the worker's mounts
    state_dir: str = ""
    tmp_dir: str = ""
    tmp_mb: int = 0  # the size of its private tmpfs mounts (its memory guard)
    max_tasks: int = 0
    env: dict[str, str] = field(default_factory=dict)
    user: str = ""  # as root: the user its workers run as
    landlock: bool = True  # False: as on a kernel without it (LANDLOCK_ENV=off, to test that)
    # What it was drawn from, to draw it again on another machine (a Ray node).
    granted: Grants = field(default_factory=Grants)
    models: tuple[str, ...] = ()
    gpu: bool = False
    own_env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def draw(
        cls,
        *,
        grants: Grants,
        search_path: list[str],
        extra_read: list[str],
        secrets: tuple[str, ...],
        home: str,
        gpu: bool,
        limits: Limits,
        env: dict[str, str],
        prefixes: tuple[str, ...] | None = None,
    ) -> Sandbox:
        """The sandbox of a plugin whose private directories live in
        ``home``: its ``grants``, its import path, its model files
        (``extra_read``), the host's secrets, its own ``env`` table.
        ``prefixes``: its Python's installation (default: the host's; a
        plugin's own environment and the base Python under it)."""
        state_dir, tmp_dir = os.path.join(home, "state"), os.path.join(home, "tmp")
        if limits.worker_user:  # the folders above are for that user to pass through
            os.makedirs(os.path.dirname(home), mode=0o755, exist_ok=True)
        for made in (state_dir, tmp_dir):
            os.makedirs(made, mode=0o700, exist_ok=True)
            _give(made, limits.worker_user)
        python = set(prefixes or (sys.prefix, sys.base_prefix, sys.exec_prefix,
                                   sys.base_exec_prefix))  # fmt: skip
        here = os.getcwd()
        imports = [p for p in search_path if p and os.path.abspath(p) != here]
        read = [*SYSTEM_READ, *sorted(python), *imports, *extra_read, *grants.read]
        readable = [path for path in read if not any(within(s, path) for s in secrets)]
        devices = (*DEVICES, *(_gpu_devices() if gpu else ()))
        return cls(
            enabled=limits.sandbox,
            read=tuple(dict.fromkeys(os.path.abspath(path) for path in readable)),
            write=(state_dir, tmp_dir, SHM, *grants.write),
            network=grants.network,
            devices=devices,
            hide=secrets,
            state_dir=state_dir,
            tmp_dir=tmp_dir,
            tmp_mb=int(limits.memory_mb),
            max_tasks=limits.max_tasks,
            user=limits.worker_user,
            landlock=os.environ.get(LANDLOCK_ENV) != "off",
            env={**env, "TMPDIR": tmp_dir} if limits.sandbox else dict(env),
            granted=grants,
            models=tuple(extra_read),
            gpu=gpu,
            own_env=dict(env),
        )

    def for_node(self, search_path: list[str], home: str) -> Sandbox:
        """The same sandbox drawn on this machine (a Ray node): its Python,
        import path and private directories under ``home``."""
        limits = Limits(memory_mb=self.tmp_mb, max_tasks=self.max_tasks, sandbox=self.enabled,
                        worker_user=self.user)  # fmt: skip
        return Sandbox.draw(grants=self.granted, search_path=search_path,
                            extra_read=list(self.models), secrets=self.hide, home=home,
                            gpu=self.gpu, limits=limits, env=self.own_env)  # fmt: skip

    def message(self) -> dict[str, Any]:
        return asdict(self)


def _give(path: str, user: str) -> None:
    """As root: make ``path`` (a private directory) ``user``'s."""
    if not user or os.geteuid() != 0:
        return
    with contextlib.suppress(KeyError, OSError):
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def _gpu_devices() -> list[str]:
    found = [path for path in GPU_DEVICES if os.path.exists(path)]
    with contextlib.suppress(OSError):
        found += [f"/dev/{name}" for name in os.listdir("/dev") if name[6:].isdigit()
                  and name.startswith("nvidia")]  # fmt: skip
    if os.path.isdir("/dev/dri"):
        found.append("/dev/dri")
    return found


def _mount(source: str, target: str, kind: str | None, flags: int, data: str | None) -> bool:
    lib = libc()
    assert lib is not None
    args = [None if value is None else value.encode() for value in (source, target, kind, data)]
    return bool(lib.mount(args[0], args[1], args[2], ctypes.c_ulong(flags), args[3]) == 0)


_MOUNT_SETATTR, _AT_FDCWD, _AT_RECURSIVE, _MOUNT_ATTR_RDONLY = 442, -100, 0x8000, 0x1


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]  # fmt: skip


def _read_only(path: str, *, recursive: bool, on: bool) -> bool:
    lib = libc()
    assert lib is not None
    attr = _MountAttr(_MOUNT_ATTR_RDONLY if on else 0, 0 if on else _MOUNT_ATTR_RDONLY, 0, 0)
    flags = _AT_RECURSIVE if recursive else 0
    done = lib.syscall(_MOUNT_SETATTR, _AT_FDCWD, path.encode(), flags, ctypes.byref(attr),
                       ctypes.sizeof(attr))  # fmt: skip
    return bool(done == 0)


def read_only_but(writable: list[str]) -> str:
    """Where Landlock is missing, in a worker's own mount namespace: every
    mount read-only but ``writable`` (each bound onto itself first), so the
    plugin still writes only its own and granted paths. Reads stay as the
    file modes allow."""
    kept = []
    for path in writable:
        if os.path.isdir(path) and (
            os.path.ismount(path) or _mount(path, path, None, _MS_BIND | _MS_REC, None)
        ):
            kept.append(path)
    if not _read_only("/", recursive=True, on=True):
        why = os.strerror(ctypes.get_errno())
        return f"not available here: no Landlock, and mount_setattr refused ({why})"
    for path in kept:
        _read_only(path, recursive=False, on=False)
    return "enforced (read-only mounts: no Landlock here, so writes only, not reads, are confined)"


def enter_mount_namespace(plan: dict[str, Any]) -> dict[str, str]:
    """In a worker's init, before it forks the worker: a mount namespace of
    its own with its own ``/proc``, private ``/dev/shm`` and tmp, and the
    host's secrets covered. Protection -> "enforced", or why not."""
    lib = libc()
    if lib is None or lib.unshare(_CLONE_NEWNS) != 0:
        why = "not available here: no mount namespace (unshare refused)"
        return {"own_proc": why, "private_shm": why}
    _mount("none", "/", None, _MS_REC | _MS_PRIVATE, None)  # nothing leaks back to the host
    report = {}
    flags = _MS_NOSUID | _MS_NODEV | _MS_NOEXEC
    report["own_proc"] = _said(_mount("proc", "/proc", "proc", flags, None), "mount of /proc")
    size = f"size={max(16, plan['tmp_mb'])}m,mode=1777"
    private = [SHM, plan["tmp_dir"]]
    done = all(_mount("tmpfs", path, "tmpfs", _MS_NOSUID | _MS_NODEV, size) for path in private)
    report["private_shm"] = _said(done, "tmpfs on /dev/shm")
    for secret in plan["hide"]:
        if os.path.isfile(secret):
            _mount("/dev/null", secret, None, _MS_BIND, None)
    if not plan.get("landlock", True) or landlock.abi() == 0:
        report["filesystem"] = read_only_but([*plan["write"], SHM, plan["tmp_dir"]])
    return report


def _said(done: bool, what: str) -> str:
    if done:
        return "enforced"
    return f"not available here: {what} refused ({os.strerror(ctypes.get_errno())})"


INOTIFY_INSTANCES = 32  # of the user's (128 by default): a plugin cannot take them all
_CLONE_NEWUSER = 0x10000000


def limit_inotify(instances: int = INOTIFY_INSTANCES) -> str:
    """In a fresh worker (one thread): a user namespace of its own (its uid
    mapped to itself; where a keeper made one already, that one) whose
    inotify limit is ``instances``, so the plugin cannot take every inotify
    instance of its user. Whether that is enforced, or why not."""
    lib = libc()
    if lib is None:
        return "not available here: no libc"
    if _in_initial_user_namespace():
        uid, gid = os.geteuid(), os.getegid()
        if lib.unshare(_CLONE_NEWUSER) != 0:
            return f"not available here: no user namespace ({os.strerror(ctypes.get_errno())})"
        try:
            map_own_ids(uid, gid)
        except OSError as exc:
            return f"not available here: user namespace not mapped ({exc.strerror})"
    try:
        with open("/proc/sys/user/max_inotify_instances", "w") as handle:
            handle.write(str(instances))
    except OSError as exc:
        return f"not available here: inotify limit not set ({exc.strerror})"
    return f"enforced ({instances} instances)"


def _in_initial_user_namespace() -> bool:
    try:
        with open("/proc/self/uid_map") as handle:
            return handle.read().split() == ["0", "0", "4294967295"]
    except OSError:
        return False


def switch_user(name: str) -> str | None:
    """In a fresh worker running as root: become ``name`` (its uid, its
    primary group, no other group). None, or why it could not."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return f"worker_user {name!r} is not a user on this machine"
    try:
        os.setgroups([])
        os.setgid(entry.pw_gid)
        os.setuid(entry.pw_uid)
    except OSError as exc:
        return f"could not become worker_user {name!r} ({exc.strerror}): the host must run as root"
    return None


def machine_support(level: str) -> dict[str, str]:
    """Which protections this machine enforces for a new worker, given the
    containment ``level`` probed here: protection -> "enforced ..." or
    "not available here: <why>"."""
    version = landlock.abi()
    namespaced = level == "pid-namespace"
    no_ns = f"not available here: no PID namespace (containment level {level})"
    no_landlock = "not available here: this kernel has no Landlock (Linux 5.13+, in the LSM list)"
    return {
        "own_proc": "enforced" if namespaced else no_ns,
        "private_shm": "enforced" if namespaced else no_ns,
        "filesystem": f"enforced (Landlock ABI {version})" if version else no_landlock,
        "network": f"enforced (Landlock ABI {version}, seccomp)"
        if version >= 4
        else "enforced by seccomp for network = false; ports not available here (Landlock < 4)",
        "no_new_privs": "enforced",
        "capabilities": "enforced",
        "seccomp": "enforced"
        if sys.platform.startswith("linux") and os.uname().machine == "x86_64"
        else "not available here: no syscall table for this machine yet",
        "descriptors": "enforced",
        "tasks": "enforced (the zygote's sweep)",
        "inotify": "enforced" if namespaced else no_ns,
    }


def private_bytes(init: int, tmp_dir: str) -> int:
    """Bytes held in the private tmpfs mounts of the worker whose init is
    ``init`` (its ``/dev/shm`` and tmp), read through its root."""
    total = 0
    for path in (SHM, tmp_dir):
        try:
            stats = os.statvfs(f"/proc/{init}/root{path}")
        except OSError:
            continue
        if stats.f_blocks:
            total += (stats.f_blocks - stats.f_bfree) * stats.f_frsize
    return total
