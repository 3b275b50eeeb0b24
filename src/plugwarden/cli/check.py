"""``plugwarden check [PATH | NAME]``: the conformance checks from the
command line, on a built wheel or sdist, a project directory (built into a
wheel first), or an installed plugin's name.

A wheel, sdist or project is installed with pip (``--no-deps``) into a
throwaway directory searched first, so the plugin is checked as it ships,
with the dependencies of this environment. pip does the building, as it
would for a user.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from configparser import ConfigParser
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from plugwarden.exceptions import PlugwardenError
from plugwarden.testing.contract import LATEST_LEVEL, Verdict, run_checks

__all__ = ["CheckError", "check"]

STYLES = {"pass": "green", "fail": "bold red", "warn": "yellow", "skip": "dim"}
ARCHIVES = (".whl", ".tar.gz", ".zip")


class CheckError(PlugwardenError):
    """The target cannot be checked at all (not found, does not build)."""


def check(
    target: str,
    console: Console,
    *,
    as_json: bool = False,
    level: int = 1,
    examples: dict[str, Any] | None = None,
) -> int:
    """Run the checks on ``target``; 0 when none fails, 1 otherwise."""
    if not 1 <= level <= LATEST_LEVEL:
        raise ValueError(f"--level must be from 1 to {LATEST_LEVEL}")
    path = Path(target)
    with tempfile.TemporaryDirectory(prefix="plugwarden-check-") as scratch:
        if path.exists():
            site = Path(scratch) / "site"
            names = _install(path, site, Path(scratch))
            search: list[str] | None = [str(site), *sys.path]
            project = path.resolve() if path.is_dir() else None
        else:
            names, search, project = [target], None, None
        reports = {
            name: run_checks(
                name,
                search_path=search,
                tool_examples=examples or {},
                level=level,
                project_dir=project,
            )
            for name in names
        }
    failed = any(v.outcome == "fail" for verdicts in reports.values() for v in verdicts)
    if as_json:
        data = {name: [v.to_dict() for v in verdicts] for name, verdicts in reports.items()}
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
    else:
        for name, verdicts in reports.items():
            console.print(_table(name, verdicts, level))
    return 1 if failed else 0


def _install(path: Path, site: Path, scratch: Path) -> list[str]:
    """Install ``path`` (wheel, sdist or project) into ``site``; the plugin
    names its entry points declare."""
    if (
        path.is_dir()
        and not (path / "pyproject.toml").is_file()
        and not (path / "setup.py").is_file()
    ):
        raise CheckError(f"{path} is neither a project (no pyproject.toml) nor a wheel or sdist")
    if path.is_file() and not path.name.endswith(ARCHIVES):
        raise CheckError(f"{path} is not a wheel (.whl) or an sdist (.tar.gz, .zip)")
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target"]
    done = subprocess.run(
        [*command, str(site), str(path.resolve())],
        capture_output=True,
        text=True,
        check=False,
        cwd=scratch,
    )
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise CheckError(f"pip could not build or install {path}: {last}")
    names: list[str] = []
    for entry_points in sorted(site.glob("*.dist-info/entry_points.txt")):
        parser = ConfigParser(delimiters=("=",))
        parser.optionxform = str  # type: ignore[assignment,method-assign]
        parser.read(entry_points, encoding="utf-8")
        if parser.has_section("plugwarden.plugins"):
            names.extend(parser.options("plugwarden.plugins"))
    if not names:
        raise CheckError(
            f"{path} declares no plugwarden plugin: add [project.entry-points."
            '"plugwarden.plugins"] NAME = "module" to its pyproject.toml'
        )
    return names


def _table(name: str, verdicts: list[Verdict], level: int) -> Table:
    table = Table(
        title=f"plugwarden check: {name} (conformance level {level})", title_justify="left"
    )
    for column in ("id", "verdict", "check", "detail / fix"):
        table.add_column(column, overflow="fold")
    for verdict in verdicts:
        style = STYLES[verdict.outcome]
        text = escape(verdict.detail)
        if verdict.fix:
            text += f"\n[bold]Fix:[/bold] {escape(verdict.fix)}"
        table.add_row(
            verdict.check.id,
            f"[{style}]{verdict.outcome}[/{style}]",
            escape(verdict.check.title),
            text,
        )
    return table
