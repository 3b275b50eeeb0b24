"""The pre-flight: checks that run before any plugin code (docs/guides/states.md).

A check takes the :class:`PreflightContext` and returns the problems it found;
more checks (GPU, model files) join by being added to ``PREFLIGHT``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from plugwarden.plugin.discovery import PluginSource
from plugwarden.plugin.lifecycle import State
from plugwarden.plugin.manifest import Manifest

__all__ = ["Check", "PreflightContext", "Problem", "Verdict", "run_preflight"]


@dataclass(frozen=True, slots=True)
class Problem:
    state: State  # UNAVAILABLE (something missing) or FAILED (something broken)
    reason: str


@dataclass(slots=True)
class PreflightContext:
    source: PluginSource
    manifest: Manifest
    settings: Mapping[str, Any]
    models_dir: str | None = None  # the operator's [plugins.NAME] models_dir
    # What a check found and what init needs to know (resolved model paths).
    facts: dict[str, Any] = field(default_factory=dict)
    # Shared across all plugins of one host start (installed distributions).
    shared: dict[str, Any] = field(default_factory=dict)


Check = Callable[[PreflightContext], list[Problem]]


@dataclass(frozen=True, slots=True)
class Verdict:
    state: State | None  # None: every check passed
    reason: str


def run_preflight(context: PreflightContext, checks: list[Check]) -> Verdict:
    problems = [problem for check in checks for problem in check(context)]
    if not problems:
        return Verdict(None, "")
    broken = [p for p in problems if p.state is State.FAILED]
    state = State.FAILED if broken else State.UNAVAILABLE
    return Verdict(state, "; ".join(p.reason for p in (broken or problems)))
