"""What a plugin project asks of its environment, in its ``pyproject.toml``::

    [tool.plugwarden.environment]
    extras = ["ml"]                       # its own extras to install
    requires = ["facenet-pytorch==2.6.0"] # more requirements beside it
    overrides = ["torch==2.14.1"]         # win over every dependency's pins

so that ``plugwarden install DIRECTORY`` needs no step a user must
remember (a dependency whose metadata pins an old release, installed with
``--no-deps`` by hand, becomes an override here).

Building a project runs its build backend's code: :func:`build_project`
runs where the user who names the directory does (the CLI's process), and
hands the server a wheel, the requirements and the overrides; the server
builds from source only with ``[server] allow_sdist = true``.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from plugwarden.exceptions import InstallFailed

if TYPE_CHECKING:
    from plugwarden.environments.uvtool import Phase, Uv

__all__ = ["BuiltProject", "ProjectEnvironment", "build_project", "project_environment"]

KEYS = ("extras", "requires", "overrides")


@dataclass(frozen=True, slots=True)
class ProjectEnvironment:
    extras: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()
    overrides: tuple[str, ...] = ()


def project_environment(spec: str) -> ProjectEnvironment:
    """What the project directory ``spec`` declares (nothing for any other
    spec); raises :class:`InstallFailed` naming a malformed key."""
    path = os.path.join(spec, "pyproject.toml")
    if not os.path.isfile(path):
        return ProjectEnvironment()
    try:
        with open(path, "rb") as file:
            project = tomllib.load(file)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise InstallFailed(f"{path} cannot be read: {exc}") from None
    table = project.get("tool", {}).get("plugwarden", {}).get("environment", {})
    values = {}
    for key in KEYS:
        found = table.get(key, []) if isinstance(table, dict) else None
        if not isinstance(found, list) or not all(isinstance(v, str) and v for v in found):
            raise InstallFailed(
                f"{path}: [tool.plugwarden.environment] {key} must be a list of strings."
            )
        values[key] = tuple(found)
    return ProjectEnvironment(**values)


@dataclass(frozen=True, slots=True)
class BuiltProject:
    """A project directory as install specs: its wheel (with its extras)
    and what else it requires, and the overrides it declares."""

    specs: tuple[str, ...]
    overrides: tuple[str, ...]


def build_project(directory: str, out: Path, uv: Uv, tell: Phase) -> BuiltProject:
    """Build ``directory`` into a wheel in ``out`` (its own build backend,
    as pip would), with what it asks of its environment."""
    asked = project_environment(directory)
    uv.build_wheel(os.path.abspath(directory), str(out), tell)
    built = sorted(out.glob("*.whl"))
    if not built:
        raise InstallFailed(f"Building {directory} made no wheel.")
    wheel = built[-1]
    spec = str(wheel)
    if asked.extras:
        spec = f"{wheel.name.split('-')[0]}[{','.join(asked.extras)}] @ {wheel.as_uri()}"
    return BuiltProject((spec, *asked.requires), asked.overrides)
