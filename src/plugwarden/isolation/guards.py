"""Guards around every hook implementation (docs/guides/isolation.md).

:class:`GuardedHook` is a wrapt proxy put around each hook implementation
*before* it is registered with pluggy (pluggy declares a registered
``HookImpl.function`` final). It turns whatever the plugin does (a value,
any ``BaseException``, an unserialisable result) into a
:class:`~plugwarden.result.CallResult`, and times the call. It runs
wherever the plugin runs, in the host (``inline``) or in a worker; the
runners enforce the timeout and memory limits from outside, since a plugin
cannot be trusted to stop itself.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import wrapt

from plugwarden.isolation import injection
from plugwarden.result import CallResult

__all__ = ["ENCODED_HOOKS", "GuardedHook"]

log = logging.getLogger("plugwarden.guards")

# Hooks whose value leaves the plugin as JSON (a result, a health report).
ENCODED_HOOKS = frozenset({"run", "health"})


class GuardedHook(wrapt.FunctionWrapper):  # type: ignore[misc,type-arg,unused-ignore]
    """A hook implementation that never raises and always returns a CallResult."""

    def __init__(self, wrapped: Any, hook: str, plugin: str) -> None:
        super().__init__(wrapped, _Capture(hook, plugin))


@dataclass(frozen=True, slots=True)
class _Capture:
    """The wrapt wrapper: runs the implementation, captures what it did."""

    hook: str
    plugin: str

    def __call__(self, wrapped: Any, instance: Any, args: Any, kwargs: Any) -> CallResult:
        # A failing health hook is reported by the health checks, once per
        # change of health, not with a traceback per interval.
        logger = None if self.hook == "health" else log
        call = lambda: wrapped(*args, **kwargs)  # noqa: E731
        if injection.armed():  # a test's fault plan (worker processes only)
            call = injection.wrap(self.plugin, self.hook, call)
        return CallResult.from_call(
            call,
            hook=self.hook,
            encode=self.hook in ENCODED_HOOKS,
            log=logger,
        )
