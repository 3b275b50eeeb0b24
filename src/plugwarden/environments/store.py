"""Where plugins' own environments live (``[server] plugins_dir``)::

    plugins_dir/
      installed.json      which environment is each plugin's current and previous
      envs/ID/            one virtual environment per installed version
      envs/ID/plugwarden-env.json   what it holds (specs, Python, path, packages)
      runtime/            the host's plugwarden for the worker side (runtime.py)

An environment is built in full before it is named in ``installed.json``
(written whole, then renamed): a host that dies mid-install leaves a folder
that no plugin uses, removed at the next start. Two environments share
uv's cache through hard links (a second environment holding the same large
package costs almost no disk).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import secrets
import shutil
import subprocess
import sys
import sysconfig
import threading
import time
from dataclasses import dataclass, field
from importlib.metadata import distributions
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from plugwarden.environments.project import build_project
from plugwarden.environments.runtime import host_runtime
from plugwarden.environments.uvtool import Phase, Uv
from plugwarden.exceptions import InstallFailed
from plugwarden.plugin.distmeta import read_head
from plugwarden.plugin.venv import PluginEnvironment

__all__ = ["EnvironmentStore", "InstallPlan", "spec_problem"]

log = logging.getLogger("plugwarden.environments")

INDEX = "installed.json"
ENV_ID = re.compile(r"[0-9]+-[0-9a-f]{6}")  # time, then a random part
ABOUT = "plugwarden-env.json"
# Run with -S: no site-packages, so none of the environment's code (a .pth
# file) runs in the host's process tree; its site-packages are added apart.
_PATH_PROBE = "import json, sys; print(json.dumps(sys.path[1:]))"


@dataclass(frozen=True, slots=True)
class InstallPlan:
    """What to install: ``specs`` as given (requirements, wheels, project
    directories), and the overrides a project declares."""

    specs: tuple[str, ...]
    allow_sdist: bool = False
    overrides: tuple[str, ...] = field(default=())

    @classmethod
    def of(
        cls, specs: tuple[str, ...], allow_sdist: bool, overrides: tuple[str, ...] = ()
    ) -> InstallPlan:
        """The plan for ``specs``; raises :class:`InstallFailed` for a spec
        that is not one requirement, or a project directory to build
        without ``allow_sdist``."""
        problem = next((found for found in map(spec_problem, (*specs, *overrides)) if found), None)
        if problem is not None or not specs:
            raise InstallFailed(problem or "Nothing to install: give a requirement, a wheel or "
                                "a project directory.")  # fmt: skip
        directories = [spec for spec in specs if os.path.isdir(spec)]
        if directories and not allow_sdist:
            raise InstallFailed(
                f"{directories[0]} is a project directory: building it runs its build code on "
                "the server. Build it into a wheel first (the plugwarden install command does, "
                "as the user running it), or allow builds: [server] allow_sdist = true."
            )
        return cls(specs, allow_sdist, overrides)


MAX_SPEC = 4096


def spec_problem(spec: object) -> str | None:
    """What is wrong with one install spec, or None. A spec is never an
    option of the installer's (it would change where packages come from)."""
    if not isinstance(spec, str) or not spec.strip():
        return f"Each spec must be a non-empty string, got {spec!r:.60}."
    if len(spec) > MAX_SPEC or any(c in spec for c in "\0\r\n"):
        return f"A spec is one line of at most {MAX_SPEC} characters."
    if spec.lstrip().startswith("-"):
        return (
            f"{spec[:60]!r} looks like an installer option: give a requirement, a wheel or a "
            "project directory (index settings are the operator's: UV_INDEX_URL...)."
        )
    if not _path_like(spec):
        try:
            Requirement(spec)
        except InvalidRequirement as exc:
            first = str(exc).splitlines()[0]
            return (
                f"{spec[:60]!r} is neither a requirement (name, extras, version: 'pkg>=1.2') "
                f"nor a path to a wheel or a project: {first[:200]}"
            )
    return None


def _path_like(spec: str) -> bool:
    """A wheel, an archive or a project directory, named by its path."""
    return os.sep in spec or spec.startswith(".") or spec.endswith((".whl", ".tar.gz", ".zip"))


class EnvironmentStore:
    """The environments under ``root``; thread-safe (one change at a time)."""

    def __init__(self, root: Path, uv: Uv | None = None) -> None:
        self.root = root
        self._uv = uv
        self._lock = threading.RLock()

    @property
    def uv(self) -> Uv:
        if self._uv is None:
            self._uv = Uv()
        return self._uv

    # -- reading -----------------------------------------------------------------

    def index(self) -> dict[str, dict[str, Any]]:
        """Plugin name -> {"current": ID, "previous": ID or None}."""
        return self._read_index() or {}

    def _read_index(self) -> dict[str, dict[str, Any]] | None:
        """The index; None when it cannot be read (logged)."""
        path = self.root / INDEX
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.error("%s cannot be read (%s): no plugin environment is used", path, exc)
            return None
        plugins = data.get("plugins") if isinstance(data, dict) else None
        if not isinstance(plugins, dict):
            log.error("%s holds no plugins table: no plugin environment is used", path)
            return None
        return plugins

    def environment(self, env_id: str) -> PluginEnvironment:
        """The environment ``env_id``; raises :class:`InstallFailed` when it is gone."""
        root = self._folder(env_id)
        try:
            about = json.loads((root / ABOUT).read_text())
        except (OSError, ValueError) as exc:
            raise InstallFailed(f"Environment {root} is missing or damaged ({exc}).") from None
        return PluginEnvironment(
            id=env_id,
            root=str(root),
            python=about["python"],
            sys_path=tuple(about["sys_path"]),
            runtime=about["runtime"],
            packages=tuple((name, ver) for name, ver in about.get("packages", {}).items()),
            overridden=frozenset(about.get("overridden", ())),
        )

    def specs(self, env_id: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """What ``env_id`` was installed from: its specs and overrides."""
        try:
            about = json.loads((self._folder(env_id) / ABOUT).read_text())
        except (OSError, ValueError):
            return (), ()
        return tuple(about.get("specs", ())), tuple(about.get("overrides", ()))

    def current(self) -> dict[str, PluginEnvironment]:
        """Each installed plugin's current environment (a damaged one is logged, left out)."""
        found = {}
        for name, entry in self.index().items():
            environment = self._current_of(name, entry)
            if environment is not None:
                found[name] = environment
        return found

    def installed(self, name: str) -> PluginEnvironment | None:
        """``name``'s current environment; None when it has none here."""
        entry = self.index().get(name)
        return None if entry is None else self._current_of(name, entry)

    def _current_of(self, name: str, entry: dict[str, Any]) -> PluginEnvironment | None:
        """The current environment of index ``entry``, with its version history."""
        try:
            environment = self.environment(str(entry.get("current")))
        except InstallFailed as exc:
            log.error("plugin %r: %s Reinstall it (plugwarden install).", name, exc.reason)
            return None
        history = tuple(v for v in entry.get("history", []) if isinstance(v, dict))
        return dataclasses.replace(environment, versions=history)

    def previous(self, name: str) -> PluginEnvironment | None:
        entry = self.index().get(name) or {}
        return self.environment(entry["previous"]) if entry.get("previous") else None

    # -- building ------------------------------------------------------------------

    def build(self, plan: InstallPlan, tell: Phase) -> PluginEnvironment:
        """A new environment holding ``plan``; named by no plugin yet.
        Raises :class:`InstallFailed` (and leaves nothing behind)."""
        env_id = f"{int(time.time())}-{secrets.token_hex(3)}"
        root = self.root / "envs" / env_id
        runtime = host_runtime(self.root / "runtime")
        try:
            root.parent.mkdir(parents=True, exist_ok=True)
            self.uv.venv(str(root), sys.executable)
            python = str(root / "bin" / "python")
            specs, declared = self._specs_of(plan, root, tell)
            overrides = root / "overrides.txt"
            overrides.write_text("\n".join([runtime.requirement(), *declared]) + "\n")
            requirements = [*specs, "plugwarden"]
            self.uv.install(
                python, requirements, str(overrides), allow_sdist=plan.allow_sdist, tell=tell
            )
            probed = _output([python, "-I", "-S", "-c", _PATH_PROBE], {"PATH": os.defpath})
            places = sysconfig.get_paths(vars={"base": str(root), "platbase": str(root)})
            sys_path = list(dict.fromkeys([*json.loads(probed), places["purelib"],
                                           places["platlib"]]))  # fmt: skip
            about = {
                "specs": list(plan.specs),
                "overrides": list(plan.overrides),
                "python": python,
                "sys_path": sys_path,
                "runtime": str(runtime.folder),
                "packages_linked": [str(package) for package in runtime.packages],
                "packages": _packages(root, sys_path),
                "overridden": sorted(_names(declared)),
                "created": time.time(),
            }
            (root / ABOUT).write_text(json.dumps(about, indent=1))
        except InstallFailed:
            shutil.rmtree(root, ignore_errors=True)
            raise
        except (OSError, ValueError) as exc:
            shutil.rmtree(root, ignore_errors=True)
            raise InstallFailed(f"Could not build the environment in {root}: {exc}") from exc
        return self.environment(env_id)

    def _specs_of(self, plan: InstallPlan, root: Path, tell: Phase) -> tuple[list[str], list[str]]:
        """The requirements and overrides to give uv: a project directory
        (``allow_sdist``) built into a wheel, with what it asks of its
        environment; a wheel's path made absolute; the rest as it is."""
        specs: list[str] = []
        overrides = list(plan.overrides)
        for spec in plan.specs:
            if os.path.isdir(spec):
                built = build_project(spec, root / "wheels", self.uv, tell)
                specs.extend(built.specs)
                overrides.extend(built.overrides)
            else:
                specs.append(os.path.abspath(spec) if os.path.isfile(spec) else spec)
        return specs, overrides

    # -- naming ----------------------------------------------------------------------

    def commit(self, name: str, env_id: str, version: str, event: str) -> None:
        """``env_id`` (holding ``version``) becomes ``name``'s current
        environment; its current one becomes the previous (kept for
        rollback), the one before is removed. ``event``: installed, upgraded..."""
        with self._lock:
            plugins = self.index()
            entry = plugins.get(name) or {}
            older = entry.get("previous")
            if entry.get("current") not in (None, env_id):
                entry["previous"] = entry["current"]
            entry["current"] = env_id
            _remember(entry, env_id, version, event)
            plugins[name] = entry
            self._write(plugins)
            if older and older not in (entry["current"], entry.get("previous")):
                self.discard(older)

    def swap(self, name: str, version: str) -> None:
        """``name``'s previous environment (holding ``version``) becomes
        current and the other way round: a rollback."""
        with self._lock:
            plugins = self.index()
            entry = plugins[name]
            entry["current"], entry["previous"] = entry["previous"], entry["current"]
            _remember(entry, entry["current"], version, "rolled back")
            self._write(plugins)

    def note(self, name: str, env_id: str, version: str, event: str) -> None:
        """A version that did not stay (refused, rolled back), in ``name``'s history."""
        with self._lock:
            plugins = self.index()
            if name in plugins:
                _remember(plugins[name], env_id, version, event)
                self._write(plugins)

    def forget(self, name: str) -> None:
        """``name`` is uninstalled: its environments are removed."""
        with self._lock:
            plugins = self.index()
            entry = plugins.pop(name, None) or {}
            self._write(plugins)
        for env_id in (entry.get("current"), entry.get("previous")):
            if env_id:
                self.discard(env_id)

    def discard(self, env_id: str) -> None:
        try:
            shutil.rmtree(self._folder(env_id), ignore_errors=True)
        except InstallFailed as exc:  # not one of ours: nothing to remove
            log.error("%s", exc.reason)

    def _folder(self, env_id: str) -> Path:
        """The folder of ``env_id``; an id that is not one this store makes
        (a damaged or edited index) names no folder."""
        if not ENV_ID.fullmatch(env_id):
            raise InstallFailed(f"{env_id!r} in {self.root / INDEX} is not an environment's id.")
        return self.root / "envs" / env_id

    def sweep(self) -> None:
        """Remove environments no plugin names (an install the host died
        in); none when the index cannot be read (they may be named there)."""
        index = self._read_index()
        if index is None:
            return
        named = {entry.get(key) for entry in index.values() for key in ("current", "previous")}
        folder = self.root / "envs"
        for child in folder.iterdir() if folder.is_dir() else ():
            if child.name not in named:
                log.info("removing %s: an environment no plugin uses", child)
                self.discard(child.name)

    def _write(self, plugins: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        temporary = self.root / f".{INDEX}.{os.getpid()}"
        temporary.write_text(json.dumps({"plugins": plugins}, indent=1, sort_keys=True))
        os.replace(temporary, self.root / INDEX)


HISTORY = 20  # versions remembered per plugin


def _names(lines: list[str]) -> set[str]:
    """The canonical package names of requirement ``lines``."""
    names: set[str] = set()
    for line in lines:
        try:
            names.add(canonicalize_name(Requirement(line).name))
        except InvalidRequirement:
            continue  # uv said so already, or took it
    return names


def _remember(entry: dict[str, Any], env_id: str, version: str, event: str) -> None:
    at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    history = [*entry.get("history", []), {"at": at, "event": event, "version": version,
                                            "environment": env_id}]  # fmt: skip
    entry["history"] = history[-HISTORY:]


def _packages(root: Path, sys_path: list[str]) -> dict[str, str]:
    inside = [entry for entry in sys_path if entry.startswith(str(root))]
    found = {}
    for dist in distributions(path=inside):
        head = read_head(dist)
        if head.name and head.version:
            found[head.name] = head.version
    return dict(sorted(found.items()))


def _output(command: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    if done.returncode != 0:
        raise InstallFailed(f"{command[0]} does not run: {done.stderr.strip()[-500:]}")
    return done.stdout
