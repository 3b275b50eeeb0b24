"""A ``pids`` cgroup per worker, where this machine lets the zygote make one.

The task guard (``max_tasks``) is the zygote's sweep everywhere: it counts a
worker tree's threads and processes and kills the tree past the limit. A
sweep runs every quarter second, and a fork bomb is faster: where a
``pids`` cgroup is writable (root, cgroup v1 or a delegated v2 subtree),
each worker's init joins a cgroup of its own whose ``pids.max`` makes the
kernel refuse the task past the limit, and the sweep reads the cgroup's
refusals (``pids.events``) as a trip.
"""

from __future__ import annotations

import contextlib
import os

__all__ = ["TaskGroups"]

_V1 = "/sys/fs/cgroup/pids"
_V2 = "/sys/fs/cgroup"


def _own(hierarchy: str) -> str | None:
    """This process's cgroup in ``hierarchy`` ("pids" for v1, "" for v2)."""
    try:
        with open("/proc/self/cgroup") as file:
            for line in file:
                _, controllers, path = line.rstrip("\n").split(":", 2)
                if (hierarchy and hierarchy in controllers.split(",")) or (
                    not hierarchy and not controllers
                ):
                    return path
    except (OSError, ValueError):
        pass
    return None


def _writable_base() -> str | None:
    own = _own("pids")
    if own is not None and os.path.isdir(_V1):
        base = os.path.join(_V1, own.lstrip("/"))
        if os.access(base, os.W_OK):
            return base
    own = _own("")
    if own is not None:
        base = os.path.join(_V2, own.lstrip("/"))
        control = os.path.join(base, "cgroup.subtree_control")
        with contextlib.suppress(OSError), open(control) as file:
            if "pids" in file.read().split() and os.access(base, os.W_OK):
                return base
    return None


class TaskGroups:
    """The zygote's cgroups, one per worker; none where none can be made."""

    def __init__(self) -> None:
        base = _writable_base()
        self.root: str | None = None
        if base is not None:
            self._sweep_stale(base)
            root = os.path.join(base, f"plugwarden-{os.getpid()}")
            with contextlib.suppress(OSError):
                os.mkdir(root)
                self.root = root

    def make(self, name: str, max_tasks: int) -> str | None:
        """A cgroup allowing ``max_tasks`` tasks; its path, or None."""
        if self.root is None or max_tasks <= 0:
            return None
        path = os.path.join(self.root, name)
        try:
            os.mkdir(path)
            with open(os.path.join(path, "pids.max"), "w") as file:
                file.write(str(max_tasks))
        except OSError:
            self.remove(path)
            return None
        return path

    @staticmethod
    def join(path: str) -> bool:
        """Move the calling process into the cgroup at ``path``."""
        try:
            with open(os.path.join(path, "cgroup.procs"), "w") as file:
                file.write("0")
        except OSError:
            return False
        return True

    @staticmethod
    def refused(path: str) -> int:
        """How many tasks the cgroup has refused (forks past ``pids.max``)."""
        events = os.path.join(path, "pids.events")
        with contextlib.suppress(OSError, ValueError, IndexError), open(events) as file:
            for line in file:
                key, value = line.split()
                if key == "max":
                    return int(value)
        return 0

    @staticmethod
    def remove(path: str) -> None:
        with contextlib.suppress(OSError):
            os.rmdir(path)

    def close(self) -> None:
        if self.root is not None:
            self._remove_tree(self.root)

    @classmethod
    def _remove_tree(cls, root: str) -> None:
        with contextlib.suppress(OSError):
            for entry in os.scandir(root):
                if entry.is_dir(follow_symlinks=False):
                    cls.remove(entry.path)
        cls.remove(root)

    @classmethod
    def _sweep_stale(cls, base: str) -> None:
        """Remove what zygotes that died without closing left (emptied by the
        kernel when their workers died)."""
        with contextlib.suppress(OSError):
            for entry in os.scandir(base):
                owner = entry.name.removeprefix("plugwarden-")
                if owner.isdigit() and owner != entry.name and not os.path.exists(f"/proc/{owner}"):
                    cls._remove_tree(entry.path)
