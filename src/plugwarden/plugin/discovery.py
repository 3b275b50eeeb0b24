"""Entry-point discovery
(docs/guides/writing-plugins.md#a-plugin-in-one-file): one plugin per entry
point of the group ``plugwarden.plugins``, found with importlib.metadata,
nothing imported."""

from __future__ import annotations

import importlib.machinery
import re
import sys
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from importlib.metadata import Distribution, distributions
from pathlib import Path
from typing import TypeVar

from packaging.utils import canonicalize_name

from plugwarden.plugin.distmeta import DistHead, read_head
from plugwarden.plugin.venv import PluginEnvironment

__all__ = ["ENTRY_POINT_GROUP", "Discovery", "PluginSource", "discover"]

ENTRY_POINT_GROUP = "plugwarden.plugins"
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class PluginSource:
    """Where one plugin comes from, known without importing its code."""

    name: str
    value: str
    dist_name: str
    dist_version: str
    requires: tuple[str, ...]
    package_dir: Path | None
    search_path: tuple[str, ...]
    # Its own environment (``plugwarden install``); None: the host's (shared).
    environment: PluginEnvironment | None = None

    @property
    def module(self) -> str:
        return self.value.partition(":")[0].strip()

    @property
    def attr(self) -> str | None:
        return self.value.partition(":")[2].strip() or None

    @property
    def origin(self) -> str:
        return f"{self.dist_name} {self.dist_version}"


@dataclass(frozen=True, slots=True)
class Discovery:
    plugins: dict[str, PluginSource]
    duplicates: dict[str, tuple[PluginSource, ...]]
    unaddressable: dict[str, PluginSource] = field(default_factory=dict)

    def only(self, names: Collection[str]) -> Discovery:
        """What was found of ``names`` only (the rest is not there)."""
        wanted = set(names)

        def keep(found: dict[str, T]) -> dict[str, T]:
            return {name: value for name, value in found.items() if name in wanted}

        return Discovery(keep(self.plugins), keep(self.duplicates), keep(self.unaddressable))

    def merged(self, other: Discovery) -> Discovery:
        """Both findings as one: a name found in both is claimed twice."""
        plugins, duplicates = dict(self.plugins), dict(self.duplicates)
        for name, source in other.plugins.items():
            if name in plugins:
                duplicates[name] = (plugins.pop(name), source)
            elif name in duplicates:
                duplicates[name] = (*duplicates[name], source)
            else:
                plugins[name] = source
        for name, claimants in other.duplicates.items():
            duplicates[name] = (*duplicates.get(name, ()), *claimants)
            if name in plugins:
                duplicates[name] = (plugins.pop(name), *duplicates[name])
        return Discovery(plugins, duplicates, {**self.unaddressable, **other.unaddressable})


# A name must be a URL path segment as it is (/v1/plugins/NAME/run).
ADDRESSABLE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def discover(
    path: Sequence[str] | None = None, environment: PluginEnvironment | None = None
) -> Discovery:
    """Every plugin entry point on ``path`` (default ``sys.path``), or in
    ``environment`` (its own site-packages) when given.

    The first copy of a distribution found on the path wins, as it would for
    an import; a plugin name claimed by two different distributions is put in
    ``duplicates`` with every claimant, never silently shadowed."""
    if environment is not None:
        path = environment.site_packages
    search = tuple(sys.path if path is None else path)
    seen_dists: set[str] = set()
    claims: dict[str, list[PluginSource]] = {}
    for dist in distributions(path=list(search)):
        head = read_head(dist)
        dist_name = head.name or "unknown"
        key = canonicalize_name(dist_name)
        if key in seen_dists:
            continue  # shadowed by a copy earlier on the path: an import would not see it
        seen_dists.add(key)
        if ENTRY_POINT_GROUP not in (dist.read_text("entry_points.txt") or ""):
            continue  # most distributions: no plugin, and nothing more to read
        for entry_point in dist.entry_points:
            if entry_point.group != ENTRY_POINT_GROUP:
                continue
            source = _source(entry_point.name, entry_point.value, dist, head, search, environment)
            claims.setdefault(source.name, []).append(source)
    unaddressable = {
        name: found[0] for name, found in claims.items() if not ADDRESSABLE.fullmatch(name)
    }
    claims = {name: found for name, found in claims.items() if name not in unaddressable}
    plugins = {name: found[0] for name, found in claims.items() if len(found) == 1}
    duplicates = {name: tuple(found) for name, found in claims.items() if len(found) > 1}
    return Discovery(plugins, duplicates, unaddressable)


def _source(
    name: str,
    value: str,
    dist: Distribution,
    head: DistHead,
    search: tuple[str, ...],
    environment: PluginEnvironment | None,
) -> PluginSource:
    module = value.partition(":")[0].strip()
    return PluginSource(
        name=name,
        value=value,
        dist_name=head.name or "unknown",
        dist_version=head.version or "0",
        # None: an egg-info without Requires-Dist headers: its requires.txt.
        requires=head.requires if head.requires is not None else tuple(dist.requires or ()),
        package_dir=package_dir(module.split(".")[0], search),
        search_path=search,
        environment=environment,
    )


def package_dir(top_level: str, search: Sequence[str]) -> Path | None:
    """The directory of a top-level package (or of a single-module plugin),
    found by the path finder, which does not execute the package."""
    spec = importlib.machinery.PathFinder.find_spec(top_level, list(search))
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(spec.origin).parent if spec.origin else None
