"""One plugin's effective settings, resolved once per bring-up.

:func:`resolve` is the one place that merges the layers, lowest first: the
host's ``[defaults]``, the plugin's manifest, then the operator's
``[plugins.NAME]`` table, which always wins. Its guards, isolation,
restart policy, GPU need, model files and placement come out together as a
:class:`PluginSettings`; nothing else merges manifest and config. What only
the operator may decide (running a plugin in the host process or on a Ray
cluster) is never taken from a manifest; the operator's ``[defaults]`` are a
ceiling for what a manifest asks (more time, memory, workers, result bytes)
unless the operator's table for the plugin sets that guard itself; the
plugin's history says what was ignored or capped (``notes``). docs/reference/config.md
lists every key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Any

from plugwarden.config import HostConfig
from plugwarden.plugin.limits import Limits
from plugwarden.plugin.manifest import OPERATOR_ISOLATIONS, GuardSettings, Manifest
from plugwarden.plugin.permissions import Grants, Permissions, within
from plugwarden.plugin.policy import RestartPolicy
from plugwarden.sections import STATE_ENV

__all__ = [
    "Placement",
    "PluginSettings",
    "host_secrets",
    "plugin_home",
    "resolve",
    "resolve_policy",
]


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a plugin's workers may run, for backends that place them (Ray):
    the operator's ``num_cpus``/``num_gpus`` and whether it needs a GPU."""

    num_cpus: float | None = None
    num_gpus: float | None = None
    requires_gpu: bool = False
    gpus: tuple[int, ...] | None = None  # the GPUs its process workers may use (None: any)


@dataclass(frozen=True, slots=True)
class PluginSettings:
    """Everything the host runs one plugin with, every layer merged."""

    name: str
    enabled: bool = True
    manifest: Manifest = field(default_factory=Manifest)  # with the operator's overrides
    limits: Limits = field(default_factory=Limits)
    policy: RestartPolicy = field(default_factory=RestartPolicy)
    placement: Placement = field(default_factory=Placement)
    init_config: dict[str, Any] = field(default_factory=dict)  # the operator's free-form keys
    models_dir: str | None = None
    env: dict[str, str] = field(default_factory=dict)  # over the workers' clean environment
    grants: Grants = field(default_factory=Grants)  # what its workers may reach
    notes: tuple[str, ...] = ()  # warnings for the plugin's history


def resolve(name: str, manifest: Manifest, config: HostConfig) -> PluginSettings:
    """``name``'s settings: ``config``'s defaults, then ``manifest``, then
    the operator's table for it."""
    table = config.plugin(name)
    notes = [] if manifest.unknown_reason is None else [manifest.unknown_reason]
    asked = manifest.guards.isolation
    if asked in OPERATOR_ISOLATIONS and table.guards.isolation is None:
        where = "in the host process" if asked == "inline" else "on a Ray cluster"
        notes.append(
            f'The manifest asks for isolation = "{asked}"; ignored: only the operator '
            f"can run a plugin {where} ([plugins.{name}] isolation = "
            f'"{asked}" or [defaults]).'
        )
    # Trust (in-process) and placement (a cluster) are the operator's call:
    # [defaults] or [plugins.NAME] decide, whatever the manifest says.
    for key in ("sandbox", "worker_user"):
        if getattr(manifest.guards, key) is not None:
            notes.append(
                f"The manifest sets {key}; ignored: only the operator decides how a plugin's "
                f"workers are confined ([plugins.{name}] {key} in the host config)."
            )
    guards = replace(manifest.guards, isolation=None, sandbox=None, worker_user=None)
    guards, capped = _within_defaults(name, guards, table.guards, config.defaults)
    notes.extend(capped)
    base = GuardSettings(**{k: getattr(config.defaults, k) for k in Limits.__dataclass_fields__})
    merged = table.guards.merged_over(guards.merged_over(base))
    limits = Limits(**{k: getattr(merged, k) for k in Limits.__dataclass_fields__})
    # The operator's word wins: a GPU plugin run on CPU on purpose, model
    # files the operator provides (over the manifest's).
    requires_gpu = manifest.requires_gpu if table.requires_gpu is None else table.requires_gpu
    if manifest.preload and not table.preload:
        notes.append(
            f"The manifest asks to preload {', '.join(manifest.preload)}; not done: preloading "
            "runs those modules in the plugin's zygote, before any sandbox. The operator "
            f"allows it with [plugins.{name}] preload = true."
        )
    effective = replace(
        manifest,
        requires_gpu=requires_gpu,
        models={**manifest.models, **table.models},
        preload=manifest.preload if table.preload else (),
    )
    return PluginSettings(
        name=name,
        enabled=table.enabled,
        manifest=effective,
        limits=limits,
        policy=resolve_policy(name, config),
        placement=Placement(table.num_cpus, table.num_gpus, requires_gpu, table.gpus),
        init_config=dict(table.settings),
        models_dir=table.models_dir,
        env=dict(table.env),
        grants=_grants(name, manifest, config, notes),
        notes=tuple(notes),
    )


# Guards where more is more: a manifest may lower each, never raise it past
# the operator's [defaults] unless the operator's own [plugins.NAME] sets it.
CEILINGS = ("timeout_s", "load_timeout_s", "memory_mb", "workers", "max_result_bytes",
            "job_timeout_s", "max_tasks", "gpu_memory_mb")  # fmt: skip


def _within_defaults(
    name: str, asked: GuardSettings, operator: GuardSettings, defaults: Limits
) -> tuple[GuardSettings, list[str]]:
    """``asked`` (a manifest's guards) capped at ``defaults`` wherever the
    operator's table for the plugin is silent; and a note for each cap."""
    capped: dict[str, Any] = {}
    notes = []
    for key in CEILINGS:
        value, ceiling = getattr(asked, key), getattr(defaults, key)
        if value is None or getattr(operator, key) is not None or value <= ceiling:
            continue
        if key == "gpu_memory_mb" and not ceiling:  # no GPU budget by default: no ceiling
            continue
        capped[key] = ceiling
        notes.append(
            f"The manifest asks for {key} = {value:g}, over the operator's default "
            f"({ceiling:g}); capped at {ceiling:g}. To grant it, set [plugins.{name}] "
            f"{key} = {value:g} in the host config."
        )
    return replace(asked, **capped), notes


WORKER_USER_HOMES = "/var/lib/plugwarden/plugins"


def plugin_home(name: str, worker_user: str = "") -> str:
    """Where a plugin's private state and temporary directories live:
    ``$XDG_STATE_HOME/plugwarden/plugins/NAME`` (``~/.local/state`` by
    default), or, for workers that run as another user (``worker_user``),
    ``/var/lib/plugwarden/plugins/NAME``, which that user can reach."""
    if worker_user:
        return os.path.join(WORKER_USER_HOMES, name)
    state = os.environ.get(STATE_ENV) or os.path.expanduser("~/.local/state")
    return os.path.join(state, "plugwarden", "plugins", name)


def host_secrets(config: HostConfig) -> tuple[str, ...]:
    """What no plugin may read, whatever it is granted: the host's config
    file and its job database (with SQLite's side files)."""
    secrets = []
    if os.path.isfile(config.source):
        secrets.append(os.path.abspath(config.source))
    database = config.jobs.database()
    if database != ":memory:":
        base = os.path.abspath(database)
        secrets += [base, *(base + side for side in ("-wal", "-shm", "-journal"))]
    return tuple(secrets)


def _grants(name: str, manifest: Manifest, config: HostConfig, notes: list[str]) -> Grants:
    """The manifest's declarations, then the operator's word: the plugin's
    own table replaces them key by key; ``[defaults.permissions]`` decides
    ``network`` where that table is silent and adds its paths to every
    plugin's. A path that holds one of the host's secrets is never granted."""
    table, defaults, declared = (
        config.plugin(name).permissions,
        config.permissions,
        manifest.permissions,
    )
    grants = (
        Permissions(
            network=table.network if table.network is not None else defaults.network,
            read=table.read
            if table.read is not None
            else (*(declared.read or ()), *(defaults.read or ())),
            write=table.write
            if table.write is not None
            else (*(declared.write or ()), *(defaults.write or ())),
        )
        .over(declared)
        .granted()
    )
    secrets = host_secrets(config)
    kept: dict[str, tuple[str, ...]] = {}
    for key in ("read", "write"):
        kept[key] = ()
        for path in getattr(grants, key):
            held = [secret for secret in secrets if within(secret, path)]
            if held:
                notes.append(
                    f"The {key} grant {path} is refused: it holds the host's {held[0]}, which no "
                    "plugin may reach. Grant a narrower path."
                )
            else:
                kept[key] += (path,)
    return replace(grants, read=kept["read"], write=kept["write"])


def resolve_policy(name: str, config: HostConfig) -> RestartPolicy:
    """The host-wide restart policy with the plugin's own keys over it (it
    needs no manifest: the supervisor knows it before a bring-up reads one)."""
    return replace(config.policy, **config.plugin(name).policy)
