"""The worker: one process per plugin (or per pool slot), forked by the zygote.

It leads its own process group (so a kill takes every process the plugin
started), writes its stdout and stderr into a pipe the host reads, and dies
with the host: a thread blocks on a lifeline pipe whose only writer is the
host, and the kernel kills it when the zygote goes (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import contextlib
import faulthandler
import logging
import os
import select
import signal
import sys
import threading
import time
from multiprocessing.connection import Connection
from typing import Any, NoReturn

import pluggy

from plugwarden.error_types import ErrorType
from plugwarden.exceptions import LoadError
from plugwarden.isolation import injection, reporting, wire
from plugwarden.isolation.loader import LoadedPlugin, load_plugin, plugin_manager
from plugwarden.isolation.process import containment
from plugwarden.isolation.process.privileges import give_up_privileges
from plugwarden.isolation.process.sandbox import limit_inotify, switch_user
from plugwarden.isolation.process.segment import BlobsTooLarge, Segment, encode_result
from plugwarden.isolation.process.spin import SPIN_S, AdaptiveSpin
from plugwarden.isolation.process.stacks import STACKS_SIGNAL
from plugwarden.isolation.process.undeclared import watch_undeclared
from plugwarden.isolation.runner import validate_verdict
from plugwarden.logs import WorkerRecordFormatter
from plugwarden.result import CallResult

__all__ = ["serve", "warm"]

CANCEL_POLL_S = 0.005  # cancelled() looks at the connection at most this often


# What every worker would build alike, built once in the zygote (warm())
# and inherited through the fork: a worker takes it for its one plugin.
_spare_manager: pluggy.PluginManager | None = None


def warm() -> None:
    """In the zygote, before any fork: build what each worker would."""
    global _spare_manager
    _spare_manager = plugin_manager()


def serve(
    control_fd: int,
    lifeline_fd: int,
    output_fd: int,
    segment_fd: int = -1,
    *,
    label: str,
    env: dict[str, str] | None = None,
    plan: dict[str, Any] | None = None,
    mounts: dict[str, str] | None = None,
) -> NoReturn:
    """Serve the host's requests until it goes. ``segment_fd``: its shared
    memory (:mod:`~plugwarden.isolation.process.segment`); ``plan``: the worker's
    sandbox; ``mounts``: what its init set up, where it has one. Its parent
    (that init, or a keeper) reaps the plugin's orphans."""
    # The plugin's own variables (its operator's env table), over the
    # zygote's clean environment (plugwarden.plugin.environment).
    os.environ.update(env or {})
    parent = os.getppid()
    # Not the keeper's handler (which exits 0): a SIGTERM ends a worker as a
    # SIGTERM, so its fate reads "killed by SIGTERM".
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)
    _die_with_parent(parent)
    refusal = None  # why this worker must not load its plugin
    if plan and plan.get("user"):
        refusal = switch_user(plan["user"])
    confined = bool(plan and plan.get("enabled"))  # a sandbox, not turned off
    inotify = limit_inotify() if confined else None
    if confined and plan and plan.get("state_dir"):
        with contextlib.suppress(OSError):
            os.chdir(plan["state_dir"])
    os.dup2(output_fd, 1)
    os.dup2(output_fd, 2)
    os.close(output_fd)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    sys.stderr.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    # Where a stuck call is stuck: the host asks before it kills (stacks.py).
    faulthandler.register(STACKS_SIGNAL, file=sys.stderr, all_threads=True)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(WorkerRecordFormatter())  # one line per record, for the host
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    # Before any thread: each of these holds for the thread that sets it and
    # every thread and process started after.
    injection.arm()  # a test's fault plan, if PLUGWARDEN_FAULTS names one
    if plan and injection.plan_dir():  # read at each call, claimed beside it: writable
        plan = {**plan, "write": [*plan["write"], injection.plan_dir()]}
    protections = {**(mounts or {}), **give_up_privileges(plan)}
    if mounts and "filesystem" in mounts and not protections["filesystem"].startswith("enforced"):
        protections["filesystem"] = mounts["filesystem"]  # read-only mounts, without Landlock
    if inotify is not None:
        protections["inotify"] = inotify
    if plan and plan.get("user"):
        protections["worker_user"] = refusal or f"enforced ({plan['user']})"
    if confined and plan:
        watch_undeclared(plan)
    for protection, enforced in protections.items():
        if not enforced.startswith(("enforced", "granted")):
            logging.getLogger("plugwarden.worker").warning("%s: %s", protection, enforced)
    threading.Thread(target=_lifeline, args=(lifeline_fd,), daemon=True).start()
    connection = Connection(control_fd)
    me = os.getpid()
    plugin: LoadedPlugin | None = None
    segment: Segment | None = None
    max_result = 0
    poller = select.poll()
    poller.register(control_fd, select.POLLIN | select.POLLHUP)
    spin = AdaptiveSpin()  # poll for the next request only while that catches it
    while True:
        if spin.should_spin():
            spin.caught(_await_briefly(poller))
        try:
            raw = connection.recv()
            if raw[0] == "blobs" and segment is not None:  # binary values in shared memory
                raw = segment.loads(raw)
            request = wire.decode_request(raw)
        except (EOFError, OSError):
            _exit_group()
        if type(request) is wire.Call and plugin is not None:
            if request.job:  # progress and cancel travel while it runs
                result = _job_call(plugin, connection, request, me, control_fd)
            else:
                result = plugin.call(request.hook, request.kwargs)
            if request.hook == "init":  # its value means nothing to the host
                result = CallResult(
                    result.ok,
                    hook="init",
                    error=result.error,
                    error_type=result.error_type,
                    duration_ms=result.duration_ms,
                )
            reply = _outcome(request.id, me, result, max_result, segment)
        elif type(request) is wire.Cancel:
            continue  # for a job that ended before the cancel arrived
        elif type(request) is wire.Load:
            max_result = request.max_result_bytes
            if segment is None and segment_fd >= 0:
                segment = Segment(request.blob_bytes, max_result, segment_fd)
            if refusal is not None:
                reply = wire.encode_load_error(request.id, me, refusal, ErrorType.WORKER_START)
                _send(connection, reply, me)
                continue
            plugin, reply = _load(request, me, protections, plan)
        elif type(request) is wire.Validate and plugin is not None:
            # Reduced here to plain data: None (ready) or the reason it is not.
            result = plugin.call("validate", {})
            verdict = CallResult(
                True,
                hook="validate",
                result=validate_verdict(result),
                duration_ms=result.duration_ms,
            )
            reply = wire.encode_outcome(request.id, me, verdict, max_result)
        else:
            failure = CallResult.failure(
                f"{type(request).__name__} before a load", ErrorType.PROTOCOL
            )
            reply = wire.encode_outcome(request.id, me, failure, max_result)
        _send(connection, reply, me)


def _outcome(
    request_id: int, me: int, result: CallResult, max_result: int, segment: Segment | None
) -> bytes:
    """A call's reply: a result with binary values (the guard left it
    unencoded) sends them through shared memory, referenced in its header."""
    if not (result.ok and result.encoded is None and result.hook == "run" and segment):
        return wire.encode_outcome(request_id, me, result, max_result)
    try:
        text, blobs = encode_result(result.result)
        refs = segment.write_result(blobs)
    except BlobsTooLarge as exc:
        failure = CallResult.failure(str(exc), ErrorType.RESULT_TOO_LARGE, hook="run",
                                     duration_ms=result.duration_ms)  # fmt: skip
        return wire.encode_outcome(request_id, me, failure, max_result)
    # What failed to encode fails again, in encode_outcome, with the reason.
    except Exception:  # noqa: BLE001
        return wire.encode_outcome(request_id, me, result, max_result)
    sent = CallResult(True, hook="run", result=result.result, duration_ms=result.duration_ms,
                      encoded=text)  # fmt: skip
    return wire.encode_outcome(request_id, me, sent, max_result, refs)


class _JobReporter:
    """A job's reporter in the worker, for every thread of the plugin:
    progress frames go out throttled; ``cancelled()`` looks for the host's
    cancel on the connection (the only message the host sends mid-call)."""

    def __init__(self, connection: Connection, request_id: int, me: int, control_fd: int) -> None:
        self._connection = connection
        self._id = request_id
        self._me = me
        self._lock = threading.Lock()  # one writer and one reader of the connection at a time
        self._throttle = reporting.Throttle(self._send)
        self._poller = select.poll()
        self._poller.register(control_fd, select.POLLIN)
        self._cancelled = False
        self._next_poll = 0.0
        self._active = True

    def _send(self, done: float, total: float | None, message: str) -> None:
        frame = wire.encode_progress(self._id, self._me, done, total, message)
        with self._lock:
            if self._active and os.getpid() == self._me:
                try:
                    self._connection.send_bytes(frame)
                except OSError:
                    self._active = False  # the host is gone; the lifeline ends us

    def progress(self, done: float, total: float | None, message: str) -> None:
        self._throttle.report(done, total, message)

    def cancelled(self) -> bool:
        if self._cancelled:
            return True
        now = time.monotonic()
        if now < self._next_poll:
            return False
        self._next_poll = now + CANCEL_POLL_S
        with self._lock:
            while self._active and os.getpid() == self._me and self._poller.poll(0):
                try:
                    message = wire.decode_request(self._connection.recv())
                except (EOFError, OSError):
                    self._active = False
                    break
                if type(message) is wire.Cancel and message.id == self._id:
                    self._cancelled = True
        return self._cancelled

    def close(self) -> None:
        """Deliver the last report held back; nothing is sent after this."""
        self._throttle.flush()
        with self._lock:
            self._active = False


def _job_call(
    plugin: LoadedPlugin, connection: Connection, request: wire.Call, me: int, control_fd: int
) -> CallResult:
    reporter = _JobReporter(connection, request.id, me, control_fd)
    reporting.set_process_reporter(reporter)
    try:
        return plugin.call(request.hook, request.kwargs)
    finally:
        reporting.set_process_reporter(None)
        reporter.close()


def _await_briefly(poller: select.poll) -> bool:
    """Poll for the next request a moment before blocking in recv: calls that
    come back to back then skip a sleep and a wake-up. Whether one came."""
    until = time.monotonic() + SPIN_S
    while time.monotonic() < until:
        if poller.poll(0):
            return True
    return False


def _take_spare_manager() -> pluggy.PluginManager | None:
    global _spare_manager
    manager, _spare_manager = _spare_manager, None
    return manager


def _load(
    request: wire.Load, me: int, protections: dict[str, str], plan: dict[str, Any] | None
) -> tuple[LoadedPlugin | None, bytes]:
    user = plan.get("user") if plan else None
    unreadable = [p for p in request.search_path if user and not os.access(p, os.R_OK | os.X_OK)]
    try:
        if unreadable:
            raise LoadError(f"Cannot read {unreadable[0]}.", ErrorType.IMPORT_FAILED)
        plugin = load_plugin(
            request.name, request.module, request.attr, request.search_path, _take_spare_manager()
        )
    except LoadError as exc:
        reason = exc.reason
        if user and ("Permission denied" in reason or "No module named" in reason or unreadable):
            reason += (
                f" The worker runs as worker_user {user!r}, which cannot read the plugin's "
                "files: make them readable by that user (e.g. chmod -R o+rX on its folder and "
                "the folders above it), or choose another worker_user."
            )
        return None, wire.encode_load_error(request.id, me, reason, exc.error_type)
    return plugin, wire.encode_loaded(request.id, me, sorted(plugin.hooks), protections)


def _send(connection: Connection, reply: bytes, me: int) -> None:
    if os.getpid() != me:
        # A process the plugin forked has returned into this loop: it is not
        # the worker, and must neither answer nor read the host's requests.
        os._exit(0)
    try:
        connection.send_bytes(reply)
    except OSError:
        _exit_group()


def _lifeline(fd: int) -> None:
    """Block until the host's end of the lifeline closes, then take the whole
    process group (the plugin's children too) down."""
    while True:
        try:
            if not os.read(fd, 1):
                break
        except InterruptedError:
            continue
        except OSError:
            break
    _exit_group()


def _exit_group() -> NoReturn:
    try:
        # Every descendant still below us, then our group (only a group of
        # our own, never the host's); the init or keeper above takes the rest.
        containment.kill_descendants(os.getpid())
        if os.getpgrp() == os.getpid():
            os.killpg(0, signal.SIGKILL)
    finally:
        os._exit(0)


def _die_with_parent(parent: int) -> None:
    if containment.set_death_signal() and os.getppid() != parent:
        os._exit(0)  # the parent died before prctl took effect
