"""What the host reads of an installed distribution's metadata: its name,
version and requirements, from the head of its ``METADATA`` (or
``PKG-INFO``) file.

``Distribution.metadata`` (and ``.name``, ``.version``, ``.requires``,
which go through it) parses the whole file as an email message, about ten
times slower; discovery and the packages check read every distribution on
the path at each start, so that was tens of milliseconds of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import Distribution

__all__ = ["DistHead", "read_head"]


@dataclass(frozen=True, slots=True)
class DistHead:
    name: str | None
    version: str | None
    # None: an egg-info without Requires-Dist headers (its requires.txt
    # says: ask dist.requires); a dist-info's METADATA lists them all.
    requires: tuple[str, ...] | None


def read_head(dist: Distribution) -> DistHead:
    """``dist``'s Name, Version and Requires-Dist headers: the lines before
    the first empty one (the long description after it is never split)."""
    text = dist.read_text("METADATA")
    complete = text is not None  # a dist-info: no Requires-Dist is no requirement
    text = text or dist.read_text("PKG-INFO") or ""
    name = version = None
    needs: list[str] = []
    for line in text.split("\n\n", 1)[0].splitlines():
        if not line:
            break  # the headers end at the first empty line (\r\n files too)
        key, _, value = line.partition(":")
        if key == "Name":
            name = value.strip()
        elif key == "Version":
            version = value.strip()
        elif key == "Requires-Dist":
            needs.append(value.strip())
    return DistHead(name, version, tuple(needs) if needs or complete else None)
