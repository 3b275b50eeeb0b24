"""Ray isolation (docs/guides/isolation.md): a plugin's workers are Ray actors.

A :class:`RayRunner` keeps ``limits.workers`` actors, each an
:class:`~plugwarden.isolation.ray.agent.Agent` that runs the plugin on the node
Ray chose: in a worker process of its own under the same guards as
``process`` isolation (``ray``), or in the actor's own process for trusted
plugins (``ray-inline``). The contract is the process runner's: a call takes a
free actor (waiting at most its wait), and a worker lost for any reason
(a guard tripped in the actor, the actor or its node died, the actor did not
answer by the call's deadline) takes its actor out of the pool: the actor
is killed, the loss is reported to the supervisor, and
:meth:`replace_lost` asks Ray for a new one. Before any actor is asked for,
the cluster must have a node that can hold one: an actor asking for a GPU
on a cluster without one would otherwise wait forever.
"""

from __future__ import annotations

import contextlib
import math
import pickle
import time
from dataclasses import dataclass, replace
from typing import Any

from plugwarden.error_types import ErrorType
from plugwarden.exceptions import LoadError, describe
from plugwarden.isolation import wire
from plugwarden.isolation.pool import PooledRunner, WorkerPool
from plugwarden.isolation.process.sandbox import Sandbox
from plugwarden.isolation.process.segment import Joined, place
from plugwarden.isolation.ray.agent import REPLY_ID
from plugwarden.isolation.ray.cluster import RayCluster, death_reason, shortfall
from plugwarden.isolation.ray.messages import AgentCall, AgentReply
from plugwarden.isolation.reporting import CallControl
from plugwarden.isolation.runner import ENDED, LossHandler, timeout_reason
from plugwarden.plugin.discovery import PluginSource
from plugwarden.plugin.limits import Limits
from plugwarden.result import GUARDS, CallResult, Guard
from plugwarden.settings import Placement

__all__ = ["RayRunner"]

# The actor enforces timeout_s itself; the host gives up this much later
# (an actor or node that stopped answering).
HOST_GRACE_S = 5.0
PROGRESS_POLL_S = 0.25  # a job's progress is read from its actor this often
CONTROL_S = 2.0  # a control call (progress, memory) that takes longer is skipped


@dataclass(eq=False, slots=True)
class _Actor:
    handle: Any
    node: str
    address: str
    pid: int  # the actor's process: its replies carry it
    watch: Any = None  # the ref of its watch() call
    busy: bool = False
    lost: bool = False
    rss: int | None = None


class RayRunner(PooledRunner[_Actor]):
    def __init__(
        self,
        source: PluginSource,
        limits: Limits,
        placement: Placement,
        cluster: RayCluster,
        on_loss: LossHandler,
        sandbox: Sandbox | None = None,
    ) -> None:
        self.source = source
        self.limits = limits
        self.protections: dict[str, str] = {}  # as its agent reports its worker's
        self._sandbox = sandbox  # drawn again on each node, for its own paths
        self.placement = placement
        self._cluster = cluster
        self._on_loss = on_loss
        self._ray: Any = None
        self._pool: WorkerPool[_Actor] = WorkerPool(limits.workers)
        self._config: dict[str, Any] = {}

    # -- bringing actors up ---------------------------------------------------------

    def request(self) -> dict[str, float]:
        """The resources one actor asks Ray for."""
        wanted = {"memory": float(int(self.limits.memory_mb * 2**20))}
        if self.placement.num_cpus is not None:
            wanted["CPU"] = self.placement.num_cpus
        gpus = self.placement.num_gpus
        if gpus is None:
            gpus = 1.0 if self.placement.requires_gpu else 0.0
        if gpus:
            wanted["GPU"] = gpus
        return wanted

    def load(self) -> None:
        self._ray = self._cluster.connect()
        wanted = self.request()
        missing = shortfall(self._cluster.nodes(), wanted, "GPU" in wanted)
        if missing is not None:
            raise LoadError(
                missing.replace("NAME", self.source.name),
                ErrorType.BACKEND_UNAVAILABLE,
                unavailable=True,
            )
        super().load()

    def _spawn(self) -> _Actor:
        ray, wanted = self._ray, self.request()
        options: dict[str, Any] = {
            "max_restarts": 0,  # the supervisor replaces, by its policy
            "max_task_retries": 0,
            "memory": wanted["memory"],
            "num_gpus": wanted.get("GPU", 0),
        }
        if "CPU" in wanted:
            options["num_cpus"] = wanted["CPU"]
        handle = self._cluster.agent.options(**options).remote()
        budget = self.limits.load_timeout_s
        try:
            loading = handle.load.remote(self.source, self.limits, self._sandbox)
            info = ray.get(loading, timeout=budget)
        except ray.exceptions.GetTimeoutError:
            self._kill(handle)
            raise LoadError(
                f"No Ray worker for the plugin was ready within load_timeout_s ({budget:g}s): "
                f"the cluster had no room for one ({_described(wanted)}), or the import hung. "
                "Free or add resources on the cluster, or raise load_timeout_s.",
                ErrorType.WORKER_START,
            ) from None
        except Exception as exc:  # noqa: BLE001 - the actor died while starting
            self._kill(handle)
            raise LoadError(death_reason(exc, "its node")[0], ErrorType.WORKER_START) from None
        if "error" in info:
            self._kill(handle)
            raise LoadError(str(info["error"]), str(info.get("error_type")))
        actor = _Actor(handle, str(info["node"]), str(info["address"]), int(info["pid"]))
        protections = info.get("protections")
        if isinstance(protections, dict):
            self.protections = {str(k): str(v) for k, v in protections.items()}
        actor.watch = handle.watch.options(concurrency_group="watch").remote()
        self._cluster.watch(actor.watch, lambda value: self._ended(actor, value))
        return actor

    def _prepare(self, actor: _Actor) -> str | None:
        ray = self._ray
        budget = 2 * self.limits.load_timeout_s + HOST_GRACE_S  # init, then validate
        try:
            reason = ray.get(actor.handle.initialise.remote(self._config), timeout=budget)
        except ray.exceptions.GetTimeoutError:
            self._discard(actor)
            return (
                f"The plugin's Ray actor on {actor.address} did not finish init() and "
                f"validate() within {budget:g}s; it was killed. Check the node (ray status)."
            )
        except Exception as exc:  # noqa: BLE001 - the actor's death
            return death_reason(exc, actor.address)[0]
        return None if reason is None else str(reason)

    # -- calls ----------------------------------------------------------------------

    def _call_on(
        self,
        actor: _Actor,
        hook: str,
        kwargs: dict[str, Any],
        timeout_s: float,
        control: CallControl | None,
    ) -> CallResult:
        ray = self._ray
        what = f"run('{kwargs.get('tool')}')" if hook == "run" else f"{hook}()"
        start = time.perf_counter()
        actor.busy = True
        try:
            if control is not None:
                control.starting()
            try:
                request = pickle.dumps(
                    AgentCall(hook, kwargs, timeout_s, control is not None).encode()
                )
            except Exception as exc:  # noqa: BLE001 - whatever pickling an argument raised
                return CallResult.failure(
                    f"The arguments cannot be sent to the plugin's worker ({describe(exc)}). "
                    "Pass plain data: dicts, lists, strings, numbers, booleans, None.",
                    ErrorType.INVALID_ARGUMENTS,
                    hook=hook,
                )
            ref = actor.handle.call.remote(request)
            if control is not None:
                cancel = actor.handle.cancel.options(concurrency_group="control")
                control.started(lambda force: cancel.remote(force))
            deadline = time.monotonic() + timeout_s + HOST_GRACE_S
            seen = 0
            while True:
                # One ray.get per wait: a synchronous call makes a single one.
                left = deadline - time.monotonic()
                try:
                    reply = ray.get(
                        ref, timeout=max(0.0, min(left, PROGRESS_POLL_S) if control else left)
                    )
                    break
                except ray.exceptions.GetTimeoutError:
                    if control is not None:
                        seen = self._relay(actor, control, seen)
                    if time.monotonic() < deadline:
                        continue
                except Exception as exc:  # noqa: BLE001 - the actor died during the call
                    return self._died_during(actor, exc, hook, what, _ms(start))
                knob = None if control is None else control.timeout_knob
                error = timeout_reason(hook, timeout_s, knob)
                self._lose(actor, error, "timeout", during_call=True)
                return CallResult.failure(
                    error, ErrorType.TIMEOUT, hook=hook, duration_ms=_ms(start), guard="timeout"
                )
            if control is not None:
                self._relay(actor, control, seen)  # the last report before the end
        finally:
            actor.busy = False
            if control is not None:
                control.finished()
        result = _result(actor, reply, hook, self.limits.max_result_bytes)
        if result.guard is not None or result.error_type in (
            ErrorType.CANCELLED,
            ErrorType.PLUGIN_NOT_AVAILABLE,  # its worker was lost just before this call
        ):
            self._lose(actor, result.error or what, result.guard, during_call=True)
        return result

    def _relay(self, actor: _Actor, control: CallControl, seen: int) -> int:
        """Pass the job's newest progress report (if new) to its control."""
        try:
            report = self._ray.get(
                actor.handle.progress.options(concurrency_group="control").remote(),
                timeout=CONTROL_S,
            )
        except Exception:  # noqa: BLE001 - the call's own wait reports a dead actor
            return seen
        if not isinstance(report, tuple) or len(report) != 4 or report[0] == seen:
            return seen
        number, done, total, message = report
        if _finite(done) and (total is None or _finite(total)) and isinstance(message, str):
            control.progress(float(done), None if total is None else float(total), message)
        return int(number)

    def _died_during(
        self, actor: _Actor, error: BaseException, hook: str, what: str, elapsed: float
    ) -> CallResult:
        closing = self._pool.closing
        if closing is not None:
            return CallResult.failure(ENDED[closing], closing, hook=hook, duration_ms=elapsed)
        reason, cause = death_reason(error, actor.address)
        guard: Guard = "memory" if cause == "oom" else "crash"
        error_text = f"{reason.rstrip('.')} during {what}."
        self._lose(actor, error_text, guard, during_call=True)
        kind = ErrorType.MEMORY_LIMIT if guard == "memory" else ErrorType.WORKER_DIED
        return CallResult.failure(error_text, kind, hook=hook, duration_ms=elapsed, guard=guard)

    # -- losing actors --------------------------------------------------------------

    def _ended(self, actor: _Actor, value: Any) -> None:
        """The actor's watch resolved: its worker was lost, or the actor died.
        During a call, the call reports it."""
        if actor.busy or actor.lost or self._pool.closing is not None:
            return
        guard: Guard = "crash"
        if isinstance(value, BaseException):
            reason, cause = death_reason(value, actor.address)
            guard = "memory" if cause == "oom" else "crash"
        elif value.get("during_call"):
            return  # the call's own result carries it (the actor may be between states)
        else:
            reason = str(value.get("reason") or "The plugin's worker was lost")
            if value.get("guard") in GUARDS:
                guard = value["guard"]
        self._lose(actor, f"{reason.rstrip('.')} (between calls).", guard, during_call=False)

    def _discard(self, actor: _Actor) -> None:
        actor.lost = True
        if actor.watch is not None:
            self._cluster.unwatch(actor.watch)
        self._kill(actor.handle)

    def _kill(self, handle: Any) -> None:
        with contextlib.suppress(Exception):  # already dead, or the cluster is gone
            self._ray.kill(handle, no_restart=True)

    # -- reading ----------------------------------------------------------------------

    def resident_bytes(self) -> int | None:
        """Each actor's plugin worker tree, read now (a control call each)."""
        total, seen = 0, False
        for actor in list(self._pool.serving):
            try:
                value = self._ray.get(
                    actor.handle.memory.options(concurrency_group="control").remote(),
                    timeout=CONTROL_S,
                )
            except Exception:  # noqa: BLE001 - a dead actor is reported by its watch
                continue
            if isinstance(value, int):
                actor.rss, total, seen = value, total + value, True
        return total if seen else None

    def last_resident_bytes(self) -> int | None:
        known = [a.rss for a in list(self._pool.serving) if a.rss is not None]
        return sum(known) if known else None

    def pids(self) -> list[int]:
        return []  # the workers' processes are on the cluster's nodes

    def nodes(self) -> list[str]:
        return [actor.address for actor in list(self._pool.serving)]


def _result(actor: _Actor, reply: Any, hook: str, max_bytes: int) -> CallResult:
    """The actor's reply as a CallResult: its frame checked like a process
    worker's (size, depth, plain JSON, request id and pid), its binary
    values' references like a segment's."""
    try:
        answer = AgentReply.decode(reply)
        message = wire.decode(answer.frame, REPLY_ID, actor.pid)
        result = wire.outcome(message)
        if message.get("blobs") is not None and result.ok and hook == "run":
            try:
                value = place(result.decoded().result, message["blobs"], Joined(answer.blobs),
                              max_bytes)  # fmt: skip
            except ValueError as exc:
                raise wire.ProtocolViolation(f"blob reference: {exc}") from None
            result = CallResult(True, hook=hook, result=value, duration_ms=result.duration_ms)
    except (ValueError, TypeError, AttributeError, wire.ProtocolViolation) as exc:
        reason = exc.reason if isinstance(exc, wire.ProtocolViolation) else "not a reply"
        return CallResult.failure(
            f"The plugin's Ray worker broke the protocol ({reason}).",
            ErrorType.PROTOCOL,
            hook=hook,
            guard="protocol",
        )
    if answer.resident_bytes is not None:
        actor.rss = answer.resident_bytes
    guard = answer.guard
    return replace(result, guard=guard) if guard in GUARDS else result


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000


def _described(wanted: dict[str, float]) -> str:
    parts = [f"{key} {value:g}" for key, value in wanted.items() if key != "memory"]
    return ", ".join([*parts, f"memory {wanted['memory'] / 2**20:.0f} MB"])
