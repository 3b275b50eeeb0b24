"""plugwarden-hello: the template plugin.

Each hook is a module-level function marked with ``@hookimpl``. plugwarden
calls them in a worker process by default, behind timeout and memory guards,
so a bug here can only ever fail this plugin, never the host.
"""

from __future__ import annotations

from typing import Any

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
    raise ValueError(f"unknown tool {tool!r}")  # unreachable: the host checks the manifest


@hookimpl
def health() -> dict[str, Any]:
    """The plugin's own report, merged into its health record."""
    return {"greeting": _greeting}
