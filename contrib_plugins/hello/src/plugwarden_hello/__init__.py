"""plugwarden-hello: the template plugin.

Each hook is a module-level function marked with ``@hookimpl``. plugwarden
calls them in a worker process by default, behind timeout and memory guards,
so a bug here can only ever fail this plugin, never the host.
"""

from __future__ import annotations

import time
from typing import Any

import plugwarden
from plugwarden import hookimpl

_greeting = "Hello"


@hookimpl
def init(config: dict[str, Any]) -> None:
    """Acquire resources. ``config`` is the operator's [plugins.hello] table,
    plus ``models`` (name -> absolute path) for model files in the manifest."""
    global _greeting
    _greeting = str(config.get("greeting", "Hello"))


@hookimpl
def validate() -> bool | str:
    """Called right after init: True (or None) when ready, else the reason."""
    return True if _greeting else "greeting is empty; set [plugins.hello] greeting"


@hookimpl
def run(tool: str, args: dict[str, Any]) -> Any:
    """Do the work. The result must be JSON-serialisable."""
    if tool == "greet":
        return {"message": f"{_greeting}, {args.get('name', 'world')}!"}
    if tool == "echo":
        return args
    if tool == "count":
        return _count(int(args.get("to", 10)), float(args.get("every_s", 0.5)))
    raise ValueError(f"unknown tool {tool!r}")  # unreachable: the host checks the manifest


def _count(to: int, every_s: float) -> dict[str, Any]:
    """A long call, made for jobs (``plugwarden run hello count --job``):
    it reports its progress and stops early when the job is cancelled. Both
    calls are cheap, and do nothing when the call is not a job."""
    for done in range(to):
        if plugwarden.cancelled():
            return {"counted": done, "cancelled": True}
        plugwarden.progress(done, to, f"counting {done + 1} of {to}")
        time.sleep(every_s)
    plugwarden.progress(to, to, "done")
    return {"counted": to, "cancelled": False}


@hookimpl
def health() -> dict[str, Any]:
    """The plugin's own report, merged into its health record."""
    return {"greeting": _greeting}
