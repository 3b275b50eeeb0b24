"""One request's round trip to a worker, and what a lost one means.

:func:`await_reply` reads frames until the request's reply: a job's
progress frames go to its control on the way (a flood of them, or one
outside a job, is a protocol violation). :func:`lost_call` turns a worker
lost during a call (timed out, over memory, cancelled, dead, closed) into
the call's result, naming the cause.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from plugwarden.error_types import ErrorType
from plugwarden.isolation import wire
from plugwarden.isolation.fates import Fate, FateName, KillCause
from plugwarden.isolation.reporting import CallControl
from plugwarden.isolation.runner import (
    ENDED,
    GPU_FAULT_HINT,
    gpu_memory_reason,
    memory_reason,
    tasks_reason,
    timeout_reason,
)
from plugwarden.plugin.limits import Limits
from plugwarden.result import CallResult, Guard

if TYPE_CHECKING:  # it reads a worker the runner hands it
    from plugwarden.isolation.process.handle import WorkerProcess

__all__ = ["CRASH_HINT", "GUARD_KILLS", "await_reply", "cancelled_reason", "lost_call", "tripped"]

CRASH_HINT = (
    "A crash in the plugin or a library it uses: the restart policy brings it back; if it "
    "recurs, the plugin's author must fix it (its output is in the host's log)."
)
# A job's worker may send this many progress frames, plus this many a second
# (it throttles itself to 10 a second): past that it floods the host.
PROGRESS_BURST, PROGRESS_RATE = 20, 20


def cancelled_reason(control: CallControl, where: str | None = None) -> str:
    """``where``: where the plugin was stuck when its worker was killed."""
    stuck = f" (stuck {where})" if where else ""
    return (
        f"Cancelled: the plugin did not stop within cancel_grace_s ({control.grace_s:g}s) of "
        f"the cancel{stuck}, so its worker was killed; a fresh one replaces it. A plugin stops "
        "sooner by checking plugwarden.cancelled()."
    )


def await_reply(
    worker: WorkerProcess, request_id: int, deadline: float, control: CallControl | None
) -> tuple[FateName, Any]:
    """(MESSAGE, the checked reply), (VIOLATION, why), or the fate of
    :meth:`WorkerProcess.receive` that ended the wait (timeout, died, oversize)."""
    start = time.monotonic()
    frames = 0
    while True:
        status, data = worker.receive(deadline)
        if status != Fate.REPLY:
            return status, data
        try:
            message = wire.decode(data, request_id, worker.inner_pid)
            if message["kind"] != "progress":
                return Fate.MESSAGE, message
            frames += 1
            if control is None:
                raise wire.ProtocolViolation("progress frame outside a job")
            if frames > PROGRESS_BURST + PROGRESS_RATE * (time.monotonic() - start):
                raise wire.ProtocolViolation(f"progress flood ({frames} reports)")
            report = wire.progress(message)
            control.progress(report.done, report.total, report.message)
        except wire.ProtocolViolation as exc:
            return Fate.VIOLATION, exc.reason


def lost_call(
    worker: WorkerProcess,
    status: FateName,
    call: str,
    timeout_s: float,
    elapsed: float,
    control: CallControl | None,
    closing: str | None,
    limits: Limits,
) -> CallResult:
    """The result of ``call`` (e.g. ``run('tool')``) whose worker was lost
    (with where it was stuck, when the host killed it for not ending)."""
    what = call.partition("(")[0]
    if status == Fate.DIED and worker.killed_by is None:
        # Not ended by the host: the zygote's exit report follows the EOF,
        # and says whether the zygote's memory sweep killed it.
        worker.exited.wait(2.0)
    timed_out = status == Fate.TIMEOUT
    if closing is not None and not timed_out and worker.killed_by == KillCause.CLOSE:
        return CallResult.failure(ENDED[closing], closing, hook=what, duration_ms=elapsed)
    if control is not None and not timed_out and worker.killed_by == KillCause.CANCEL:
        return CallResult.failure(
            cancelled_reason(control, worker.stuck),
            ErrorType.CANCELLED,
            hook=what,
            duration_ms=elapsed,
        )
    guard: Guard
    found = tripped(worker, limits)
    if timed_out:
        knob = None if control is None else control.timeout_knob
        error, error_type = timeout_reason(what, timeout_s, knob, worker.stuck), ErrorType.TIMEOUT
        guard = "timeout"
    elif found is not None:
        error, error_type, guard = found
    else:
        worker.exited.wait(2.0)
        error = f"{worker.death_reason()} during {call}. {CRASH_HINT}"
        error_type, guard = ErrorType.WORKER_DIED, "crash"
    return CallResult.failure(error, error_type, hook=what, duration_ms=elapsed, guard=guard)


# The guards that kill a worker between calls too (the zygote's sweep, the GPU watch).
GUARD_KILLS = (KillCause.MEMORY, KillCause.TASKS, KillCause.GPU_MEMORY, KillCause.GPU_FAULT)


def tripped(worker: WorkerProcess, limits: Limits) -> tuple[str, str, Guard] | None:
    """(error, error_type, guard) of a worker one of GUARD_KILLS killed; else None."""
    cause = worker.killed_by
    if cause == KillCause.MEMORY:
        return memory_reason(limits.memory_mb, worker.peak_bytes), ErrorType.MEMORY_LIMIT, "memory"
    if cause == KillCause.TASKS:
        return tasks_reason(limits.max_tasks, worker.peak_tasks), ErrorType.TASK_LIMIT, "tasks"
    if cause == KillCause.GPU_MEMORY:
        error = gpu_memory_reason(limits.gpu_memory_mb, worker.gpu_peak_bytes)
        return error, ErrorType.GPU_MEMORY_LIMIT, "gpu_memory"
    if cause == KillCause.GPU_FAULT:
        error = f"{worker.gpu_fault}: the worker was recycled. {GPU_FAULT_HINT}"
        return error, ErrorType.GPU_FAULT, "gpu_fault"
    return None
