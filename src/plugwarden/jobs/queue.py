"""Jobs in motion (docs/guides/jobs.md): one bounded queue per plugin, threads
that run its jobs through the ordinary call path, cancellation, watchers.

A plugin's jobs run at most ``workers`` at a time, on threads made when
jobs wait and gone when none do; each job is one call through
:class:`~plugwarden.host.calls.Calls` with its own timeout
(``job_timeout_s``) and a :class:`~plugwarden.isolation.reporting.CallControl`,
so it shares the plugin's workers, guards, metrics and states with
synchronous calls. Every change of a job is written to the
:class:`~plugwarden.jobs.store.JobStore` (progress only with its end)
and told to its watchers (the server-sent events of ``/v1/jobs/{id}/events``).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from plugwarden.config import JobsConfig
from plugwarden.error_types import ErrorType
from plugwarden.exceptions import JobRefused, JobStoreError, UnknownJob
from plugwarden.host.admission import Admission
from plugwarden.host.scheduler import Scheduler
from plugwarden.isolation.reporting import CallControl
from plugwarden.jobs.job import (
    Job,
    JobDurations,
    JobState,
    Progress,
    job_outcome,
    storable_arguments,
)
from plugwarden.jobs.live import HOST_LANE, HostWork, Lane, Live, Watcher
from plugwarden.jobs.recent import RecentJobs
from plugwarden.jobs.store import JobStore, lost_record
from plugwarden.plugin.limits import Limits
from plugwarden.result import CallResult

__all__ = ["JobCall", "JobQueue"]

# How a job runs: the host's call path, with the job's timeout and control.
JobCall = Callable[[str, str, Mapping[str, Any], float, CallControl], CallResult]

log = logging.getLogger("plugwarden.jobs")

PRUNE_EVERY = 100  # finished jobs between two retention passes
LINGER_S = 2.0  # a lane's idle thread waits this long for the next job before it ends


class JobQueue:
    def __init__(
        self,
        config: JobsConfig,
        call: JobCall,
        admission: Admission,
        limits_of: Callable[[str], Limits],
    ) -> None:
        self.config = config
        self.store = JobStore(config.database(), config.keep_s, config.keep_max)
        self._call = call
        self._admission = admission
        self._limits_of = limits_of
        self._lock = threading.Lock()
        self._live: dict[str, Live] = {}
        self._recent = RecentJobs()
        self._stopping = False  # close(): idle lane threads end now
        self._lanes: dict[str, Lane] = {}
        self._threads: set[threading.Thread] = set()
        self._durations: dict[str, JobDurations] = {}
        self._grace = Scheduler(2, "plugwarden-cancel")
        self._refusing: str | None = None
        self._opened = False
        self._finished_since_prune = 0

    def open(self) -> None:
        """Open the store (raises :class:`JobStoreError`); jobs that a dead
        host left queued or running are marked lost."""
        if self._opened:
            return
        lost = self.store.open()
        self._opened = True
        if lost:
            log.warning("%d job(s) of a host that stopped are marked lost", lost)

    # -- submitting and cancelling ----------------------------------------------------

    def submit(
        self, name: str, tool: str, args: Mapping[str, Any] | None, timeout_s: float | None
    ) -> Job:
        refused = self._admission.refusal(name, tool, args, timeout_s)
        if refused is not None:
            raise JobRefused(name, refused.error or "refused", refused.error_type or "")
        self._check_open(name)
        arguments, payload = storable_arguments(name, args, timeout_s)
        limits = self._limits_of(name)
        timeout = float(timeout_s or limits.job_timeout_s)
        return self._queue(name, tool, arguments, timeout, name, None, limits.workers, payload)

    def _check_open(self, name: str) -> None:
        if self._refusing is not None or not self._opened:
            why = "The host is shutting down (or not started): no new jobs."
            raise JobRefused(name, why, self._refusing or ErrorType.CLOSED)

    def submit_work(
        self, name: str, tool: str, args: dict[str, Any], work: HostWork, timeout_s: float
    ) -> Job:
        """Queue a job of the host's own (``tool``: install, upgrade...) for
        plugin ``name``: ``work(control)`` runs it; one such job at a time."""
        self._check_open(name)
        return self._queue(name, tool, args, timeout_s, HOST_LANE, work, 1)

    def _queue(
        self, name: str, tool: str, arguments: dict[str, Any], timeout_s: float,
        key: str, work: HostWork | None, threads: int, payload: dict[str, Any] | None = None,
    ) -> Job:  # fmt: skip
        job = Job(uuid.uuid4().hex, name, tool, arguments, JobState.QUEUED, time.time(), timeout_s)
        with self._lock:
            lane = self._lanes.get(key)
            if lane is None:
                lane = self._lanes[key] = Lane(threading.Condition(self._lock))
            if len(lane.queued) >= self.config.max_queued_jobs:
                raise JobRefused(
                    name,
                    f"Plugin '{name}' already has {len(lane.queued)} jobs queued "
                    "([jobs] max_queued_jobs). Retry later, or raise the limit.",
                    ErrorType.BUSY,
                )
            try:
                self.store.insert(job)
            except JobStoreError as exc:
                raise JobRefused(name, str(exc), ErrorType.JOB_STORE) from None
            live = Live(job, self._control_for(job), lane=key, work=work, payload=payload)
            self._live[job.id] = live
            lane.queued.append(live)
            spawn = lane.active < max(1, threads)
            lane.wake.notify()  # an idle thread of the lane, if one waits
            if spawn:
                lane.active += 1
                thread = threading.Thread(
                    target=self._serve, args=(lane,), name=f"plugwarden-jobs-{name}", daemon=True
                )
                self._threads.add(thread)
        if spawn:
            thread.start()
        return job

    def _control_for(self, job: Job) -> CallControl:
        return CallControl(
            lambda done, total, message: self._progress(job.id, done, total, message),
            lambda: self._started(job.id),
            self.config.cancel_grace_s,
        )

    def cancel(self, job_id: str) -> Job:
        """Cancel a job: a queued one at once, without touching a worker; a
        running one cooperatively, then by killing its worker after
        ``cancel_grace_s``. A finished job is returned unchanged."""
        with self._lock:
            live = self._live.get(job_id)
            if live is not None and live.job.state == JobState.QUEUED:
                lane = self._lanes[live.lane]
                if live in lane.queued:
                    lane.queued.remove(live)
                    live.control.cancel()
                    queued = True
                else:
                    queued = False  # taken by a thread this instant: cancelled at its start
            else:
                queued = False
        if live is None:
            return self.job(job_id)
        if queued:
            return self._finish(live, JobState.CANCELLED, _cancelled_early(live.job))
        live.control.cancel()
        self._grace.after(self.config.cancel_grace_s, lambda: live.control.cancel(force=True))
        return live.job

    # -- running ------------------------------------------------------------------------

    def _serve(self, lane: Lane) -> None:
        try:
            while True:
                with self._lock:
                    # Idle a moment first: back-to-back jobs reuse the thread.
                    lane.wake.wait_for(lambda: lane.queued or self._stopping, LINGER_S)
                    if not lane.queued or self._stopping:
                        lane.active -= 1
                        return
                    live = lane.queued.popleft()
                self._run(live)
        finally:
            with self._lock:
                self._threads.discard(threading.current_thread())

    def _run(self, live: Live) -> None:
        job, control = live.job, live.control
        if control.cancel_requested:
            self._finish(live, JobState.CANCELLED, _cancelled_early(job))
            return
        try:
            if live.work is not None:
                result = live.work(control)
            else:
                args, live.payload = live.payload or job.args, None
                result = self._call(job.plugin, job.tool, args, job.timeout_s, control)
        # The job's thread must end the job whatever happened on the way.
        except Exception as exc:
            log.exception("job %s: internal error", job.id)
            result = CallResult.failure(f"Internal error: {exc!r}", ErrorType.INTERNAL)
        if control.cancel_requested:
            state = JobState.CANCELLED
        elif result.error_type in (ErrorType.CLOSED, ErrorType.SHUTTING_DOWN):
            state = JobState.LOST
        else:
            state = JobState.SUCCEEDED if result.ok else JobState.FAILED
        if state == JobState.LOST:
            self._finish(live, state, lost_record(job, live.job.started_at is not None))
        else:
            self._finish(live, state, result)

    def _started(self, job_id: str) -> None:
        with self._lock:
            live = self._live.get(job_id)
            if live is None:
                return
            live.job = job = replace(
                live.job, state=JobState.RUNNING, started_at=time.time(),
                version=live.job.version + 1,
            )  # fmt: skip
        self._store(job)
        self._tell(live)

    def _progress(self, job_id: str, done: float, total: float | None, message: str) -> None:
        with self._lock:
            live = self._live.get(job_id)
            if live is None:
                return
            progress = Progress(done, total, message, time.time())
            live.job = replace(live.job, progress=progress, version=live.job.version + 1)
        self._tell(live)

    def _finish(self, live: Live, state: str, ending: CallResult | dict[str, Any]) -> Job:
        """End the job with its call's result (or a ready outcome): stored
        first, so that what readers see is what the store holds (a result
        over ``[jobs] max_result_bytes``, or a store that cannot write it,
        fails the job with the reason instead)."""
        if isinstance(ending, dict):
            outcome, result = ending, None
        else:
            outcome, result = job_outcome(ending, self.config.max_result_bytes)
            if state == JobState.SUCCEEDED and not outcome["ok"]:
                state = JobState.FAILED
        job = replace(
            live.job, state=state, finished_at=time.time(), outcome=outcome, result_json=result,
            version=live.job.version + 1,
        )  # fmt: skip
        job = self.store.keep(job)
        with self._lock:
            live.job = job
            self._live.pop(job.id, None)
            self._recent.add(job)
            if live.work is None and job.started_at is not None and job.finished_at is not None:
                durations = self._durations.setdefault(job.plugin, JobDurations())
                durations.observe(job.finished_at - job.started_at)
            self._finished_since_prune += 1
            prune = self._finished_since_prune >= PRUNE_EVERY
            if prune:
                self._finished_since_prune = 0
        if prune:
            try:
                self.store.prune()
            except JobStoreError:
                log.exception("jobs retention failed")
        self._tell(live)
        return job

    def _store(self, job: Job) -> None:
        try:
            self.store.write(job)
        # The job goes on; its end is written (or failed for the store) then.
        except JobStoreError:
            log.exception("job %s: could not store its %s state", job.id, job.state)

    @staticmethod
    def _tell(live: Live) -> None:
        for watcher in list(live.watchers):
            try:
                watcher()
            # One watcher's fault must not stop the job's others or the job.
            except Exception:
                log.exception("job watcher failed")

    # -- reading ----------------------------------------------------------------------

    def job(self, job_id: str) -> Job:
        live = self._live.get(job_id)
        if live is not None:
            return live.job
        stored = self._recent.get(job_id) or (self.store.get(job_id) if self._opened else None)
        if stored is None:
            raise UnknownJob(job_id)
        return stored

    def page(
        self,
        plugin: str | None = None,
        state: str | None = None,
        limit: int = 100,
        before: int | None = None,
    ) -> tuple[list[Job], int | None]:
        """Newest first; the cursor for the next page (None: no more)."""
        if state is not None and state not in JobState.ALL:
            raise ValueError(f"Unknown job state {state!r}; one of {', '.join(JobState.ALL)}")
        rows, more = self.store.page(plugin, state, limit, before)
        jobs = []
        for _, stored in rows:
            live = self._live.get(stored.id)
            # A job whose end the store could not write is read as it ended.
            jobs.append(live.job if live is not None else self._recent.get(stored.id) or stored)
        return jobs, rows[-1][0] if more and rows else None

    def live(self) -> list[Job]:
        """Jobs queued or running now (memory only, no database read)."""
        with self._lock:
            return [live.job for live in self._live.values()]

    def queue_depths(self) -> dict[str, int]:
        with self._lock:
            return {
                name: len(lane.queued) for name, lane in self._lanes.items() if name != HOST_LANE
            }

    def durations(self) -> dict[str, tuple[list[tuple[str, int]], float]]:
        """Per plugin: cumulative (le, count) buckets and the sum, Prometheus-style."""
        with self._lock:
            return {name: d.cumulative() for name, d in self._durations.items()}

    def watch(self, job_id: str, watcher: Watcher) -> Callable[[], None]:
        """Call ``watcher`` (from a job thread) after each change of a live
        job; returns the function that stops it."""
        with self._lock:
            live = self._live.get(job_id)
            if live is None:
                return lambda: None
            live.watchers.append(watcher)

        def unwatch() -> None:
            with self._lock:
                if watcher in live.watchers:
                    live.watchers.remove(watcher)

        return unwatch

    # -- closing ----------------------------------------------------------------------

    def refuse(self, why: str) -> None:
        """No new jobs; watchers are woken (to see the host going)."""
        self._refusing = why
        with self._lock:
            lives = list(self._live.values())
        for live in lives:
            self._tell(live)

    def close(self, timeout_s: float = 10.0) -> None:
        """After the runners closed: queued jobs are lost, the threads (whose
        calls ended) joined, the store closed."""
        self._refusing = self._refusing or ErrorType.CLOSED
        with self._lock:
            queued = [live for lane in self._lanes.values() for live in lane.queued]
            self._stopping = True
            for lane in self._lanes.values():
                lane.queued.clear()
                lane.wake.notify_all()
            threads = list(self._threads)
        for live in queued:
            self._finish(live, JobState.LOST, lost_record(live.job, False))
        deadline = time.monotonic() + timeout_s
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._grace.close()
        self.store.close()
        self._opened = False


def _cancelled_early(job: Job) -> CallResult:
    return CallResult.failure(
        "Cancelled before it started.", ErrorType.CANCELLED, plugin=job.plugin, tool=job.tool
    )
