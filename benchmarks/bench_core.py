"""A guarded inline run call vs the same plugin through raw pluggy.

An inline no-op call against its floor, the two-lock ping-pong:
raw pluggy called on a worker thread that the caller waits for with a
deadline (what any call with a hard timeout on another thread costs),
interleaved, with the caller's CPU time, under three conditions."""

from __future__ import annotations

import importlib
import sys
import threading
from typing import Any

import pluggy

from benchmarks._harness import ECHO, WORK, Figure, compare, site_with
from benchmarks.bench_wire import CONDITIONS, condition, interleaved
from plugwarden import Host, hookspecs


def _raw_pluggy(module: str) -> pluggy.PluginManager:
    manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    manager.add_hookspecs(hookspecs)
    manager.register(importlib.import_module(module))
    return manager


class PingPong:
    """The floor: raw pluggy on a worker thread, handed over and awaited
    with two locks, the wait bounded by a deadline."""

    def __init__(self, manager: pluggy.PluginManager) -> None:
        self._manager = manager
        self._go, self._done = threading.Lock(), threading.Lock()
        self._go.acquire()
        self._done.acquire()
        self._args: Any = None
        self._value: Any = None
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            self._go.acquire()
            self._value = self._manager.hook.run(tool="t", args=self._args)
            self._done.release()

    def call(self, args: Any) -> Any:
        self._args = args
        self._go.release()
        if not self._done.acquire(timeout=60):
            raise TimeoutError("the ping-pong thread did not answer")
        return self._value


def floor(name: str, calls: int = 5000, rounds: int = 9) -> Figure:
    site = site_with({"echo": ECHO})
    sys.path.insert(0, str(site))
    with (
        condition(name),
        Host({"defaults": {"isolation": "inline"}}, search_path=[str(site)]) as host,
    ):
        pong = PingPong(_raw_pluggy("bench_echo"))

        def ours() -> object:
            return host.call("echo", "t", {"x": 1})

        def base() -> object:
            return pong.call({"x": 1})

        rounds_of = interleaved(ours, base, calls, rounds, warm=500)
    return rounds_of.figure(
        f"inline no-op call / two-lock ping-pong floor, {name}", "<= 1.3x", lambda r: r <= 1.3
    )


def against_process(name: str, calls: int = 3000, rounds: int = 9) -> Figure:
    """The same no-op plugin inline and process-isolated, in one host,
    interleaved: what the docs say about choosing inline (it is not the
    faster path), measured. Information, no goal."""
    site = site_with({"echo": ECHO, "echo2": ECHO})
    config = {"plugins": {"echo": {"isolation": "inline"}, "echo2": {"isolation": "process"}}}
    with condition(name), Host(config, search_path=[str(site)]) as host:

        def inline() -> object:
            return host.call("echo", "t", {"x": 1})

        def process() -> object:
            return host.call("echo2", "t", {"x": 1})

        rounds_of = interleaved(inline, process, calls, rounds, warm=300)
    return rounds_of.figure(
        f"inline no-op call / process-isolated no-op call, {name}", "information", lambda r: True
    )


def run() -> list[Figure]:
    site = site_with({"echo": ECHO, "work": WORK})
    sys.path.insert(0, str(site))
    figures = []
    with Host({"defaults": {"isolation": "inline"}}, search_path=[str(site)]) as host:
        for name, calls, label in (("work", 300, "1 ms of work"), ("echo", 5000, "no work")):
            manager = _raw_pluggy(f"bench_{name}")
            args = {"x": 1} if name == "echo" else {"n": 20000}
            guarded, raw, ratio = compare(
                lambda n=name, a=args: host.call(n, "t", a),
                lambda m=manager, a=args: m.hook.run(tool="t", args=a),
                calls,
            )
            figures.append(
                Figure(
                    f"inline run ({label}) vs raw pluggy",
                    guarded * 1e6,
                    raw * 1e6,
                    "us",
                    "<= 2.0x (goal 1.5x)",
                    lambda r: r <= 2.0,
                    f"guard overhead {(guarded - raw) * 1e6:.0f} us/call",
                    ratio,
                )
            )
    return (
        figures
        + [floor(name) for name in CONDITIONS]
        + [against_process(name) for name in CONDITIONS]
    )
