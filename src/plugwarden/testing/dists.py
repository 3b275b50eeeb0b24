"""Real plugin distributions on a temporary path, for tests.

:func:`write_plugin` writes a package and its ``.dist-info`` (``METADATA``,
``entry_points.txt``, ``RECORD``) into a directory, exactly as pip would lay
them out in site-packages, so discovery goes through importlib.metadata for
real. Point a :class:`~plugwarden.Host` at the directory with ``search_path``.
:func:`write_wheel` writes the same as a wheel file, for ``plugwarden
install`` (an environment of its own).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import textwrap
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name

__all__ = ["ECHO_PLUGIN", "plugin_source", "write_plugin", "write_wheel"]

# The smallest healthy plugin: run() echoes its tool and args back.
ECHO_PLUGIN = """
from plugwarden import hookimpl

@hookimpl
def validate():
    return True

@hookimpl
def run(tool, args):
    return {"tool": tool, "args": args}
"""


def write_plugin(
    site: Path,
    name: str,
    source: str | os.PathLike[str],
    *,
    module: str | None = None,
    dist: str | None = None,
    version: str = "1.0.0",
    manifest: Mapping[str, Any] | str | None = None,
    manifest_format: str | None = None,
    requires: Sequence[str] = (),
    entry_point: str | None = None,
) -> Path:
    """Write plugin ``name`` into ``site``: a package whose ``__init__.py``
    is ``source`` (a string), or a copy of ``source`` when it is a directory
    (a package of several modules and data files, a manifest included).

    ``manifest`` is a mapping (written as ``manifest.json``) or the raw text
    of ``manifest.toml`` (``manifest_format="json"`` for raw JSON text).
    ``entry_point`` overrides the entry point's value (default: the package).
    Returns the package directory."""
    module = module or f"{canonicalize_name(name).replace('-', '_')}_plugin"
    dist = dist or f"{module.replace('_', '-')}"
    package = site / module
    package.mkdir(parents=True, exist_ok=True)
    if isinstance(source, str):
        (package / "__init__.py").write_text(textwrap.dedent(source), encoding="utf-8")
    elif Path(source).is_dir():
        shutil.copytree(source, package, dirs_exist_ok=True)
    else:
        raise ValueError(f"source must be the module's text or a package directory: {source}")
    if isinstance(manifest, str):
        (package / f"manifest.{manifest_format or 'toml'}").write_text(manifest, encoding="utf-8")
    elif manifest is not None:
        (package / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    info = site / f"{canonicalize_name(dist).replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    metadata = ["Metadata-Version: 2.1", f"Name: {dist}", f"Version: {version}"]
    metadata += [f"Requires-Dist: {line}" for line in requires]
    (info / "METADATA").write_text("\n".join(metadata) + "\n", encoding="utf-8")
    (info / "entry_points.txt").write_text(
        f"[plugwarden.plugins]\n{name} = {entry_point or module}\n", encoding="utf-8"
    )
    (info / "RECORD").write_text("", encoding="utf-8")
    return package


def plugin_source(run_body: str, *, prelude: str = "", init_body: str = "pass") -> str:
    """A plugin whose run() executes ``run_body`` (indented for a function)."""
    body = "\n".join("    " + line for line in run_body.strip().splitlines())
    init = "\n".join("    " + line for line in init_body.strip().splitlines())
    return (
        f"from plugwarden import hookimpl\n{prelude}\n\n"
        f"@hookimpl\ndef init(config):\n{init}\n\n"
        "@hookimpl\ndef validate():\n    return True\n\n"
        f"@hookimpl\ndef run(tool, args):\n{body}\n"
    )


def write_wheel(
    out: Path,
    name: str,
    source: str,
    *,
    version: str = "1.0",
    requires: Sequence[str] = (),
    files: Mapping[str, str] | None = None,
) -> Path:
    """A wheel of plugin ``name`` in ``out``: package ``name`` whose
    ``__init__`` is ``source``, its entry point, ``requires`` as
    Requires-Dist, and ``files`` (path in the wheel -> text: a manifest, a
    ``.pth``...). Written straight as a zip: no build backend runs."""
    info = f"{name}-{version}.dist-info"
    needs = "".join(f"Requires-Dist: {line}\n" for line in requires)
    contents = {
        f"{name}/__init__.py": textwrap.dedent(source),
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n{needs}",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: plugwarden.testing\n"
        "Root-Is-Purelib: true\nTag: py3-none-any\n",
        f"{info}/entry_points.txt": f"[plugwarden.plugins]\n{name} = {name}\n",
        **(files or {}),
    }
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}-{version}-py3-none-any.whl"
    record = []
    with zipfile.ZipFile(path, "w") as archive:
        for file, text in contents.items():
            data = text.encode()
            archive.writestr(file, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            record.append(f"{file},sha256={digest.decode()},{len(data)}")
        archive.writestr(f"{info}/RECORD", "\n".join([*record, f"{info}/RECORD,,"]) + "\n")
    return path
