"""The worker: one process per plugin (or per pool slot), forked by the zygote.

It leads its own process group (so a kill takes every process the plugin
started), writes its stdout and stderr into a pipe the host reads, and dies
with the host: a thread blocks on a lifeline pipe whose only writer is the
host, and the kernel kills it when the zygote goes (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import pickle
import select
import signal
import sys
import threading
import time
from multiprocessing.connection import Connection
from typing import Any, NoReturn

from plugwarden.core.loader import LoadedPlugin, load_plugin
from plugwarden.core.result import CallResult
from plugwarden.error_types import ErrorType
from plugwarden.exceptions import LoadError

__all__ = ["serve"]

_PR_SET_PDEATHSIG = 1
SPIN_S = 100e-6  # how long an idle worker polls for the next request before it sleeps


def serve(control_fd: int, lifeline_fd: int, output_fd: int, *, label: str) -> NoReturn:
    parent = os.getppid()
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)
    _die_with_parent(parent)
    os.dup2(output_fd, 1)
    os.dup2(output_fd, 2)
    os.close(output_fd)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    sys.stderr.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(levelname)s %(name)s: %(message)s",
        force=True,
    )
    threading.Thread(target=_lifeline, args=(lifeline_fd,), daemon=True).start()
    connection = Connection(control_fd)
    plugin: LoadedPlugin | None = None
    poller = select.poll()
    poller.register(control_fd, select.POLLIN | select.POLLHUP)
    back_to_back = True
    while True:
        replied = time.monotonic()
        if back_to_back:
            _await_briefly(poller)
        try:
            request = connection.recv()
        except (EOFError, OSError):
            _exit_group()
        # Spin next time only if requests come back to back: paced traffic
        # would just burn the spin every time.
        back_to_back = time.monotonic() - replied < SPIN_S
        op = request[0]
        if op == "load":
            plugin, reply = _load(*request[1:])
        elif op == "call" and plugin is not None:
            reply = ("outcome", plugin.call(request[1], request[2]).to_wire())
        else:
            failure = CallResult.failure(f"bad op {op!r}", ErrorType.PROTOCOL)
            reply = ("outcome", failure.to_wire())
        _send(connection, reply)


def _await_briefly(poller: select.poll) -> None:
    """Poll for the next request a moment before blocking in recv: calls that
    come back to back then skip a sleep and a wake-up."""
    until = time.monotonic() + SPIN_S
    while time.monotonic() < until:
        if poller.poll(0):
            return


def _load(name: str, module: str, attr: str | None, search_path: list[str]) -> tuple[Any, Any]:
    try:
        plugin = load_plugin(name, module, attr, search_path)
    except LoadError as exc:
        return None, ("load_error", exc.reason, exc.error_type)
    return plugin, ("loaded", sorted(plugin.hooks))


def _send(connection: Connection, reply: Any) -> None:
    try:
        data = pickle.dumps(reply)
    # A plugin's value (from validate or init) may refuse to pickle in any way.
    except BaseException as exc:  # noqa: BLE001
        failure = CallResult.failure(
            f"The plugin's return value cannot be sent to the host ({exc})",
            ErrorType.RESULT_NOT_SERIALIZABLE,
        )
        data = pickle.dumps(("outcome", failure.to_wire()))
    try:
        connection.send_bytes(data)
    except OSError:
        _exit_group()


def _lifeline(fd: int) -> None:
    """Block until the host's end of the lifeline closes, then take the whole
    process group (the plugin's children too) down."""
    while True:
        try:
            if not os.read(fd, 1):
                break
        except InterruptedError:
            continue
        except OSError:
            break
    _exit_group()


def _exit_group() -> NoReturn:
    try:
        # Only a group of our own: never the zygote's or the host's.
        if os.getpgrp() == os.getpid():
            os.killpg(0, signal.SIGKILL)
    finally:
        os._exit(0)


def _die_with_parent(parent: int) -> None:
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the zygote died before prctl took effect
        os._exit(0)
