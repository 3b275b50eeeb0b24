"""The conformance checks (docs/guides/writing-plugins.md): one installed
plugin distribution against the contract, through a real host with real
worker processes.

Each check has a stable id (``PW001``...) and the conformance level that
introduced it. :func:`run_checks` runs them all and returns one
:class:`Verdict` each; ``PluginConformance`` (pytest) and ``plugwarden
check`` (CLI) both present these verdicts. A check above the level an author
pinned never fails: its failure is a ``warn``, so a plugwarden upgrade that
adds checks never breaks a plugin's CI overnight. No pytest here.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from plugwarden.error_types import ErrorType
from plugwarden.exceptions import ManifestError
from plugwarden.host.host import Host
from plugwarden.isolation.process.undeclared import UNDECLARED
from plugwarden.plugin.discovery import PluginSource, discover
from plugwarden.plugin.lifecycle import State
from plugwarden.plugin.manifest import MANIFEST_NAMES, Manifest, read_manifest
from plugwarden.preflight.context import PreflightContext
from plugwarden.preflight.packages import check_packages, check_requirements

__all__ = ["CHECKS", "LATEST_LEVEL", "Check", "Verdict", "run_checks"]

PACKAGING_FIX = (
    "Ship manifest.toml as package data. hatchling: nothing to do for a file inside the "
    'package directory. setuptools: [tool.setuptools.package-data] NAME = ["manifest.toml"]. '
    'poetry: include = ["src/NAME/manifest.toml"].'
)


@dataclass(frozen=True, slots=True)
class Check:
    id: str
    level: int  # the conformance_level that introduced it
    title: str
    fix: str


CHECKS = (
    Check("PW001", 1, "entry point found; importing it leaves the host untouched",
          "Declare [project.entry-points.\"plugwarden.plugins\"] NAME = \"module\" and reinstall; "
          "the host must never import the plugin's module itself."),
    Check("PW002", 1, "manifest packaged with the distribution", PACKAGING_FIX),
    Check("PW003", 1, "manifest valid, no unknown keys",
          "Fix the manifest: docs/guides/writing-plugins.md lists every key."),
    Check("PW004", 1, "declared packages and Requires-Dist importable",
          "List every import in Requires-Dist (with versions) and install them."),
    Check("PW005", 1, "hooks present with the right signatures",
          "Implement validate() and run(tool, args) (init(config), health() optional), "
          "each marked @plugwarden.hookimpl."),
    Check("PW006", 1, "init and validate reach INITIALIZED within the guards",
          "Make init(config) and validate() succeed quickly (load_timeout_s, memory_mb)."),
    Check("PW007", 1, "every tool with an example answers it with plain data",
          "Make each tool answer its example with JSON-serialisable data (or bytes and "
          "arrays); an example is the manifest's [tools.NAME] example = {...}, or "
          "tool_examples / --examples."),
    Check("PW008", 1, "an unknown tool is a clear per-call error; the plugin stays up",
          "Raise a ValueError naming the tool (or declare your tools in the manifest)."),
    Check("PW009", 1, "health() is plain data within its budget",
          "Return a small dict (or None) from health(), quickly (health_timeout_s)."),
    Check("PW010", 1, "closing leaves no process, thread or fd behind",
          "Do not start processes outside the worker's reach or threads in the host."),
    Check("PW011", 2, "the manifest says what the plugin is: description, version, tools",
          "Add description, version and a description for every tool to the manifest."),
    Check("PW012", 3, "it does only what its manifest declares (network, writes)",
          "Declare what it needs in the manifest's [permissions] (network = [PORT], "
          "write = [PATH]); the sandbox refuses whatever is undeclared."),
)  # fmt: skip
LATEST_LEVEL = max(check.level for check in CHECKS)
UNKNOWN_TOOL = "pw-conformance-no-such-tool"


@dataclass(frozen=True, slots=True)
class Verdict:
    check: Check
    outcome: str  # "pass", "fail", "warn" (a failure above the pinned level) or "skip"
    detail: str = ""
    follows: str | None = None  # the failed check this failure follows from

    @property
    def fix(self) -> str:
        """What to do about a failure: its check's fix, or its root cause's."""
        if self.outcome not in ("fail", "warn"):
            return ""
        return f"Fix {self.follows} first." if self.follows else self.check.fix

    def to_dict(self) -> dict[str, Any]:
        check = self.check
        return {"id": check.id, "level": check.level, "title": check.title,
                "outcome": self.outcome, "detail": self.detail, "fix": self.fix}  # fmt: skip


class _Run:
    """The findings of one conformance run, check by check."""

    def __init__(self, level: int, skip: Mapping[str, str]) -> None:
        self.level = level
        self.skip = skip
        self.verdicts: dict[str, Verdict] = {}
        self.root: str | None = None  # the check whose failure the later ones follow from

    def record(self, check_id: str, problem: str | None, detail: str = "") -> None:
        check = next(c for c in CHECKS if c.id == check_id)
        follows = self.root if problem is not None and self.root != check_id else None
        if follows:
            problem = f"follows from {follows}: {problem}"
        if check_id in self.skip:
            self.verdicts[check_id] = Verdict(check, "skip", self.skip[check_id])
        elif problem is None:
            self.verdicts[check_id] = Verdict(check, "pass", detail)
        else:
            outcome = "fail" if check.level <= self.level else "warn"
            self.verdicts[check_id] = Verdict(check, outcome, problem, follows)

    def skip_rest(self, why: str) -> None:
        for check in CHECKS:
            if check.id not in self.verdicts:
                self.verdicts[check.id] = Verdict(check, "skip", why)


def run_checks(
    plugin: str,
    *,
    search_path: Sequence[str] | None = None,
    tool_examples: Mapping[str, Mapping[str, Any]] | None = None,
    config: Mapping[str, Any] | None = None,
    level: int = 1,
    skip: Mapping[str, str] | None = None,
    requires_gpu: bool = False,
    project_dir: Path | None = None,
) -> list[Verdict]:
    """Check installed plugin ``plugin`` (found on ``search_path``, default
    ``sys.path``). ``project_dir``: its source tree, when known, to tell a
    manifest that was not packaged from one that does not exist."""
    run = _Run(level, skip or {})
    before = _footprint()
    modules_before = set(sys.modules)
    found = discover(search_path)
    source = found.plugins.get(plugin)
    if source is None:
        claimants = found.duplicates.get(plugin)
        problem = (
            f"no entry point {plugin!r} in group plugwarden.plugins"
            if claimants is None
            else f"{plugin!r} is claimed by {len(claimants)} distributions"
        )
        run.record("PW001", problem)
        run.skip_rest("the plugin was not found")
        return list(run.verdicts.values())
    top = source.module.split(".")[0]
    if source.package_dir is None:
        # The root cause: every check after this one fails because of it.
        run.record("PW001", f"the entry point {plugin} = {source.value!r} names module "
                   f"{top!r}, which {source.origin} does not contain")  # fmt: skip
        run.root = "PW001"
    manifest = _manifest_checks(run, source, project_dir)
    _requirement_checks(run, source, manifest)
    host_config = {"jobs": {"path": ":memory:"}, **dict(config or {})}
    host = Host(host_config, search_path=search_path, only={plugin})
    undeclared = _Undeclared()
    logging.getLogger("plugwarden.plugin").addHandler(undeclared)
    try:
        host.start()
        _host_checks(run, host, plugin, manifest, tool_examples or {}, requires_gpu)
    finally:
        host.close()
        logging.getLogger("plugwarden.plugin").removeHandler(undeclared)
    if any(v.check.id == "PW006" and v.outcome == "pass" for v in run.verdicts.values()):
        run.record("PW012", "; ".join(undeclared.seen[:5]) or None)
    leaked = top not in modules_before and top in sys.modules
    if run.root != "PW001":
        run.record("PW001", f"the host process imported {top!r}" if leaked else None, source.origin)
    run.record("PW010", _leftovers(before))
    _describe_check(run, manifest)
    return sorted(run.verdicts.values(), key=lambda v: v.check.id)


class _Undeclared(logging.Handler):
    """What the plugin's workers logged doing beyond their grants."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        marker = f"plugwarden.sandbox: {UNDECLARED}: "
        if text.startswith(marker) and text not in self.seen:
            self.seen.append(text[len(marker) :])


def _manifest_checks(run: _Run, source: PluginSource, project_dir: Path | None) -> Manifest | None:
    packaged = source.package_dir is not None and any(
        (source.package_dir / name).is_file() for name in MANIFEST_NAMES
    )
    in_project = _project_manifests(project_dir) if project_dir is not None else []
    if packaged:
        run.record("PW002", None)
    elif source.package_dir is None:
        run.record("PW002", "no package to look in")
    elif in_project:
        run.record(
            "PW002",
            f"{', '.join(in_project)} is in the project but not in the installed distribution "
            f"({source.package_dir}): it is not package data",
        )
    else:
        run.record(
            "PW002",
            f"no manifest.toml beside {source.package_dir}: the plugin has no description, "
            "tools, packages or model files to check, nor guard defaults. Add one, or skip "
            "PW002 with a reason if that is on purpose",
        )
    try:
        manifest = read_manifest(source.package_dir)
    except ManifestError as exc:
        run.record("PW003", str(exc))
        return None
    run.record("PW003", manifest.unknown_reason)
    return manifest


def _project_manifests(project_dir: Path) -> list[str]:
    """Manifests in a source tree (not in its build outputs or environments)."""
    found = []
    for name in MANIFEST_NAMES:
        for path in project_dir.rglob(name):
            parts = path.relative_to(project_dir).parts
            if not any(p.startswith(".") or p in _NOT_SOURCE for p in parts[:-1]):
                found.append(str(path.relative_to(project_dir)))
    return sorted(found)


_NOT_SOURCE = frozenset({"build", "dist", "venv", "site-packages", "node_modules", "tests"})


def _requirement_checks(run: _Run, source: PluginSource, manifest: Manifest | None) -> None:
    context = PreflightContext(source, manifest or Manifest(), {})
    problems = check_requirements(context) + check_packages(context)
    run.record("PW004", "; ".join(p.reason for p in problems) or None)


def _host_checks(
    run: _Run,
    host: Host,
    plugin: str,
    manifest: Manifest | None,
    examples: Mapping[str, Mapping[str, Any]],
    requires_gpu: bool,
) -> None:
    status = host.status(plugin)
    loaded = any(t.state is State.LOADED for t in status.history)
    if status.state is State.UNAVAILABLE and requires_gpu:
        run.skip_rest(f"needs a GPU: {status.reason}")
        return
    if not loaded and (status.state is State.UNAVAILABLE or manifest is None):
        # Refused before its code ran (pre-flight, manifest): PW003/PW004 say why.
        run.skip_rest(f"not loaded: {status.reason}")
        return
    run.record("PW005", None if loaded else f"{status.state.value}: {status.reason}")
    if not loaded:
        run.skip_rest("the plugin did not load")
        return
    if not status.available:
        run.record("PW006", f"{status.state.value}: {status.reason}")
        run.skip_rest("the plugin did not reach INITIALIZED")
        return
    run.record("PW006", None)
    run.record("PW007", *_tool_problems(host, plugin, manifest, examples))
    unknown = host.call(plugin, UNKNOWN_TOOL, {})
    stays = host.status(plugin).available
    if unknown.ok:
        run.record("PW008", f"an unknown tool answered ok: {str(unknown.result)[:200]}")
    elif not stays:
        run.record("PW008", f"an unknown tool took the plugin down: {host.status(plugin).reason}")
    else:
        run.record("PW008", None, unknown.error or "")
    report = host.check_health(plugin)
    if report is None:
        run.record("PW009", "health() did not answer: every worker stayed busy")
    else:
        run.record("PW009", None if report["ok"] else f"health(): {report['error']}")


def _tool_problems(
    host: Host, plugin: str, manifest: Manifest | None, examples: Mapping[str, Mapping[str, Any]]
) -> tuple[str | None, str]:
    """What went wrong running each tool's example (the caller's over the
    manifest's). A tool with no example is tried with no arguments; its
    failure is said, and fails nothing: it may simply need arguments."""
    given = {**(manifest.examples if manifest is not None else {}), **examples}
    tools = list(manifest.tools) if manifest is not None and manifest.tools else list(given)
    problems, untried = [], []
    for tool in tools:
        args = dict(given.get(tool, {}))
        result = host.call(plugin, tool, args)
        if result.ok:
            continue
        if tool not in given:
            untried.append(f"{tool} (no example; with no arguments: {result.error_type})")
        elif result.error_type == ErrorType.RESULT_NOT_SERIALIZABLE:
            problems.append(f"{tool}({args}) returned what JSON cannot carry: {result.error}")
        else:
            problems.append(f"{tool}({args}): {result.error_type}: {result.error}")
    note = f"not checked: {', '.join(untried)}" if untried else ""
    return "; ".join(problems) + (f"; {note}" if problems and note else "") or None, note


def _describe_check(run: _Run, manifest: Manifest | None) -> None:
    if manifest is None or manifest.path is None:
        run.record("PW011", "no manifest")
        return
    missing = [key for key in ("description", "version") if not getattr(manifest, key)]
    missing += [f"a description of tool {t!r}" for t, text in manifest.tools.items() if not text]
    run.record("PW011", f"the manifest lacks {', '.join(missing)}" if missing else None)


def _footprint() -> tuple[int, int, set[int]]:
    me = psutil.Process()
    return (
        threading.active_count(),
        len(os.listdir("/proc/self/fd")),
        {child.pid for child in me.children(recursive=True)},
    )


def _leftovers(before: tuple[int, int, set[int]], settle_s: float = 5.0) -> str | None:
    """What a closed host left behind, given a moment for threads to end."""
    deadline = time.monotonic() + settle_s
    while True:
        threads, fds, children = _footprint()
        extra = children - before[2]
        problems = []
        if threads > before[0]:
            problems.append(f"{threads - before[0]} thread(s)")
        if fds > before[1]:
            problems.append(f"{fds - before[1]} fd(s)")
        if extra:
            problems.append(f"process(es) {sorted(extra)}")
        if not problems or time.monotonic() > deadline:
            return f"left behind: {', '.join(problems)}" if problems else None
        time.sleep(0.05)
