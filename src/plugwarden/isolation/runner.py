"""The seam between the host and where a plugin's code runs.

A :class:`Runner` loads one plugin and calls its hooks, enforcing the timeout
and memory limits in its own way: ``inline`` in the host process (it can give
up on a call but not stop it), ``process`` in worker processes (it kills the
worker). Runners are made by :class:`~plugwarden.isolation.backends.Backends`;
they never change a plugin's state themselves: a lost worker is reported to
the supervisor as a :class:`WorkerLoss`, and the supervisor decides.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from plugwarden.error_types import ErrorType
from plugwarden.isolation.reporting import CallControl
from plugwarden.plugin.limits import Limits
from plugwarden.preflight.causes import REINSTALL, SEE_LOG
from plugwarden.result import CallResult, Guard

if TYPE_CHECKING:  # the worker imports this module: discovery stays out of it
    from plugwarden.isolation.process.sandbox import Sandbox
    from plugwarden.plugin.discovery import PluginSource
    from plugwarden.plugin.venv import PluginEnvironment
    from plugwarden.settings import Placement

__all__ = [
    "ENDED",
    "LossHandler",
    "LossRoute",
    "Runner",
    "RunnerFactory",
    "WorkerLoss",
    "hook_failure",
    "memory_reason",
    "tasks_reason",
    "timeout_reason",
    "validate_verdict",
]


# What a call in flight is told when the host ends it, by its error type.
ENDED = {
    ErrorType.RESTARTED: "The plugin was restarted while this call ran. Retry it.",
    ErrorType.CLOSED: "The host closed while this call ran.",
    ErrorType.UNINSTALLED: "The plugin was uninstalled while this call ran.",
    ErrorType.SHUTTING_DOWN: "The server shut down before this call finished. Retry it "
    "against another instance, or once the server is back.",
}


@dataclass(frozen=True, slots=True)
class WorkerLoss:
    """A worker that can no longer serve: killed by a guard, or dead.

    ``serving`` counts the workers still able to serve after this loss: zero
    means the plugin cannot answer until the worker is replaced or the plugin
    restarted. ``replaceable``: a new worker can take its place (False for
    an inline plugin, whose abandoned call may still be running in the host)."""

    reason: str
    guard: Guard | None  # None: the host ended it on purpose (a forced cancel)
    during_call: bool
    serving: int
    replaceable: bool = True


LossHandler = Callable[[WorkerLoss], None]


class LossRoute:
    """Where a runner's lost workers are reported: ``report(generation,
    loss)``, as the bring-up ``generation`` it serves. An upgrade re-points
    it: a version on trial reports to its trial, a version switched to (or
    rolled back to) as the plugin's new generation."""

    def __init__(self, report: Callable[[int, WorkerLoss], None], generation: int) -> None:
        self.report = report
        self.generation = generation

    def __call__(self, loss: WorkerLoss) -> None:
        self.report(self.generation, loss)


class Runner(Protocol):
    source: PluginSource
    limits: Limits
    replacement_note: str | None  # how its last replace_lost() went, for the history
    # What confines its workers: protection -> "enforced", "granted", or
    # "not available here: <why>" (docs/guides/isolation.md#what-a-plugin-may-reach).
    protections: dict[str, str]

    def load(self) -> None:
        """Import and register the plugin. Raises ``LoadError`` with the reason."""

    def initialise(self, config: dict[str, Any]) -> str | None:
        """``init(config)`` then ``validate()`` wherever the plugin runs (each
        worker); None when ready, else the reason it is not."""

    def call(
        self,
        hook: str,
        kwargs: dict[str, Any],
        timeout_s: float,
        wait_s: float | None = None,
        control: CallControl | None = None,
    ) -> CallResult:
        """Call one hook; never raises. ``wait_s`` bounds the wait for a free
        worker (None: ``timeout_s``); past it the result is ``Busy``. A job's
        call carries its ``control``: progress out, cancel in."""

    def replace_lost(self) -> str | None:
        """Bring the pool back to its size after a loss; None when done,
        else the reason a new worker could not be made ready."""

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no call is in flight, at most ``timeout_s``; whether none is."""

    def close(self, why: str) -> None:
        """Release everything; calls in flight end with ``error_type`` ``why``
        (an :class:`~plugwarden.ErrorType` of the host's own). Not reused."""

    def resident_bytes(self) -> int | None:
        """Memory of the plugin's own process tree, or None where not separate."""

    def last_resident_bytes(self) -> int | None:
        """:meth:`resident_bytes` as last read by the guards: no /proc read."""

    def pids(self) -> list[int]:
        """The plugin's live worker processes on this machine (none for inline)."""

    def nodes(self) -> list[str]:
        """Where each serving worker runs: ``local``, or a Ray node's address."""


class RunnerFactory(Protocol):
    """What makes runners (:class:`~plugwarden.isolation.backends.Backends`),
    as the supervisor sees it."""

    def make(
        self,
        source: PluginSource,
        limits: Limits,
        on_loss: LossHandler,
        placement: Placement | None = None,
        sandbox: Sandbox | None = None,
        preload: tuple[str, ...] = (),
    ) -> Runner:
        """A runner for ``source``; it reports each lost worker to ``on_loss``.
        ``sandbox``: its workers' confinement and environment; ``preload``:
        modules its zygote imports first."""

    def refuse_new(self) -> None:
        """From now on :meth:`make` raises: the host is closing."""

    def retire(self, environment: PluginEnvironment) -> None:
        """Stop the zygotes of ``environment``: no runner uses it any more."""

    def close_runners(self, why: str) -> None:
        """Close every runner made here (calls in flight end with ``why``)."""


def timeout_reason(
    hook: str, timeout_s: float, knob: str | None = None, where: str | None = None
) -> str:
    """``where``: where the call was stuck ("in track at pipeline.py:88")."""
    knob = knob or {"run": "timeout_s", "health": "health_timeout_s"}.get(hook, "load_timeout_s")
    what = "Plugin execution" if hook == "run" else f"Plugin {hook}"
    stuck = f" (stuck {where})" if where else ""
    return f"{what} timed out after {timeout_s:g}s{stuck}. Increase {knob} if needed."


def memory_reason(limit_mb: float, peak_bytes: int) -> str:
    return (
        f"Plugin exceeded {limit_mb:g} MB memory limit (peak seen {peak_bytes / 2**20:.0f} MB). "
        "Increase memory_mb if needed."
    )


GPU_FAULT_HINT = "If it recurs, check the GPU (nvidia-smi -q, the kernel log's NVRM lines)."


def gpu_memory_reason(limit_mb: float, peak_bytes: int) -> str:
    return (
        f"Plugin exceeded {limit_mb:g} MB GPU memory limit (peak seen by NVML "
        f"{peak_bytes / 2**20:.0f} MB); the worker was killed. Increase gpu_memory_mb if "
        "needed, or cap the plugin's allocator (e.g. torch's per-process memory fraction)."
    )


def tasks_reason(limit: int, counted: int) -> str:
    return (
        f"Plugin exceeded its {limit} task limit ({counted} threads and processes counted); "
        "the worker was killed. Increase max_tasks if it truly needs that many."
    )


def hook_failure(result: CallResult) -> str:
    """Why a failed init/validate leaves the plugin FAILED."""
    if result.guard is not None:
        return result.error or f"{result.hook}() tripped the {result.guard} guard"
    return (
        f"{result.hook}() failed with {result.error}. {SEE_LOG} Fix what it reports (a setting "
        "in the plugin's config table, a model file, or the plugin's code), then restart it."
    )


def validate_verdict(result: CallResult) -> str | None:
    """None when validate() said ready, else the reason it is not."""
    if not result.ok:
        return hook_failure(result)
    value = result.result
    if value is None or value is True:
        return None
    if value is False:
        return (
            "validate() returned False: the plugin reports it is not ready. Its own log lines "
            "in the host's log say why; fix what it needs, then restart it."
        )
    if isinstance(value, str):
        return f"validate() reported: {value}"
    return (
        f"validate() returned {type(value).__name__}; expected None, True, False or a "
        f"reason string. Fix the plugin's validate(), then {REINSTALL}."
    )
