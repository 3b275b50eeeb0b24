"""What a plugin tries beyond its grants, told once each
(docs/guides/isolation.md#what-a-plugin-may-reach): a sandboxed worker's
audit hook logs a socket, a TCP connect or bind without ``network``, a write
outside its writable paths. The kernel refuses them either way; the line
tells the plugin's author (``plugwarden check``, PW012) and its operator
what to declare or grant."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from plugwarden.plugin.permissions import within

__all__ = ["UNDECLARED", "watch_undeclared"]

UNDECLARED = "undeclared"  # the marker plugwarden check looks for in a worker's log
_AUDITED = frozenset({"socket.__new__", "socket.connect", "socket.bind", "open"})
_FAMILIES = {1: "AF_UNIX", 2: "AF_INET", 10: "AF_INET6", 17: "AF_PACKET"}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def watch_undeclared(plan: dict[str, Any]) -> None:
    """In a sandboxed worker: log, once each, what the plugin tries beyond
    its grants (a TCP connect or bind without ``network``, a write outside
    its writable paths). The kernel refuses it either way; the line tells
    the plugin's author (``plugwarden check``) and its operator what to
    declare or grant."""
    log = logging.getLogger("plugwarden.sandbox")
    network = plan.get("network", False)
    writable = (*plan.get("write", ()), *plan.get("devices", ()))
    told: set[str] = set()
    busy = [False]

    def tell(what: str, fix: str) -> None:
        if what not in told and len(told) < 100:
            told.add(what)
            log.warning("%s: %s; %s", UNDECLARED, what, fix)

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if busy[0] or event not in _AUDITED:
            return
        busy[0] = True
        try:
            if event == "open":
                path, mode, flags = args
                writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                    isinstance(flags, int) and flags & _WRITE_FLAGS
                )
                if writes and isinstance(path, str) and not any(within(path, w) for w in writable):
                    tell(f"a write to {path}", "declare it in [permissions] write")
            elif event == "socket.__new__":
                family = args[1]
                if network is False and family in _FAMILIES:
                    name = _FAMILIES[family]
                    tell(f"a socket of family {name}", "declare [permissions] network")
            elif network is not True:
                address = args[1]
                port = address[1] if isinstance(address, tuple) and len(address) > 1 else None
                if not (isinstance(network, list) and port in network):
                    verb = event.split(".")[1]
                    tell(f"a {verb} to {address!r}", "declare [permissions] network")
        except Exception:  # noqa: BLE001 - an audit hook must never break the plugin
            pass
        finally:
            busy[0] = False

    sys.addaudithook(hook)
