"""Plugin distributions as real wheels, for the environment tests: written
straight as zip files (a build backend would take a second each)."""

from __future__ import annotations

import base64
import hashlib
import textwrap
import threading
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

# A plugin that reports which six it imports and which version it is;
# VALID and CRASH_ON are set per version.
PINNED = """
import os
import six
from plugwarden import hookimpl

VERSION = {version!r}
CALLS = [0]


@hookimpl
def validate():
    return {valid!r}


@hookimpl
def run(tool, args):
    CALLS[0] += 1
    if CALLS[0] == {crash_on!r}:
        os._exit(3)
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
    manifest: str | None = None,
    extra: dict[str, str] | None = None,
) -> Path:
    """A wheel of plugin ``name`` (entry point and package of that name)."""
    code = source or PINNED.format(version=version, valid=valid, crash_on=crash_on)
    info = f"{name}-{version}.dist-info"
    requirement_lines = "".join(f"Requires-Dist: {line}\n" for line in requires)
    files = {
        f"{name}/__init__.py": textwrap.dedent(code),
        f"{info}/METADATA": (
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n{requirement_lines}"
        ),
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
        f"{info}/entry_points.txt": f"[plugwarden.plugins]\n{name} = {name}\n",
    }
    if manifest is not None:
        files[f"{name}/manifest.toml"] = manifest
    files.update(extra or {})
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}-{version}-py3-none-any.whl"
    record = []
    with zipfile.ZipFile(path, "w") as archive:
        for file, text in files.items():
            data = text.encode()
            archive.writestr(file, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            record.append(f"{file},sha256={digest.decode()},{len(data)}")
        archive.writestr(f"{info}/RECORD", "\n".join([*record, f"{info}/RECORD,,"]) + "\n")
    return path


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
