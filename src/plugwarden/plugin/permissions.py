"""What a plugin may reach beyond its own code: network, paths to read, paths
to write (docs/guides/isolation.md#what-a-plugin-may-reach).

A manifest's ``[permissions]`` declares what the plugin needs; the
operator's ``[plugins.NAME.permissions]`` (or ``[defaults.permissions]``)
says otherwise key by key; what nobody declared is denied. GPU access
follows ``requires_gpu``. The host's own secrets (its config, its job
database) are never granted, whatever a table says.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["PERMISSION_KEYS", "Grants", "Permissions", "permissions", "within"]

PERMISSION_KEYS = ("network", "read", "write")


@dataclass(frozen=True, slots=True)
class Permissions:
    """One layer's word; ``None``: this layer says nothing about the key."""

    network: bool | tuple[int, ...] | None = None  # True: any port; ports: TCP to those only
    read: tuple[str, ...] | None = None
    write: tuple[str, ...] | None = None

    def over(self, lower: Permissions) -> Permissions:
        """These values where set, ``lower``'s elsewhere."""
        return Permissions(
            *(
                getattr(lower, key) if getattr(self, key) is None else getattr(self, key)
                for key in PERMISSION_KEYS
            )
        )

    def granted(self) -> Grants:
        """What is granted once every layer has spoken: the undeclared is denied."""
        return Grants(
            network=False if self.network is None else self.network,
            read=tuple(_expand(path) for path in self.read or ()),
            write=tuple(_expand(path) for path in self.write or ()),
        )


@dataclass(frozen=True, slots=True)
class Grants:
    """What one plugin is granted, paths absolute."""

    network: bool | tuple[int, ...] = False
    read: tuple[str, ...] = ()
    write: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        network = list(self.network) if isinstance(self.network, tuple) else self.network
        return {"network": network, "read": list(self.read), "write": list(self.write)}


def within(path: str, folder: str) -> bool:
    """Whether ``path`` is ``folder`` or lies beneath it."""
    path, folder = os.path.abspath(path), os.path.abspath(folder).rstrip("/")
    return path == folder or path.startswith(folder + "/")


def _expand(path: str) -> str:
    return os.path.normpath(os.path.expanduser(path))


def permissions(table: object, *, where: str, fail: Callable[[str, str], Exception]) -> Permissions:
    """A ``[permissions]`` table, checked; ``fail(key, message)`` builds the
    error to raise, naming the key."""
    if not isinstance(table, dict):
        raise fail(where, f"expected a table, got {table!r}")
    for key in table:
        if key not in PERMISSION_KEYS:
            raise fail(f"{where}.{key}", f"unknown permission; expected one of {PERMISSION_KEYS}")
    network = table.get("network")
    if isinstance(network, list):
        if not network or not all(
            isinstance(port, int) and not isinstance(port, bool) and 1 <= port <= 65535
            for port in network
        ):
            raise fail(
                f"{where}.network", f"expected true, false or a list of TCP ports, got {network!r}"
            )
        network = tuple(sorted(set(network)))
    elif network is not None and not isinstance(network, bool):
        raise fail(
            f"{where}.network", f"expected true, false or a list of TCP ports, got {network!r}"
        )
    paths: dict[str, tuple[str, ...] | None] = {}
    for key in ("read", "write"):
        value = table.get(key)
        if value is None:
            paths[key] = None
            continue
        if not isinstance(value, list) or not all(
            isinstance(path, str) and path.startswith(("/", "~")) and "\0" not in path
            for path in value
        ):
            raise fail(
                f"{where}.{key}", f"expected a list of absolute paths (or ~/...), got {value!r}"
            )
        paths[key] = tuple(value)
    return Permissions(network, paths["read"], paths["write"])
