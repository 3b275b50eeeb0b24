"""Package pre-flight: the distribution's ``Requires-Dist`` and the manifest's
``packages``, checked against what is installed without importing anything."""

from __future__ import annotations

import importlib.machinery
import sys
import threading
from importlib.metadata import distributions

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from plugwarden.plugin.distmeta import read_head
from plugwarden.plugin.lifecycle import State
from plugwarden.preflight.causes import pip_name
from plugwarden.preflight.context import PreflightContext, Problem

__all__ = ["check_packages", "check_requirements"]

_index_lock = threading.Lock()


def _installed(context: PreflightContext) -> dict[str, str]:
    """Installed distributions (canonical name -> version), read once per start
    (plugins are checked concurrently: the first builds it, the others wait)."""
    with _index_lock:
        return _build_index(context)


def _build_index(context: PreflightContext) -> dict[str, str]:
    search = import_search(context)
    key = "installed" if context.source.environment is None else f"installed:{search}"
    index: dict[str, str] | None = context.shared.get(key)
    if index is None:
        index = {}
        for dist in distributions(path=search):
            head = read_head(dist)
            if head.name and head.version:
                index.setdefault(canonicalize_name(head.name), head.version)
        context.shared[key] = index
    return index


def _overridden(context: PreflightContext, name: str) -> bool:
    """Whether the plugin's own environment was resolved with an override
    for ``name`` (the operator's or the project's word over its pins)."""
    environment = context.source.environment
    return environment is not None and canonicalize_name(name) in environment.overridden


def import_search(context: PreflightContext) -> list[str]:
    """What the plugin's import will see: its own path, then the host's; in
    an environment of its own, that environment's path alone."""
    environment = context.source.environment
    if environment is not None:
        return list(environment.sys_path)
    return list(dict.fromkeys([*context.source.search_path, *sys.path]))


def check_requirements(context: PreflightContext) -> list[Problem]:
    installed = _installed(context)
    problems = []
    for line in context.source.requires:
        try:
            requirement = Requirement(line)
        except InvalidRequirement as exc:
            problems.append(
                Problem(
                    State.FAILED,
                    f"Distribution {context.source.origin} declares an invalid requirement "
                    f"{line!r} ({exc}). Fix its Requires-Dist metadata.",
                )
            )
            continue
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        spec = f"{requirement.name}{requirement.specifier}"
        hint = f"pip install '{spec}'" if requirement.specifier else f"pip install {spec}"
        version = installed.get(canonicalize_name(requirement.name))
        if version is None:
            problems.append(
                Problem(
                    State.UNAVAILABLE,
                    f"Missing package '{requirement.name}'. Install with: {hint}",
                )
            )
        elif (
            requirement.specifier
            and not requirement.specifier.contains(version, prereleases=True)
            and not _overridden(context, requirement.name)
        ):
            problems.append(
                Problem(
                    State.UNAVAILABLE,
                    f"Package '{requirement.name}' {version} is installed but "
                    f"{context.source.dist_name} needs {spec}. Install with: {hint}",
                )
            )
    return problems


def check_packages(context: PreflightContext) -> list[Problem]:
    missing = [
        name
        for name in context.manifest.packages
        if not (
            _importable(name, context.source.search_path)
            if context.source.environment is None
            else _found_in(name, import_search(context))
        )
    ]
    install = context.manifest.install
    if missing and install:  # the plugin's own command installs them all
        names = ", ".join(f"'{name}'" for name in missing)
        return [Problem(State.UNAVAILABLE, f"Missing package(s) {names}. Install with: {install}")]
    return [
        Problem(
            State.UNAVAILABLE,
            f"Missing package '{name}'. Install with: pip install {pip_name(name)}",
        )
        for name in missing
    ]


def _found_in(name: str, search: list[str]) -> bool:
    """Whether the top-level package of ``name`` is on ``search`` (a
    plugin's own environment: nothing the host has imported counts)."""
    top = name.split(".")[0]
    if top in sys.builtin_module_names:
        return True
    return importlib.machinery.PathFinder.find_spec(top, search) is not None


def _importable(name: str, search: tuple[str, ...]) -> bool:
    """Whether ``name`` could be imported, found without executing any package."""
    if name in sys.modules:
        return True
    top, *rest = name.split(".")
    module = sys.modules.get(top)
    if module is not None:
        spec = module.__spec__
    elif top in sys.builtin_module_names:
        return not rest
    else:
        spec = importlib.machinery.FrozenImporter.find_spec(
            top
        ) or importlib.machinery.PathFinder.find_spec(top, [*search, *sys.path])
    if spec is None:
        return False
    for part in rest:
        locations = getattr(spec, "submodule_search_locations", None)
        if not locations:
            return False
        spec = importlib.machinery.PathFinder.find_spec(part, list(locations))
        if spec is None:
            return False
    return True
