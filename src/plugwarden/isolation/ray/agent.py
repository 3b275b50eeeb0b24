"""The Ray actor behind one worker of a ``ray`` plugin, on whichever node Ray
places it.

The actor is plugwarden's own code, not the plugin's. With ``isolation =
"ray"`` it runs the plugin in a worker process of its own, exactly as
``process`` isolation does on the host (zygote, containment, timeout and
memory guards, the plain-JSON wire), so the plugin never runs in the Ray
worker process and nothing it makes crosses Ray's pickled transport: what
goes back to the host is a plain dict built here. With ``"ray-inline"``
(trusted plugins) it runs the plugin in this process, on threads, as
``inline`` does in the host, which saves a hop per call; results still go
back as a checked wire frame. Either way a guard that trips, or a
worker that dies, ends this actor's usefulness: the host kills the actor
(which stops even an inline call that overran) and asks Ray for a new one.

Methods run in three concurrency groups: the default one (one call at a
time, like a process worker), ``control`` (progress, cancel, memory: they
answer while a call runs) and ``watch`` (one call that returns when the
plugin's worker is lost between calls, so the host hears of it at once).
"""

from __future__ import annotations

import os
import pickle
import sys
import threading
from dataclasses import replace
from typing import Any

from plugwarden.error_types import ErrorType
from plugwarden.exceptions import LoadError
from plugwarden.isolation import inline, wire
from plugwarden.isolation.executor import ElasticExecutor
from plugwarden.isolation.inline import HostMemoryWatch, InlineRunner
from plugwarden.isolation.process.output import OutputPump
from plugwarden.isolation.process.runner import ProcessRunner, ProcessServices
from plugwarden.isolation.process.sandbox import Sandbox
from plugwarden.isolation.process.segment import BlobsTooLarge, Joined, encode_result
from plugwarden.isolation.process.zygote import Zygote
from plugwarden.isolation.ray.messages import AgentCall, AgentReply
from plugwarden.isolation.reporting import CallControl
from plugwarden.isolation.runner import Runner, WorkerLoss
from plugwarden.plugin.discovery import PluginSource
from plugwarden.plugin.limits import Limits
from plugwarden.result import CallResult
from plugwarden.settings import plugin_home

__all__ = ["CONCURRENCY_GROUPS", "REPLY_ID", "Agent"]

CONCURRENCY_GROUPS = {"control": 2, "watch": 1}


REPLY_ID = 1  # one call at a time per actor: every reply answers request 1


class Agent:
    """One plugin worker, kept by a Ray actor (see the module docstring)."""

    def __init__(self) -> None:
        self._runner: Runner | None = None
        self._inline = False
        self._pid = os.getpid()
        self._max_result = 0
        self._lock = threading.Lock()
        self._control: CallControl | None = None
        self._progress: tuple[int, float, float | None, str] | None = None
        self._reports = 0
        self._lost = threading.Event()
        self._loss: dict[str, Any] | None = None

    def load(
        self, source: PluginSource, limits: Limits, sandbox: Sandbox | None = None
    ) -> dict[str, Any]:
        """Start the plugin's worker and import it there, in ``sandbox``
        drawn on this node; where this runs."""
        import ray  # in a Ray worker process: Ray is there

        runner: Runner
        self._inline = limits.isolation == "ray-inline"
        if self._inline:
            inner = replace(limits, isolation="inline", workers=1)
            watch = HostMemoryWatch()  # this process's growth during a call
            runner = InlineRunner(source, inner, ElasticExecutor(), watch, self._worker_lost)
        else:
            inner = replace(limits, isolation="process", workers=1)
            services = ProcessServices(Zygote(), OutputPump())
            here = None
            if sandbox is not None:
                search_path = [*sys.path, *source.search_path]
                home = plugin_home(source.name, sandbox.user)
                here = sandbox.for_node(search_path, home)
            runner = ProcessRunner(source, inner, services, self._worker_lost, sandbox=here)
        try:
            runner.load()
        except LoadError as exc:
            return {"error": exc.reason, "error_type": exc.error_type}
        self._runner, self._max_result = runner, limits.max_result_bytes
        context = ray.get_runtime_context()
        return {
            "node": context.get_node_id(),
            "address": ray.util.get_node_ip_address(),
            "pid": os.getpid(),
            "protections": dict(getattr(runner, "protections", {})),
        }

    def initialise(self, config: dict[str, Any]) -> str | None:
        if self._runner is None:
            return "The plugin's Ray worker has no plugin loaded."
        return self._runner.initialise(config)

    def call(self, request: bytes) -> tuple[Any, ...]:
        """``request``: the host's pickled :class:`~plugwarden.isolation.ray.messages.AgentCall`
        (one argument: Ray serialises each one apart). The reply: the guard
        that tripped, the worker's memory, and the record as a wire outcome
        frame (:mod:`plugwarden.isolation.wire`), which the host checks as it
        checks a process worker's."""
        asked = AgentCall.decode(pickle.loads(request))
        hook, kwargs, timeout_s = asked.hook, asked.kwargs, asked.timeout_s
        if self._runner is None:
            failure = CallResult.failure("no plugin loaded", ErrorType.INTERNAL, hook=hook)
            frame = wire.encode_outcome(REPLY_ID, self._pid, failure, 0)
            return AgentReply(None, None, frame, b"").encode()
        control = None
        if asked.job:
            control = CallControl(self._report, lambda: None, 0.0)
            with self._lock:
                self._control, self._progress = control, None
        try:
            result = self._runner.call(hook, kwargs, timeout_s, timeout_s, control)
        finally:
            with self._lock:
                self._control = None
        frame, blobs = self._outcome(result)
        memory = self.memory() if self._inline else self._runner.last_resident_bytes()
        return AgentReply(result.guard, memory, frame, blobs).encode()

    def _outcome(self, result: CallResult) -> tuple[bytes, bytes]:
        """The call's outcome frame, and the binary values of its result
        joined (a ``run`` result the guard left unencoded holds some)."""
        cap = self._max_result
        if not (result.ok and result.encoded is None and result.hook == "run"):
            return wire.encode_outcome(REPLY_ID, self._pid, result, cap), b""
        try:
            text, found = encode_result(result.result)
            joined, refs = Joined.of(found, cap)
        except BlobsTooLarge as exc:
            failure = CallResult.failure(str(exc), ErrorType.RESULT_TOO_LARGE, hook="run")
            return wire.encode_outcome(REPLY_ID, self._pid, failure, cap), b""
        # What failed to encode fails again, in encode_outcome, with the reason.
        except Exception:  # noqa: BLE001
            return wire.encode_outcome(REPLY_ID, self._pid, result, cap), b""
        sent = CallResult(True, hook="run", result=result.result, encoded=text,
                          duration_ms=result.duration_ms)  # fmt: skip
        return wire.encode_outcome(REPLY_ID, self._pid, sent, cap, refs), joined.data

    # -- the control group: answers while a call runs -------------------------------

    def progress(self) -> tuple[int, float, float | None, str] | None:
        """The running job's last report, numbered: (number, done, total, message)."""
        with self._lock:
            return self._progress

    def cancel(self, force: bool) -> None:
        with self._lock:
            control = self._control
        if control is not None:
            control.cancel(force=force)

    def memory(self) -> int | None:
        """The plugin's memory: its worker tree's, or (``ray-inline``) this process's."""
        if isinstance(self._runner, InlineRunner):
            return int(inline.resident_bytes())
        return None if self._runner is None else self._runner.resident_bytes()

    # -- the watch group ------------------------------------------------------------

    def watch(self) -> dict[str, Any]:
        """Returns once the plugin's worker is lost (how, as plain data)."""
        self._lost.wait()
        return dict(self._loss or {})

    def _worker_lost(self, loss: WorkerLoss) -> None:
        self._loss = {"reason": loss.reason, "guard": loss.guard, "during_call": loss.during_call}
        self._lost.set()

    def _report(self, done: float, total: float | None, message: str) -> None:
        with self._lock:
            self._reports += 1
            self._progress = (self._reports, done, total, message)
