"""Plugin manifests: ``manifest.toml`` or ``manifest.json``, read without
importing the plugin's code (docs/guides/writing-plugins.md#a-plugin-in-one-file).

Every key is optional. Unknown top-level keys are ignored (ForgeSyte manifests
carry UI keys of their own); keys under ``[guards]`` are checked strictly,
because a typo there would silently drop a limit.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plugwarden.exceptions import ManifestError
from plugwarden.plugin import numbers
from plugwarden.plugin.permissions import Permissions, permissions

__all__ = [
    "MANIFEST_KEYS",
    "MANIFEST_NAMES",
    "OPERATOR_ISOLATIONS",
    "RAY_ISOLATIONS",
    "GuardSettings",
    "Manifest",
    "ModelSpec",
    "model_specs",
    "read_manifest",
]

MANIFEST_NAMES = ("manifest.toml", "manifest.json")
RAY_ISOLATIONS = ("ray", "ray-inline")
# Trust (in the host) and placement (on a cluster) are the operator's call alone.
OPERATOR_ISOLATIONS = ("inline", *RAY_ISOLATIONS)
ISOLATIONS = ("process", *OPERATOR_ISOLATIONS)
MANIFEST_KEYS = (
    "name", "version", "description", "requires_gpu", "packages", "install", "models", "tools",
    "guards", "permissions", "preload",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class ModelSpec:
    path: str
    sha256: str | None = None
    min_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class GuardSettings:
    """Guard values; ``None`` means "not set here, use the next layer down"."""

    timeout_s: float | None = None
    load_timeout_s: float | None = None
    memory_mb: float | None = None
    isolation: str | None = None
    workers: int | None = None
    max_result_bytes: int | None = None
    job_timeout_s: float | None = None
    max_tasks: int | None = None
    sandbox: bool | None = None
    worker_user: str | None = None
    gpu_memory_mb: float | None = None

    def merged_over(self, base: GuardSettings) -> GuardSettings:
        """These values where set, ``base`` elsewhere."""
        return GuardSettings(
            **{
                name: getattr(base, name) if getattr(self, name) is None else getattr(self, name)
                for name in self.__dataclass_fields__
            }
        )


@dataclass(frozen=True, slots=True)
class Manifest:
    path: Path | None = None
    name: str | None = None
    version: str | None = None
    description: str | None = None
    requires_gpu: bool = False
    packages: tuple[str, ...] = ()
    preload: tuple[str, ...] = ()  # imported by its zygote before it forks workers
    install: str | None = None  # the one command that installs ``packages``
    models: dict[str, ModelSpec] = field(default_factory=dict)
    tools: dict[str, str] = field(default_factory=dict)
    # tool -> the arguments of an example call (checks run it: PW007, upgrades)
    examples: dict[str, dict[str, Any]] = field(default_factory=dict)
    guards: GuardSettings = field(default_factory=GuardSettings)
    permissions: Permissions = field(default_factory=Permissions)
    unknown: tuple[str, ...] = ()  # top-level keys it does not know (typos): warned about

    @property
    def unknown_reason(self) -> str | None:
        """The warning for unknown top-level keys, or None."""
        if not self.unknown:
            return None
        return (
            f"Manifest {self.path} has unknown key(s) {', '.join(map(repr, self.unknown))}, "
            f"ignored: a typo? Known keys: {', '.join(MANIFEST_KEYS)}."
        )


def read_manifest(package_dir: Path | None) -> Manifest:
    """The manifest in ``package_dir``, or an empty one if there is none.
    Raises :class:`ManifestError` naming the file, key and expected type."""
    if package_dir is None:
        return Manifest()
    for filename in MANIFEST_NAMES:
        path = package_dir / filename
        if path.is_file():
            return _parse(path, _load(path))
    return Manifest()


def _load(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(str(path), None, f"cannot be read ({exc})") from exc
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError(str(path), None, f"not valid TOML ({exc})") from exc
    except json.JSONDecodeError as exc:
        raise ManifestError(
            str(path), None, f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from exc
    except RecursionError:
        raise ManifestError(str(path), None, "nests too deeply to be read") from None
    if not isinstance(data, dict):
        raise ManifestError(str(path), None, f"expected a table/object, got {_kind(data)}")
    return data


def _kind(value: object) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a table",
    }.get(type(value), type(value).__name__)


class _Reader:
    """Typed access to one manifest's keys; every mismatch names file and key."""

    def __init__(self, path: Path, data: dict[str, Any]) -> None:
        self.path = path
        self.data = data

    def fail(self, key: str, expected: str, value: object) -> ManifestError:
        return ManifestError(str(self.path), key, f"expected {expected}, got {_kind(value)}")

    def string(self, table: dict[str, Any], key: str, where: str | None = None) -> str | None:
        value = table.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self.fail(where or key, "a string", value)
        return value


def _parse(path: Path, data: dict[str, Any]) -> Manifest:
    reader = _Reader(path, data)
    requires_gpu = data.get("requires_gpu", False)
    if not isinstance(requires_gpu, bool):
        raise reader.fail("requires_gpu", "a boolean (true/false)", requires_gpu)
    return Manifest(
        path=path,
        name=reader.string(data, "name"),
        version=reader.string(data, "version"),
        description=reader.string(data, "description"),
        requires_gpu=requires_gpu,
        packages=_packages(reader),
        preload=_packages(reader, "preload"),
        install=reader.string(data, "install"),
        models=_models(reader),
        tools=_tools(reader),
        examples=_examples(reader),
        guards=_guards(reader),
        permissions=permissions(
            data.get("permissions", {}),
            where="permissions",
            fail=lambda key, msg: ManifestError(str(path), key, msg),
        ),
        unknown=tuple(sorted(key for key in data if key not in MANIFEST_KEYS)),
    )


def _packages(reader: _Reader, key: str = "packages") -> tuple[str, ...]:
    value = reader.data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise reader.fail(key, "a list of import names (strings)", value)
    return tuple(value)


def _models(reader: _Reader) -> dict[str, ModelSpec]:
    return model_specs(reader.data.get("models", {}), where="models", path=reader.path)


def model_specs(value: object, *, where: str, path: Path | None = None) -> dict[str, ModelSpec]:
    """A ``models`` table (name -> path, or a table with ``path``, ``sha256``,
    ``min_bytes``), checked; raises :class:`ManifestError` naming the key."""
    reader = _Reader(path or Path(where), {})
    if not isinstance(value, dict):
        raise reader.fail(where, "a table of model name -> path", value)
    models: dict[str, ModelSpec] = {}
    for name, entry in value.items():
        key = f"{where}.{name}"
        if isinstance(entry, str):
            models[name] = ModelSpec(entry)
            continue
        if not isinstance(entry, dict):
            raise reader.fail(key, "a path string or a table with 'path'", entry)
        model_path = reader.string(entry, "path", f"{key}.path")
        if not model_path:
            raise ManifestError(str(reader.path), f"{key}.path", "is required")
        sha256 = reader.string(entry, "sha256", f"{key}.sha256")
        if sha256 is not None and (
            len(sha256) != 64 or any(c not in "0123456789abcdefABCDEF" for c in sha256)
        ):
            raise ManifestError(str(reader.path), f"{key}.sha256", "expected 64 hex digits")
        min_bytes = entry.get("min_bytes")
        if min_bytes is not None and (
            isinstance(min_bytes, bool) or not isinstance(min_bytes, int) or min_bytes < 0
        ):
            raise reader.fail(f"{key}.min_bytes", "a non-negative integer", min_bytes)
        models[name] = ModelSpec(model_path, sha256.lower() if sha256 else None, min_bytes)
    return models


_TOOLS_FORMS = (
    'either a table of tool name -> description ([tools] then greet = "Say hello", or '
    "[tools.greet] with description and example) or a list of tables each with an "
    "'id' (or 'name'), a 'description' and an optional 'example' "
    '([[tools]] then id = "greet")'
)


def _tool_entries(reader: _Reader) -> list[tuple[str, Any]]:
    """Each tool's name and its entry: a description, or a table."""
    value = reader.data.get("tools", {})
    if isinstance(value, dict):
        return list(value.items())
    if not isinstance(value, list):
        raise reader.fail("tools", _TOOLS_FORMS, value)
    # ForgeSyte form: a list of {"id"|"name": ..., "description": ...}.
    items = []
    for index, entry in enumerate(value):
        tool_name = entry.get("id") or entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(tool_name, str):
            raise reader.fail(f"tools[{index}]", _TOOLS_FORMS, entry)
        items.append((tool_name, entry))
    return items


def _tools(reader: _Reader) -> dict[str, str]:
    tools: dict[str, str] = {}
    for tool_name, entry in _tool_entries(reader):
        description = entry.get("description", "") if isinstance(entry, dict) else entry
        if not isinstance(description, str):
            raise reader.fail(f"tools.{tool_name}", "a description string", description)
        tools[tool_name] = description
    return tools


def _examples(reader: _Reader) -> dict[str, dict[str, Any]]:
    examples: dict[str, dict[str, Any]] = {}
    for tool_name, entry in _tool_entries(reader):
        example = entry.get("example") if isinstance(entry, dict) else None
        if example is None:
            continue
        if not isinstance(example, dict):
            raise reader.fail(
                f"tools.{tool_name}.example", 'a table of arguments ({name = "Ada"})', example
            )
        examples[tool_name] = example
    return examples


def _guards(reader: _Reader) -> GuardSettings:
    table = reader.data.get("guards", {})
    if not isinstance(table, dict):
        raise reader.fail("guards", "a table", table)
    return guard_settings(
        table, where="guards", fail=lambda key, msg: ManifestError(str(reader.path), key, msg)
    )


def guard_settings(
    table: dict[str, Any],
    *,
    where: str,
    fail: Callable[[str, str], Exception],
    strict: bool = True,
) -> GuardSettings:
    """Guard values out of a manifest's ``[guards]`` or a config table.

    ``fail(key, message)`` builds the error to raise; with ``strict``, unknown
    keys are errors too."""
    known = set(GuardSettings.__dataclass_fields__)
    if strict:
        for key in table:
            if key not in known:
                raise fail(f"{where}.{key}", f"unknown guard key; expected one of {sorted(known)}")
    values: dict[str, Any] = {}
    for key in ("timeout_s", "load_timeout_s", "memory_mb", "job_timeout_s", "gpu_memory_mb"):
        value = table.get(key)
        high = numbers.MAX_AMOUNT * 16 if key.endswith("memory_mb") else numbers.MAX_SECONDS
        values[key] = (
            None if value is None else numbers.positive(value, f"{where}.{key}", fail, high=high)
        )
    isolation = table.get("isolation")
    if isolation is not None and isolation not in ISOLATIONS:
        expected = "'process', 'inline', 'ray' or 'ray-inline'"
        raise fail(f"{where}.isolation", f"expected {expected}, got {isolation!r}")
    counts: dict[str, int | None] = dict.fromkeys(("workers", "max_tasks", "max_result_bytes"))
    for key, low, high in (
        ("workers", 1, 64),
        ("max_tasks", 8, 65536),
        ("max_result_bytes", 1, numbers.MAX_BYTES),
    ):
        if table.get(key) is not None:
            counts[key] = numbers.whole(table[key], f"{where}.{key}", fail, low=low, high=high)
    sandbox = table.get("sandbox")
    if sandbox is not None and not isinstance(sandbox, bool):
        raise fail(f"{where}.sandbox", f"expected true or false, got {sandbox!r}")
    user = table.get("worker_user")
    if user is not None and (not isinstance(user, str) or not user.strip()):
        raise fail(f"{where}.worker_user", f"expected a user name, got {user!r}")
    return GuardSettings(
        isolation=isolation,
        **counts,
        sandbox=sandbox,
        worker_user=user,
        **values,
    )
