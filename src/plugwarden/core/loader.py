"""Import a plugin, register it with its own pluggy manager, check its hooks
against the specs, and put a :class:`GuardedHook` around each one.

The same code runs in the host (``inline``) and in a worker (``process``).
"""

from __future__ import annotations

import importlib
import inspect
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pluggy

from plugwarden import hookspecs
from plugwarden.core.causes import import_failure_reason
from plugwarden.core.guards import GuardedHook, Outcome, describe

__all__ = ["HOOKS", "LoadError", "LoadedPlugin", "load_plugin"]

log = logging.getLogger("plugwarden.loader")

HOOKS = ("init", "validate", "run", "health")
_SIGNATURES = {
    "init": "init(config)",
    "validate": "validate()",
    "run": "run(tool, args)",
    "health": "health()",
}


class LoadError(Exception):
    """The plugin cannot be loaded; ``reason`` is the actionable sentence."""

    def __init__(self, reason: str, error_type: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.error_type = error_type


@dataclass(slots=True)
class LoadedPlugin:
    name: str
    manager: pluggy.PluginManager
    hooks: frozenset[str]

    def call(self, hook: str, kwargs: dict[str, Any]) -> Outcome:
        """Call one guarded hook; an optional hook not implemented is a no-op."""
        if hook not in self.hooks:
            return Outcome(True)
        outcome = getattr(self.manager.hook, hook)(**kwargs)
        if not isinstance(outcome, Outcome):  # pragma: no cover - pluggy invariant
            return Outcome(False, error="hook returned no outcome", error_type="InternalError")
        return outcome


def load_plugin(
    name: str, module: str, attr: str | None, search_path: Sequence[str]
) -> LoadedPlugin:
    """Import and register plugin ``name``. Raises :class:`LoadError` only."""
    holder = _import(module, attr, search_path)
    manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    manager.add_hookspecs(hookspecs)
    try:
        _check_hooks(manager, holder)
        manager.register(holder, name=name)
    except LoadError:
        raise
    # Registering reads the plugin's attributes, which may run its code.
    except BaseException as exc:  # noqa: BLE001
        raise LoadError(
            f"Plugin rejected while registering: {describe(exc)}", type(exc).__name__
        ) from None
    implemented = frozenset(hook for hook in HOOKS if getattr(manager.hook, hook).get_hookimpls())
    missing = [hook for hook in hookspecs.REQUIRED_HOOKS if hook not in implemented]
    if missing:
        raise LoadError(
            "Plugin does not implement required hook(s) "
            + ", ".join(f"'{_SIGNATURES[h]}'" for h in missing)
            + ". Add them, each marked with @plugwarden.hookimpl.",
            "MissingHook",
        )
    for hook in implemented:
        for impl in getattr(manager.hook, hook).get_hookimpls():
            impl.function = GuardedHook(impl.function, hook, name)
    return LoadedPlugin(name, manager, implemented)


def _import(module: str, attr: str | None, search_path: Sequence[str]) -> object:
    for entry in reversed(search_path):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    # A restart (or a second host in this process) imports the plugin afresh:
    # forget its own package's modules and any stale directory listings.
    top = module.split(".")[0]
    for loaded in [m for m in sys.modules if m == top or m.startswith(top + ".")]:
        del sys.modules[loaded]
    importlib.invalidate_caches()
    try:
        holder: object = importlib.import_module(module)
        for part in (attr or "").split(".") if attr else ():
            holder = getattr(holder, part)
        if inspect.isclass(holder):
            holder = holder()
    # A broad except is what this library is for: a plugin's import may raise
    # anything, SystemExit included, and that is the plugin's fault only.
    except BaseException as exc:
        log.warning("plugin module %r failed to import", module, exc_info=True)
        raise LoadError(import_failure_reason(module, exc), type(exc).__name__) from None
    return holder


def _check_hooks(manager: pluggy.PluginManager, holder: object) -> None:
    """Hook names and arguments checked against the specs, with a reason
    that names the hook and what is wrong (pluggy's own message is terse)."""
    for attr_name in dir(holder):
        opts = manager.parse_hookimpl_opts(holder, attr_name)
        if opts is None:
            continue
        hook = opts.get("specname") or attr_name
        if hook not in _SIGNATURES:
            raise LoadError(
                f"Unknown hook '{hook}' marked with @plugwarden.hookimpl. "
                f"Hooks are: {', '.join(_SIGNATURES.values())}.",
                "UnknownHook",
            )
        impl_args = _required_args(getattr(holder, attr_name))
        spec_args = getattr(manager.hook, hook).spec.argnames
        extra = [arg for arg in impl_args if arg not in spec_args]
        if extra:
            raise LoadError(
                f"Hook '{hook}' takes argument(s) {', '.join(map(repr, extra))} that the spec "
                f"does not pass. Expected {_SIGNATURES[hook]} (a subset of its arguments).",
                "HookSignatureMismatch",
            )


def _required_args(function: Any) -> list[str]:
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return []
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [
        p.name
        for p in signature.parameters.values()
        if p.kind in positional and p.default is inspect.Parameter.empty
    ]
