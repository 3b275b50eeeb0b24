"""Import a plugin, register it with its own pluggy manager, check its hooks
against the specs, and put a :class:`GuardedHook` around each one.

The same code runs in the host (``inline``) and in a worker (``process``).
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
import site
import sys
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pluggy

from plugwarden import hookspecs
from plugwarden.error_types import ErrorType
from plugwarden.exceptions import LoadError, describe
from plugwarden.isolation.guards import GuardedHook
from plugwarden.preflight.causes import REINSTALL, import_failure_reason, missing_attribute_reason
from plugwarden.result import CallResult

__all__ = ["HOOKS", "LoadedPlugin", "load_plugin", "plugin_manager"]

log = logging.getLogger("plugwarden.loader")

HOOKS = ("init", "validate", "run", "health")
_SIGNATURES = {
    "init": "init(config)",
    "validate": "validate()",
    "run": "run(tool, args)",
    "health": "health()",
}


@dataclass(slots=True)
class LoadedPlugin:
    name: str
    manager: pluggy.PluginManager
    hooks: frozenset[str]
    # hook -> its one guarded implementation and the arguments it takes: what
    # pluggy's caller would do for a single plain implementation, without
    # its machinery (~3 us a call).
    direct: dict[str, tuple[Callable[..., Any], tuple[str, ...]]] = field(default_factory=dict)

    def call(self, hook: str, kwargs: dict[str, Any]) -> CallResult:
        """Call one guarded hook; an optional hook not implemented is a no-op."""
        if hook not in self.hooks:
            return CallResult(True, hook=hook)
        direct = self.direct.get(hook)
        if direct is not None:
            function, argnames = direct
            result = function(*[kwargs[arg] for arg in argnames])
        else:
            result = getattr(self.manager.hook, hook)(**kwargs)
        if not isinstance(result, CallResult):  # pragma: no cover - pluggy invariant
            return CallResult.failure("hook returned no record", ErrorType.INTERNAL, hook=hook)
        return result


def plugin_manager() -> pluggy.PluginManager:
    """A pluggy manager with plugwarden's hookspecs and nothing registered."""
    manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    manager.add_hookspecs(hookspecs)
    return manager


def load_plugin(
    name: str,
    module: str,
    attr: str | None,
    search_path: Sequence[str],
    manager: pluggy.PluginManager | None = None,
) -> LoadedPlugin:
    """Import and register plugin ``name`` (with ``manager``, an unused one
    from :func:`plugin_manager`, if given). Raises :class:`LoadError` only."""
    holder = _import(module, attr, search_path)
    manager = manager if manager is not None else plugin_manager()
    try:
        guarded = _guarded(manager, holder, name)
        manager.register(guarded, name=name)
    except LoadError:
        raise
    # Registering reads the plugin's attributes, which may run its code.
    except BaseException as exc:  # noqa: BLE001
        raise LoadError(
            f"Plugin rejected while registering: {describe(exc)}", type(exc).__name__
        ) from None
    implemented = frozenset(hook for hook in HOOKS if getattr(manager.hook, hook).get_hookimpls())
    missing = [hook for hook in hookspecs.REQUIRED_HOOKS if hook not in implemented]
    unmarked = [hook for hook in missing if _defined(holder, hook)]  # the likely cause
    if unmarked:
        names = " and ".join(f"{hook}()" for hook in unmarked)
        raise LoadError(
            f"{names} {'is' if len(unmarked) == 1 else 'are'} defined but not marked "
            "@hookimpl, so pluggy does not see it: put @hookimpl (from plugwarden import "
            f"hookimpl) on {'it' if len(unmarked) == 1 else 'each'}, then {REINSTALL}.",
            ErrorType.MISSING_HOOK,
        )
    if missing:
        raise LoadError(
            "Plugin does not implement required hook(s) "
            + ", ".join(f"'{_SIGNATURES[h]}'" for h in missing)
            + f". Add them, each marked with @plugwarden.hookimpl, then {REINSTALL}.",
            ErrorType.MISSING_HOOK,
        )
    return LoadedPlugin(name, manager, implemented, _direct(manager, implemented))


def _defined(holder: object, hook: str) -> bool:
    """Whether ``holder`` has a function named ``hook`` (read without
    running any of its code: no property or __getattr__ is called)."""
    try:
        found = inspect.getattr_static(holder, hook)
    except AttributeError:
        return False
    return inspect.isfunction(found) or inspect.ismethod(found) or isinstance(found, staticmethod)


def _direct(
    manager: pluggy.PluginManager, implemented: frozenset[str]
) -> dict[str, tuple[Callable[..., Any], tuple[str, ...]]]:
    """Each hook with exactly one plain implementation (every spec is
    ``firstresult``), to be called without pluggy's caller; a wrapper keeps
    pluggy's."""
    direct = {}
    for hook in implemented:
        impls = getattr(manager.hook, hook).get_hookimpls()
        if len(impls) == 1 and not (impls[0].hookwrapper or impls[0].wrapper):
            direct[hook] = (impls[0].function, tuple(impls[0].argnames))
    return direct


def _import(module: str, attr: str | None, search_path: Sequence[str]) -> object:
    added = [entry for entry in search_path if entry not in sys.path]
    for entry in reversed(added):
        sys.path.insert(0, entry)
    # Their .pth files, here (in a worker's sandbox), never in its zygote;
    # once per folder, however many names the path gives it.
    for entry in dict.fromkeys(os.path.realpath(entry) for entry in added):
        site.addsitedir(entry)
    # A restart (or a second host in this process) imports the plugin afresh:
    # forget its own package's modules and any stale directory listings.
    top = module.split(".")[0]
    for loaded in [m for m in sys.modules if m == top or m.startswith(top + ".")]:
        del sys.modules[loaded]
    try:
        holder: object = _import_module(module)
    # A broad except is what this library is for: a plugin's import may raise
    # anything, SystemExit included, and that is the plugin's fault only.
    except BaseException as exc:
        log.warning("plugin module %r failed to import", module, exc_info=True)
        raise LoadError(import_failure_reason(module, exc), type(exc).__name__) from None
    try:
        for part in (attr or "").split(".") if attr else ():
            holder = getattr(holder, part)
        if inspect.isclass(holder):
            holder = holder()
    # A broad except is what this library is for: a plugin's import may raise
    # anything, SystemExit included, and that is the plugin's fault only.
    except BaseException as exc:
        log.warning("plugin object %r:%s failed", module, attr, exc_info=True)
        if isinstance(exc, AttributeError) and attr and not inspect.isclass(holder):
            reason = missing_attribute_reason(module, attr, exc)
        else:
            reason = import_failure_reason(module, exc)
        raise LoadError(reason, type(exc).__name__) from None
    return holder


def _import_module(module: str) -> object:
    """Import ``module``. The path finders' directory listings are trusted
    first (each is read again when its directory's mtime changes, as an
    install does); only when the module is not found are they all dropped
    (a directory that did not exist before...) and the import tried again.
    Dropping them for every import made each worker read every directory
    on the path again (~0.5 ms a worker; start)."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        # The plugin's own module (or a parent package), not one it imports.
        if not exc.name or not (module == exc.name or module.startswith(exc.name + ".")):
            raise
    importlib.invalidate_caches()
    return importlib.import_module(module)


def _guarded(manager: pluggy.PluginManager, holder: object, name: str) -> object:
    """A plugin object holding each of ``holder``'s hook implementations
    inside a :class:`GuardedHook`, ready to register. Hook names and
    arguments are checked against the specs first, with a reason that names
    the hook and what is wrong (pluggy's own message is terse)."""
    guarded = types.SimpleNamespace()
    for attr_name in dir(holder):
        opts = manager.parse_hookimpl_opts(holder, attr_name)
        if opts is None:
            continue
        hook = opts.get("specname") or attr_name
        if hook not in _SIGNATURES:
            raise LoadError(
                f"Unknown hook '{hook}' marked with @plugwarden.hookimpl. "
                f"Hooks are: {', '.join(_SIGNATURES.values())}. Rename it, then {REINSTALL}.",
                ErrorType.UNKNOWN_HOOK,
            )
        function = getattr(holder, attr_name)
        impl_args = _required_args(function)
        spec_args = getattr(manager.hook, hook).spec.argnames
        extra = [arg for arg in impl_args if arg not in spec_args]
        if extra:
            raise LoadError(
                f"Hook '{hook}' takes argument(s) {', '.join(map(repr, extra))} that the spec "
                f"does not pass. Expected {_SIGNATURES[hook]} (a subset of its arguments); "
                f"fix the signature, then {REINSTALL}.",
                ErrorType.HOOK_SIGNATURE,
            )
        setattr(guarded, attr_name, GuardedHook(function, hook, name))
    return guarded


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
