"""``plugwarden new NAME``: a plugin distribution that passes ``plugwarden
check`` and its own tests as generated: pyproject (hatchling, the entry
point; the manifest ships as package data), the module with all four hooks,
the manifest, a conformance test and a README."""

from __future__ import annotations

from pathlib import Path

from plugwarden import __version__
from plugwarden.exceptions import PlugwardenError
from plugwarden.plugin.discovery import ADDRESSABLE

__all__ = ["ScaffoldError", "new_plugin"]


class ScaffoldError(PlugwardenError):
    """The plugin cannot be written there (a bad name, a directory in use)."""


PYPROJECT = """\
[build-system]
requires = ["hatchling>=1.21"]
build-backend = "hatchling.build"

[project]
name = "{dist}"
version = "0.1.0"
description = "{name}: a plugwarden plugin."
requires-python = ">=3.11"
dependencies = ["plugwarden>={plugwarden}"]

[project.optional-dependencies]
test = ["plugwarden[testing]>={plugwarden}"]

# The plugin: its name (what the host and the URLs call it) = its module.
[project.entry-points."plugwarden.plugins"]
{name} = "{package}"

# hatchling ships every file of the package, manifest.toml included.
[tool.hatch.build.targets.wheel]
packages = ["src/{package}"]

[tool.pytest.ini_options]
testpaths = ["tests"]
"""

MODULE = '''\
"""{name}: a plugwarden plugin. Its hooks run in a worker process, behind
the host's timeout and memory guards."""

from __future__ import annotations

import time
from typing import Any

import plugwarden
from plugwarden import hookimpl

_settings: dict[str, Any] = {{}}


@hookimpl
def init(config: dict[str, Any]) -> None:
    """Acquire resources (load models). ``config``: the operator's
    [plugins.{name}] table, plus ``models`` (name -> path)."""
    _settings.update(config)


@hookimpl
def validate() -> bool | str:
    """True when ready, else the reason it is not (shown to the operator)."""
    return True


@hookimpl
def run(tool: str, args: dict[str, Any]) -> Any:
    """Do the work; return plain JSON data."""
    if tool == "hello":
        return {{"message": f"Hello, {{args.get('name', 'world')}}!"}}
    if tool == "steps":  # a long tool, made for jobs: progress and cancel
        total = int(args.get("n", 5))
        for done in range(total):
            if plugwarden.cancelled():
                return {{"done": done, "cancelled": True}}
            plugwarden.progress(done, total, f"step {{done + 1}} of {{total}}")
            time.sleep(float(args.get("every_s", 0.01)))
        return {{"done": total, "cancelled": False}}
    raise ValueError(f"Unknown tool {{tool!r}}: this plugin has hello and steps")


@hookimpl
def health() -> dict[str, Any]:
    """A small report of the plugin's own, merged into its health record."""
    return {{"settings": sorted(_settings)}}
'''

MANIFEST = """\
# Read by the host before any of this package's code runs.
name = "{name}"
version = "0.1.0"
description = "{name}: a plugwarden plugin."
requires_gpu = false
packages = []

# Each tool, with an example call that the checks run (PW007).
[tools.hello]
description = "Say hello to args.name (default: world)."
example = {{name = "Ada"}}

[tools.steps]
description = "Count args.n steps (5) with progress; run it as a job."
example = {{n = 3}}

[guards]
timeout_s = 30
memory_mb = 512

# What it may reach beyond its code, models, state and tmp directories:
# undeclared is denied (docs/guides/isolation.md#what-a-plugin-may-reach).
[permissions]
network = false     # true, or the TCP ports it connects to: [443]
read = []           # paths it reads
write = []          # paths it writes
"""

TEST = '''\
"""{name} against the plugwarden contract: the installed distribution,
through a real host with real worker processes."""

from plugwarden.testing import PluginConformance


class Test{title}Conforms(PluginConformance):
    plugin = "{name}"
    conformance_level = "1"  # the tools' examples come from the manifest
'''

README = """\
# {dist}

A plugwarden plugin named `{name}`.

```bash
pip install -e '.[test]'   # editable: the tests and the host see your edits
pytest                     # the conformance checks, against the installed plugin
plugwarden check .         # the same checks on the wheel this project builds
plugwarden run {name} hello --args '{{"name": "Ada"}}' --local
```

- `src/{package}/__init__.py`: the hooks (`validate` and `run` required,
  `init` and `health` optional).
- `src/{package}/manifest.toml`: read without importing the code: the
  description, the tools, packages and model files to check first, guards.
- `tests/test_conformance.py`: `PluginConformance`, pinned to level 1.
"""


def new_plugin(name: str, directory: Path | None = None) -> Path:
    """Write plugin ``name`` into ``directory`` (default ``./NAME``)."""
    if not ADDRESSABLE.fullmatch(name):
        raise ScaffoldError(
            f"{name!r} cannot be a plugin name: use 1-100 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    target = Path(directory or name)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ScaffoldError(f"{target} exists and is not empty: choose another directory")
    package = "plugwarden_" + "".join(c if c.isalnum() else "_" for c in name.lower())
    values = {
        "name": name,
        "dist": f"plugwarden-{name.lower()}",
        "package": package,
        "title": "".join(part.capitalize() for part in package.split("_")[1:]) or "Plugin",
        "plugwarden": __version__.split("+")[0],
    }
    files = {
        "pyproject.toml": PYPROJECT,
        f"src/{package}/__init__.py": MODULE,
        f"src/{package}/manifest.toml": MANIFEST,
        "tests/test_conformance.py": TEST,
        "README.md": README,
    }
    for relative, template in files.items():
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(template.format(**values), encoding="utf-8")
    return target
