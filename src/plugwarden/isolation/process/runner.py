"""Process isolation (docs/guides/isolation.md): the plugin runs in worker processes.

A :class:`ProcessRunner` keeps a pool of ``limits.workers`` workers. A call
that overruns its timeout, or a worker tree past its memory limit, gets that
worker killed; a worker that dies for any reason ends the call it held.
Either way the worker is *lost*: it leaves the pool, the call gets a result
naming the cause, and the loss is reported to the supervisor, which decides
when to replace it (:meth:`ProcessRunner.replace_lost`) or, with no worker
left, to restart the plugin. The other workers keep serving meanwhile. The
host never imports the plugin's code.
"""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass, field
from typing import Any, cast

from plugwarden.error_types import ErrorType
from plugwarden.exceptions import LoadError
from plugwarden.isolation import wire
from plugwarden.isolation.exchange import (
    CRASH_HINT,
    GUARD_KILLS,
    await_reply,
    lost_call,
    tripped,
)
from plugwarden.isolation.fates import Fate, KillCause, KillCauseName
from plugwarden.isolation.gpu import GpuWatch
from plugwarden.isolation.nvml import sticky_cuda_error
from plugwarden.isolation.pool import PooledRunner, WorkerPool
from plugwarden.isolation.process.frames import ResultMemory
from plugwarden.isolation.process.handle import WorkerProcess
from plugwarden.isolation.process.output import OutputPump
from plugwarden.isolation.process.sandbox import Sandbox
from plugwarden.isolation.process.segment import Segment
from plugwarden.isolation.process.stacks import stuck_at, take_stacks
from plugwarden.isolation.process.zygote import Zygote
from plugwarden.isolation.reporting import CallControl
from plugwarden.isolation.runner import (
    LossHandler,
    hook_failure,
)
from plugwarden.plugin.discovery import PluginSource
from plugwarden.plugin.limits import Limits
from plugwarden.result import CallResult
from plugwarden.settings import Placement

__all__ = ["ProcessRunner", "ProcessServices"]


@dataclass(frozen=True, slots=True)
class ProcessServices:
    """What every process runner of one host shares (owned by Backends)."""

    zygote: Zygote
    pump: OutputPump
    results: ResultMemory = field(default_factory=lambda: ResultMemory(2**62))
    blob_bytes: int = 64 * 2**20  # each worker's room for a call's binary arguments
    gpu: GpuWatch = field(default_factory=GpuWatch)  # holds workers to gpu_memory_mb


class ProcessRunner(PooledRunner[WorkerProcess]):
    """One plugin in ``limits.workers`` worker processes; calls take a free
    worker (waiting at most their wait), a lost worker leaves the pool and is
    reported, and :meth:`replace_lost` refills the pool."""

    def __init__(
        self,
        source: PluginSource,
        limits: Limits,
        services: ProcessServices,
        on_loss: LossHandler,
        *,
        sandbox: Sandbox | None = None,
        placement: Placement | None = None,
    ) -> None:
        self.source = source
        self._placement = placement or Placement()
        self._sandbox = (sandbox or Sandbox(enabled=False)).message()
        self.protections: dict[str, str] = {}  # as its last worker reported them
        self.limits = limits
        self._services = services
        self._on_loss = on_loss
        self._pool: WorkerPool[WorkerProcess] = WorkerPool(limits.workers)
        self._config: dict[str, Any] = {}
        self._spawned = 0
        self._gpu_held: dict[int, int] = {}  # GPU memory of discarded workers (pid -> bytes)
        self._on_gpus: weakref.WeakSet[WorkerProcess] = weakref.WeakSet()  # placed, not yet gone

    def uses(self, zygote: Zygote) -> bool:
        """Whether this runner, still open, forks its workers from ``zygote``."""
        return self._services.zygote is zygote and self._pool.closing is None

    # -- bringing workers up -----------------------------------------------------

    def _spawn(self) -> WorkerProcess:
        """A new worker with the plugin imported; raises LoadError."""
        self._spawned += 1
        label = self.source.name
        if self.limits.workers > 1 or self._spawned > self.limits.workers:
            label = f"{label}.{self._spawned - 1}"
        limits, services = self.limits, self._services
        sandbox, gpu = self._placed()
        try:
            worker = WorkerProcess(
                label,
                int(limits.memory_mb * 2**20),
                limits.max_result_bytes + wire.ENVELOPE_BYTES,
                services.zygote,
                services.pump,
                self._died,
                sandbox,
                services.results,
                Segment(services.blob_bytes, limits.max_result_bytes),
            )
            worker.gpu_index = gpu
            if gpu is not None:
                self._on_gpus.add(worker)
        except OSError as exc:
            raise LoadError(
                f"Could not start a worker process: {exc}", ErrorType.WORKER_START
            ) from exc
        source = self.source
        request_id = worker.next_request_id()
        load = wire.Load.encode(
            request_id,
            source.name,
            source.module,
            source.attr,
            list(source.search_path),
            limits.max_result_bytes,
            services.blob_bytes,
        )
        reply = self._exchange(worker, request_id, load, "import", limits.load_timeout_s)
        if isinstance(reply, CallResult):
            raise LoadError(
                reply.error or "import failed", reply.error_type or ErrorType.IMPORT_FAILED
            )
        if reply["kind"] == "loaded":
            self.protections = wire.protections(reply.get("protections"))
            budget = int(limits.gpu_memory_mb * 2**20)
            if budget or worker.gpu_index is not None:  # its memory, or its GPU's faults
                enforced = services.gpu.watch(worker, budget)
                if budget:
                    self.protections["gpu_memory"] = enforced
        if reply["kind"] != "loaded":
            self._discard(worker)
            reason = reply.get("reason")
            kind = reply.get("error_type")
            raise LoadError(
                reason if isinstance(reason, str) else "import failed",
                kind if isinstance(kind, str) else ErrorType.IMPORT_FAILED,
            )
        return worker

    def _placed(self) -> tuple[dict[str, Any], int | None]:
        """A new worker's sandbox, and its GPU: a GPU plugin's worker sees
        only the one with the most memory free (CUDA_VISIBLE_DEVICES), of
        those it may use; raises LoadError (UNAVAILABLE) when its budget
        fits none."""
        if not self._placement.requires_gpu:
            return self._sandbox, None
        budget = int(self.limits.gpu_memory_mb * 2**20)
        placed = [
            (w.gpu_index, budget, w.gpu_bytes)
            for w in list(self._on_gpus)
            if w.gpu_index is not None and not w.exited.is_set()
        ]
        index, refusal = self._services.gpu.place(self._placement.gpus, budget, placed)
        if index is None:
            if refusal:
                raise LoadError(refusal, ErrorType.BACKEND_UNAVAILABLE, unavailable=True)
            return self._sandbox, None  # no NVML to place by: every GPU visible
        # NVML numbers GPUs in PCI bus order; CUDA, unless told, fastest first.
        env = {**self._sandbox.get("env", {}), "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
               "CUDA_VISIBLE_DEVICES": str(index)}  # fmt: skip
        return {**self._sandbox, "env": env}, index

    def _prepare(self, worker: WorkerProcess) -> str | None:
        budget = self.limits.load_timeout_s
        init = self._call_on(worker, "init", {"config": self._config}, budget)
        if not init.ok:
            return hook_failure(init)
        # The worker reduces validate()'s value to its verdict: None or a reason.
        verdict = self._call_on(worker, "validate", {}, budget).decoded()
        if not verdict.ok:
            return hook_failure(verdict)
        if verdict.result is not None and not isinstance(verdict.result, str):
            return "validate() verdict from the worker is not a reason string (protocol)."
        return verdict.result

    # -- calls -------------------------------------------------------------------

    def _call_on(
        self,
        worker: WorkerProcess,
        hook: str,
        kwargs: dict[str, Any],
        timeout_s: float,
        control: CallControl | None = None,
    ) -> CallResult:
        request_id = worker.next_request_id()
        if hook == "validate":
            request = wire.Validate.encode(request_id)
        else:
            request = wire.Call.encode(request_id, hook, kwargs, control is not None)
        reply = self._exchange(
            worker, request_id, request, hook, timeout_s, kwargs.get("tool"), control
        )
        if isinstance(reply, CallResult):
            return reply
        try:
            result = wire.outcome(reply)
        except wire.ProtocolViolation as exc:
            return self._violation(worker, exc.reason, hook, 0.0)
        sticky = None if result.ok else sticky_cuda_error(result.error)
        if sticky is not None:  # every later CUDA call of this worker would fail too
            error = (
                f"{result.error} A sticky CUDA error ({sticky}) leaves the worker's CUDA context "
                "unusable: it was recycled, a fresh one takes the next call."
            )
            self._lose(worker, error, "gpu_fault", during_call=True)
            return CallResult.failure(
                error, result.error_type or ErrorType.WORKER_DIED, hook=hook,
                duration_ms=result.duration_ms, guard="gpu_fault",
            )  # fmt: skip
        refs = reply.get("blobs")
        if refs is None or not result.ok or hook != "run":
            return result
        try:  # binary values, copied out of the worker's shared memory
            result = result.decoded()
            value = worker.blobs(result.result, refs, self.limits.max_result_bytes)
        except ValueError as exc:
            return self._violation(worker, f"blob reference: {exc}", hook, result.duration_ms)
        return CallResult(True, hook=hook, result=value, duration_ms=result.duration_ms)

    def _exchange(
        self,
        worker: WorkerProcess,
        request_id: int,
        request: wire.Encoded,
        what: str,
        timeout_s: float,
        tool: str | None = None,
        control: CallControl | None = None,
    ) -> CallResult | dict[str, Any]:
        """The worker's reply, checked (see :mod:`wire`), or the failed
        result of a lost worker. A job's progress frames go to ``control``."""
        start = time.perf_counter()
        deadline = time.monotonic() + timeout_s
        worker.busy = True
        try:
            if control is not None:
                control.starting()
            reply: Any
            status, reply = worker.send(request, deadline) or (Fate.SENT, None)
            if status == Fate.SENT and control is not None:
                control.started(
                    lambda force: (
                        self._kill_stuck(worker, KillCause.CANCEL)
                        if force
                        else worker.send_cancel(request_id)
                    )
                )
            if status == Fate.SENT:
                status, reply = await_reply(worker, request_id, deadline, control)
            if status == Fate.MESSAGE and worker.killed_by == KillCause.CANCEL:
                # A forced cancel took it (its stacks' signal may end a C sleep
                # early): the late answer is dropped, the call is cancelled.
                status = Fate.DIED
            if status == Fate.MESSAGE:
                return cast(dict[str, Any], reply)  # checked by wire.decode; no copy
            if status == Fate.VIOLATION:
                elapsed = (time.perf_counter() - start) * 1000
                return self._violation(worker, reply, what, elapsed)
            if status == Fate.OVERSIZE:
                elapsed = (time.perf_counter() - start) * 1000
                reason = f"reply over the {worker.max_reply_bytes}-byte cap"
                return self._violation(worker, reason, what, elapsed)
            if status == Fate.SHED:
                held = self._services.results
                return CallResult.failure(
                    f"The host already holds {held.held // 2**20} MiB of results on their way "
                    f"(server.result_memory_mb = {held.limit // 2**20}): this {reply}-byte "
                    "result was dropped. Retry later.",
                    ErrorType.BUSY,
                    hook=what,
                )
            if status == Fate.UNSENDABLE:
                kind, why = reply
                if kind is not None:  # binary values over their room
                    return CallResult.failure(why, kind, hook=what)
                return CallResult.failure(
                    f"The arguments cannot be sent to the plugin's worker ({why}). Pass plain "
                    "data (dicts, lists, strings, numbers, booleans, None) and binary values.",
                    ErrorType.INVALID_ARGUMENTS,
                    hook=what,
                )
            if status == Fate.TIMEOUT:
                self._kill_stuck(worker, KillCause.TIMEOUT)
            elapsed = (time.perf_counter() - start) * 1000
            failed = lost_call(
                worker, status, f"run('{tool}')" if what == "run" else f"{what}()",
                timeout_s, elapsed, control, self._pool.closing, self.limits,
            )  # fmt: skip
            if failed.guard is not None or failed.error_type == ErrorType.CANCELLED:
                self._lose(worker, failed.error or what, failed.guard, during_call=True)
            else:
                self._discard(worker)
            return failed
        finally:
            worker.busy = False
            if control is not None:
                control.finished()

    def _kill_stuck(self, worker: WorkerProcess, why: KillCauseName) -> None:
        """Kill a worker whose call would not end (a timeout, a cancel past
        its grace), after noting where it was stuck (``worker.stuck``)."""
        if worker.killed_by is None:
            worker.killed_by = why  # from now on its answer no longer counts
            worker.stuck = stuck_at(take_stacks(worker), self.source.package_dir)
        worker.kill(why)

    def _violation(
        self, worker: WorkerProcess, reason: str, what: str, elapsed: float
    ) -> CallResult:
        """The worker broke the wire's rules: it is killed (its calls fail)."""
        worker.kill(KillCause.PROTOCOL)
        error = (
            f"Protocol violation by the plugin's worker ({reason}); the worker was killed. "
            "A plugin must not write to the worker's connection or answer from another process."
        )
        self._lose(worker, error, "protocol", during_call=True)
        return CallResult.failure(
            error, ErrorType.PROTOCOL, hook=what, duration_ms=elapsed, guard="protocol"
        )

    # -- losing workers ----------------------------------------------------------

    def _died(self, worker: WorkerProcess) -> None:
        """The zygote saw ``worker`` exit. A death during a call (or one we
        ordered) is the call's to report; this one happened between calls."""
        if worker.busy or worker.killed_by not in (None, *GUARD_KILLS):
            return
        found = tripped(worker, self.limits)
        if found is not None:
            error, _, guard = found
            self._lose(worker, f"{error} (between calls)", guard, during_call=False)
        else:
            reason = f"{worker.death_reason()} while idle. {CRASH_HINT}"
            self._lose(worker, reason, "crash", during_call=False)

    def _discard(self, worker: WorkerProcess) -> None:
        worker.close()
        self._gpu_held.update(worker.gpu_pids)  # its replacement waits for it to come back

    def replace_lost(self) -> str | None:
        """Refill the pool, once the GPU memory of the workers lost is back
        (or its wait is over: the history's note names what was not)."""
        held, self._gpu_held = self._gpu_held, {}
        self.replacement_note = self._services.gpu.await_release(held) if held else None
        return super().replace_lost()

    # -- reading -----------------------------------------------------------------

    def resident_bytes(self) -> int | None:
        alive = [w for w in list(self._pool.serving) if not w.exited.is_set()]
        return sum(w.resident_bytes() for w in alive) if alive else None

    def last_resident_bytes(self) -> int | None:
        """The workers' memory as last read (no /proc read now: cheap)."""
        workers = list(self._pool.serving)
        if len(workers) == 1:  # the common case, on every list request
            return workers[0].last_bytes
        return sum(w.last_bytes for w in workers) if workers else None

    def gpu_indices(self) -> list[int]:
        return sorted({w.gpu_index for w in list(self._pool.serving) if w.gpu_index is not None})

    def gpu_bytes(self) -> int | None:
        """The workers' GPU memory as the GPU guard last read it (None:
        no budget, so not read)."""
        if self.limits.gpu_memory_mb <= 0:
            return None
        return sum(w.gpu_bytes for w in list(self._pool.serving))

    def pids(self) -> list[int]:
        return [w.pid for w in list(self._pool.serving) if not w.exited.is_set()]

    def nodes(self) -> list[str]:
        return ["local"] * len(self._pool.serving)
