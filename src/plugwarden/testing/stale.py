"""Whether the installed plugin is the code its author is looking at.

A plugin's tests check the *installed* distribution. Installed with a plain
``pip install .`` and then edited, the project's source and the installed
copy part ways, and the tests go on passing against yesterday's code. An
editable install (``pip install -e .``) never goes stale; for any other,
:func:`stale_files` names the files that differ.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["StaleInstallWarning", "stale_files", "stale_message"]

# Files whose change matters to the host: the code and the manifest.
WATCHED = ("*.py", "manifest.toml", "manifest.json")


class StaleInstallWarning(UserWarning):
    """The installed plugin differs from the project's source."""


def stale_files(installed: Path | None, project: Path) -> list[str]:
    """The files of the installed package ``installed`` that differ from
    (or are missing in) the same package in the source tree ``project``
    (``src/NAME`` or ``NAME``); empty when the install is the source itself
    (editable), or the project holds no such package."""
    if installed is None:
        return []
    installed = installed.resolve()
    for layout in (project / "src" / installed.name, project / installed.name):
        if layout.is_dir():
            source = layout.resolve()
            break
    else:
        return []
    if source == installed:
        return []
    differing = []
    for pattern in WATCHED:
        for path in sorted(source.rglob(pattern)):
            relative = path.relative_to(source)
            if "__pycache__" in relative.parts:
                continue
            copy = installed / relative
            if not copy.is_file() or copy.read_bytes() != path.read_bytes():
                differing.append(str(relative))
    return differing


def stale_message(plugin: str, installed: Path, differing: list[str]) -> str:
    shown = ", ".join(differing[:5]) + (f" and {len(differing) - 5} more" if differing[5:] else "")
    return (
        f"The installed plugin {plugin!r} ({installed}) differs from this project's source "
        f"({shown}): the checks ran against the installed copy. Reinstall it, or install it "
        "editable once (pip install -e .) so that it follows your edits."
    )
