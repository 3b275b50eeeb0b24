"""The four hooks a plugwarden plugin implements
(docs/guides/writing-plugins.md#a-plugin-in-one-file).

A plugin is any object (usually a module) holding functions marked with
:data:`hookimpl`. ``validate`` and ``run`` are required; ``init`` and ``health``
are optional.
"""

from __future__ import annotations

from typing import Any

import pluggy

__all__ = ["PROJECT_NAME", "REQUIRED_HOOKS", "hookimpl", "hookspec"]

PROJECT_NAME = "plugwarden"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

REQUIRED_HOOKS = ("validate", "run")


@hookspec(firstresult=True)
def init(config: dict[str, Any]) -> None:
    """Acquire resources (load models). ``config`` holds the operator's settings
    for this plugin plus ``models``: model name -> resolved absolute path."""


@hookspec(firstresult=True)
def validate() -> bool | str | None:
    """Called after ``init``. ``None`` or ``True``: ready. ``False``, a string
    (the reason) or an exception: broken."""


@hookspec(firstresult=True)
def run(tool: str, args: dict[str, Any]) -> Any:
    """Do the work. The result must be JSON-serialisable."""


@hookspec(firstresult=True)
def health() -> dict[str, Any] | None:
    """The plugin's own report, merged into its health record."""
