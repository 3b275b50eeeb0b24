"""Issue 2: a guarded inline run call vs the same plugin through raw pluggy."""

from __future__ import annotations

import importlib
import sys

import pluggy

from benchmarks._harness import ECHO, WORK, Figure, compare, site_with
from plugwarden import Host, hookspecs


def _raw_pluggy(module: str) -> pluggy.PluginManager:
    manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    manager.add_hookspecs(hookspecs)
    manager.register(importlib.import_module(module))
    return manager


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
    return figures
