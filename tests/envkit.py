"""Plugins for the environment tests and benchmarks: wheels of a plugin
that says which six it imports and which version it is, and a caller loop."""

from __future__ import annotations

import textwrap
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from plugwarden.testing import write_wheel

# A plugin that reports which six it imports and which version it is;
# VALID and CRASH_ON are set per version.
PINNED = """
import os
import time
import six
from plugwarden import hookimpl

VERSION = {version!r}
CALLS = [0]


@hookimpl
def validate():
    return {valid!r}


@hookimpl
def run(tool, args):
    if tool == "read":
        with open(args["path"]) as file:
            return file.read(64)
    if tool != "which":
        raise ValueError(f"no tool {{tool!r}}: this plugin has 'which' and 'read'")
    CALLS[0] += 1
    if CALLS[0] == {crash_on!r}:
        os._exit(3)
    time.sleep(args.get("sleep", 0))
    return {{"six": six.__version__, "six_file": six.__file__, "version": VERSION}}
"""


def make_wheel(
    out: Path,
    name: str,
    version: str = "1.0",
    requires: tuple[str, ...] = (),
    source: str | None = None,
    *,
    valid: object = True,
    crash_on: int = 0,
    extra: dict[str, str] | None = None,
) -> Path:
    """A wheel of plugin ``name`` (by default the PINNED plugin at ``version``)."""
    code = source or PINNED.format(version=version, valid=valid, crash_on=crash_on)
    return write_wheel(out, name, code, version=version, requires=requires, files=extra)


def write_project(folder: Path, name: str, source: str = "", tail: str = "") -> Path:
    """A setuptools project in ``folder``: package ``name`` (src layout) whose
    ``__init__`` is ``source``; ``tail``: pyproject.toml lines after the
    project's name and version (dependencies, entry points, tables)."""
    (folder / "src" / name).mkdir(parents=True)
    (folder / "src" / name / "__init__.py").write_text(source)
    (folder / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=61"]\nbuild-backend = "setuptools.build_meta"\n'
        f'[project]\nname = "{name}"\nversion = "1.0"\n{textwrap.dedent(tail)}'
    )
    return folder


@contextmanager
def calling(call: Callable[[], object]) -> Iterator[list[object]]:
    """``call()`` in a loop on a thread until the block ends; the list of
    what it returned that was not ok (each failed call's record)."""
    failures: list[object] = []
    calls = [0]
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            result = call()
            calls[0] += 1
            if not getattr(result, "ok", False):
                failures.append(result)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield failures
    finally:
        stop.set()
        thread.join(60)
    if calls[0] == 0:
        failures.append("no call was made")
