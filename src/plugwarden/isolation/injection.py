"""Fault injection, worker side (for tests: ``plugwarden.testing.FaultPlan``).

A worker started with ``PLUGWARDEN_FAULTS=<plan file>`` in its environment
reads that JSON plan (again whenever it changes) and makes the matching hook
calls of its plugin misbehave, *in the worker*, where the plugin's own code
would: the guards, the supervisor and the records see exactly what a broken
plugin would make them see. Without the variable nothing here runs; inline
plugins (in the host process) are never faulted.

A plan is a list of faults: ``{"plugin", "hook", "call", "once", "kind",
...}``; ``call`` N is the worker's Nth call of that hook (0: every call),
``once`` lets a single worker of them all take it (a claim file).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

__all__ = ["FAULTS_ENV", "KINDS", "arm", "configure", "wrap"]

FAULTS_ENV = "PLUGWARDEN_FAULTS"
KINDS = (
    "crash", "exit", "signal", "hang", "memory", "slow", "raise", "unserialisable", "flood",
    "child",
)  # fmt: skip

_plan_path: str | None = None
_plan: list[dict[str, Any]] = []
_plan_stamp: float | None = None
_calls: dict[str, int] = {}


_configured: str | None = None  # the plan file the zygote was handed, if any


def configure(path: str | None) -> None:
    """In the zygote: the plan its workers carry out (its host's
    PLUGWARDEN_FAULTS, handed over apart from the environment, which never
    carries PLUGWARDEN_* into a plugin's processes)."""
    global _configured
    _configured = path or None


def arm() -> None:
    """In a worker: read the zygote's plan, if it was given one."""
    global _plan_path
    _plan_path = _configured


def plan_dir() -> str | None:
    """The folder of the plan this worker carries out (its sandbox lets it
    read the plan and claim faults there), or None."""
    return None if _plan_path is None else os.path.dirname(os.path.abspath(_plan_path))


def armed() -> bool:
    return _plan_path is not None


def wrap(plugin: str, hook: str, call: Callable[[], Any]) -> Callable[[], Any]:
    """``call``, or the fault the plan has for this call of ``hook``."""
    if _plan_path is None:
        return call
    _calls[hook] = count = _calls.get(hook, 0) + 1
    for index, fault in enumerate(_current()):
        if fault.get("plugin") != plugin or fault.get("hook", "run") != hook:
            continue
        if fault.get("call", 1) not in (0, count):
            continue
        if fault.get("once") and not _claim(index):
            continue
        return _faulty(fault, call)
    return call


def _faulty(fault: dict[str, Any], call: Callable[[], Any]) -> Callable[[], Any]:
    return lambda: _apply(fault, call)


def _current() -> list[dict[str, Any]]:
    global _plan, _plan_stamp
    assert _plan_path is not None
    try:
        stamp = os.stat(_plan_path).st_mtime_ns
    except OSError:
        return []
    if stamp != _plan_stamp:
        try:
            with open(_plan_path, encoding="utf-8") as file:
                loaded = json.load(file)
        except (OSError, ValueError):
            return _plan  # being rewritten: the last plan read
        _plan, _plan_stamp = loaded if isinstance(loaded, list) else [], stamp
    return _plan


def _claim(index: int) -> bool:
    """Whether this worker is the first to take fault ``index`` (once)."""
    try:
        fd = os.open(f"{_plan_path}.taken.{index}", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.close(fd)
    return True


def _apply(fault: dict[str, Any], call: Callable[[], Any]) -> Any:
    kind = fault.get("kind")
    if kind == "crash":
        ctypes.string_at(0)  # SIGSEGV, as a bug in a C extension would
    elif kind == "exit":
        os._exit(int(fault.get("code", 3)))
    elif kind == "signal":
        number = int(fault.get("signal", signal.SIGKILL))
        signal.signal(number, signal.SIG_DFL)
        signal.raise_signal(number)  # the worker is not PID 1 (its init is): this ends it
    elif kind == "hang":
        while True:
            time.sleep(3600)
    elif kind == "memory":
        blocks = []
        while True:  # until the memory guard kills the worker
            blocks.append(bytearray(b"x" * (16 * 2**20)))
    elif kind == "slow":
        time.sleep(float(fault.get("seconds", 1.0)))
    elif kind == "raise":
        raise RuntimeError(str(fault.get("message", "injected fault")))
    elif kind == "unserialisable":
        return object()
    elif kind == "flood":
        for line in range(int(fault.get("lines", 100_000))):
            print(f"injected flood line {line}", flush=False)
        with contextlib.suppress(OSError, ValueError):
            sys.stdout.flush()
    elif kind == "child":
        # A child that leaves the worker's process group: containment must find it.
        subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(3600)"],
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    else:
        raise RuntimeError(f"unknown injected fault kind {kind!r}; one of {', '.join(KINDS)}")
    return call()
