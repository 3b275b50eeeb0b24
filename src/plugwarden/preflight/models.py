"""Model files declared in a manifest, checked without loading them.

Paths: ``~`` and environment variables expanded; a relative path resolves
against the operator's ``models_dir`` for the plugin when set, else the
plugin's package directory. A file must exist, be non-empty, reach
``min_bytes``, and be structurally whole for its format (see
:mod:`plugwarden.preflight.formats`). An optional ``sha256`` is streamed and
remembered per (path, size, mtime), on disk, so it is not recomputed at
every start.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from pathlib import Path

from plugwarden.exceptions import CorruptFile
from plugwarden.plugin.lifecycle import State
from plugwarden.plugin.manifest import ModelSpec
from plugwarden.preflight.context import PreflightContext, Problem
from plugwarden.preflight.formats import check_format

__all__ = ["check_models", "file_problem", "resolve"]


def resolve(spec_path: str, package_dir: Path | None, models_dir: str | None) -> Path:
    path = Path(os.path.expandvars(os.path.expanduser(spec_path)))
    if path.is_absolute():
        return path
    if models_dir:
        base = Path(os.path.expandvars(os.path.expanduser(models_dir)))
    else:
        base = package_dir or Path.cwd()
    return (base / path).resolve()


def check_models(context: PreflightContext) -> list[Problem]:
    problems, resolved = [], {}
    for name, spec in context.manifest.models.items():
        path = resolve(spec.path, context.source.package_dir, context.models_dir)
        resolved[name] = str(path)
        reason = file_problem(path, spec)
        if reason is not None:
            problems.append(Problem(State.UNAVAILABLE, reason))
    context.facts["models"] = resolved
    return problems


def file_problem(path: Path, spec: ModelSpec) -> str | None:
    """The reason ``path`` cannot serve as model ``spec``, or None if it can."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return f"Model file not found: {path}"
    except OSError as exc:
        return f"Model file unreadable: {path} ({exc.strerror}). Fix its permissions."
    if path.is_dir():
        return f"Model path is a directory, not a file: {path}"
    corrupted = f"Model file truncated or corrupted: {path}. Re-download."
    if size == 0:
        return f"{corrupted} (it is empty)"
    if spec.min_bytes is not None and size < spec.min_bytes:
        return f"{corrupted} ({size} bytes, expected at least {spec.min_bytes})"
    try:
        with path.open("rb") as handle:
            check_format(handle, size, path.suffix.lower())
    except CorruptFile as exc:
        return f"{corrupted} ({exc})"
    except OSError as exc:
        return f"Model file unreadable: {path} ({exc.strerror})"
    if spec.sha256 is not None:
        digest = _sha256(path)
        if digest != spec.sha256:
            return f"{corrupted} (sha256 {digest[:12]}... does not match {spec.sha256[:12]}...)"
    return None


# -- sha256, remembered per (path, size, mtime) ---------------------------------------

_cache_lock = threading.Lock()


def _cache_file() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "plugwarden" / "sha256.json"


def _sha256(path: Path) -> str:
    stat = path.stat()
    key = f"{path}|{stat.st_size}|{stat.st_mtime_ns}"
    with _cache_lock:
        cache = _load_cache()
        if key in cache:
            return cache[key]
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    value = digest.hexdigest()
    with _cache_lock:
        cache = _load_cache()
        cache[key] = value
        _save_cache(cache)
    return value


def _load_cache() -> dict[str, str]:
    try:
        data = json.loads(_cache_file().read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _save_cache(cache: dict[str, str]) -> None:
    target = _cache_file()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(
            "w", dir=target.parent, delete=False, encoding="utf-8"
        ) as out:
            json.dump(dict(list(cache.items())[-1000:]), out)
        os.replace(out.name, target)
    except OSError:
        pass  # a cache that cannot be written only costs a recomputation
