"""The host (docs/guides/python-api.md): a thin facade over the parts that
do the work.

discovery -> :class:`~plugwarden.host.supervisor.Supervisor` (pipeline,
restart policy) -> runners made by :class:`~plugwarden.isolation.backends.Backends`;
whether a call or job may run decided by
:class:`~plugwarden.host.admission.Admission`; calls through
:class:`~plugwarden.host.calls.Calls`, jobs through
:class:`~plugwarden.jobs.queue.JobQueue`; each plugin's one
:class:`~plugwarden.host.record.PluginRecord` in the
:class:`~plugwarden.host.registry.Registry`. Nothing outside reaches these
parts: the web app and the CLI read through the Host's own methods.
:meth:`Host.close` closes every one of them: no thread, fd or process
outlives a closed host.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Collection, Mapping, Sequence
from types import TracebackType
from typing import Any

from plugwarden.config import HostConfig
from plugwarden.error_types import ErrorType
from plugwarden.exceptions import PlugwardenError
from plugwarden.host.admission import Admission, Deadline
from plugwarden.host.calls import Calls
from plugwarden.host.health import HealthPoller
from plugwarden.host.installs import Installs
from plugwarden.host.jobsapi import HostJobs
from plugwarden.host.registry import Registry
from plugwarden.host.status import PluginStatus
from plugwarden.host.supervisor import Supervisor
from plugwarden.host.versions import Versions
from plugwarden.isolation.backends import Backends
from plugwarden.isolation.process.zygote import Zygote
from plugwarden.isolation.reporting import CallControl
from plugwarden.isolation.runner import Runner
from plugwarden.jobs.queue import JobQueue
from plugwarden.plugin.discovery import discover
from plugwarden.plugin.limits import Limits
from plugwarden.result import CallResult

__all__ = ["Host"]

log = logging.getLogger("plugwarden.host")


class Host(HostJobs):
    """Finds, checks, loads and guards every installed plugin.

    ``config`` is a :class:`HostConfig`, a mapping shaped like the TOML file,
    a path to one, or None (``plugwarden.toml`` here, else the defaults).
    ``search_path`` limits discovery to those directories (default
    ``sys.path``), ``only`` to those plugin names (default: every one).
    ``zygote``: a :class:`~plugwarden.isolation.process.zygote.Zygote` already booting,
    to fork the workers (``plugwarden serve`` starts one before it imports
    the host); by default the host starts its own."""

    def __init__(
        self,
        config: HostConfig | Mapping[str, Any] | str | os.PathLike[str] | None = None,
        *,
        search_path: Sequence[str] | None = None,
        only: Collection[str] | None = None,
        zygote: Zygote | None = None,
    ) -> None:
        if isinstance(config, HostConfig):
            self.config = config
        elif isinstance(config, Mapping):
            self.config = HostConfig.from_dict(config).with_env()
        else:
            self.config = HostConfig.load(config)
        self._search_path = None if search_path is None else list(search_path)
        self._only = None if only is None else frozenset(only)
        self._registry = Registry(self.config.lock_timeout_s)
        result_bytes = int(self.config.server.result_memory_mb * 2**20)
        server = self.config.server
        self._backends = Backends(
            self.config.ray, zygote, result_bytes, server.max_blob_bytes,
            server.gpu_release_timeout_s,
        )  # fmt: skip
        self._supervisor = Supervisor(self.config, self._registry, self._backends)
        self._admission = Admission(self._registry.loadable, self._registry.names)
        self._calls = Calls(
            self.config,
            self._registry,
            self._supervisor.fail,
            self._admission,
        )
        self._jobs = JobQueue(self.config.jobs, self._job_call, self._admission, self._limits_of)
        versions = self._supervisor.versions = Versions(self.config, self._supervisor)
        self._installs = Installs(self.config, self._supervisor, versions, self._backends)
        self._health: HealthPoller | None = None
        self._started = threading.Event()
        self._start_lock = threading.Lock()
        self._close_lock = threading.Lock()
        self._closed = False

    # -- lifecycle of the host -------------------------------------------------

    def prepare(self) -> None:
        """Open what the host needs before any plugin (the jobs database,
        marking a dead host's jobs lost). Raises
        :class:`~plugwarden.exceptions.JobStoreError` naming the path;
        :meth:`start` does it when not done yet."""
        with self._start_lock:
            if not self._closed:
                self._jobs.open()

    def start(self) -> None:
        """Discover, check, load, initialise and validate every plugin,
        concurrently. Never raises for a plugin's fault; a second call does
        nothing (use :meth:`restart` for one plugin). Raises
        :class:`~plugwarden.exceptions.JobStoreError` when the jobs database
        cannot be opened (the host's fault, not a plugin's)."""
        self.prepare()
        with self._start_lock:
            if self._started.is_set() or self._closed:
                return
            if self.config.defaults.isolation == "process":
                self._backends.prestart_zygote()  # it boots while discovery runs
            found = discover(self._search_path)
            # The environments of plugwarden install, too (given a search path: if set).
            if self._search_path is None or self.config.server.plugins_dir:
                found = found.merged(self._installs.discovered())
            self._supervisor.start(found if self._only is None else found.only(self._only))
            self._started.set()

    def start_in_background(self) -> threading.Thread:
        """:meth:`start`, then the health checks, on a thread of its own,
        which is returned: a server answers meanwhile (``/readyz`` says
        startup has not finished until it has)."""

        def start() -> None:
            self.start()
            self.start_health_checks()
            try:
                log.info("plugwarden: %d plugins started", len(self._registry.names()))
            except PlugwardenError as exc:  # the registry busy: the count can wait
                log.info("plugwarden: plugins started (%s)", exc)

        starter = threading.Thread(target=start, name="plugwarden-start", daemon=True)
        starter.start()
        return starter

    @property
    def started(self) -> bool:
        return self._started.is_set()

    @property
    def closing(self) -> bool:
        return self._closed

    @property
    def draining(self) -> bool:
        """A drain began: not ready, new calls refused."""
        return self._admission.refusing is not None

    def drain(self, timeout_s: float) -> bool:
        """Refuse new calls, wait up to ``timeout_s`` for those in flight,
        then close; calls still running end with ``ShuttingDown``. Whether
        every call finished in time."""
        self._admission.refusing = ErrorType.SHUTTING_DOWN
        self._jobs.refuse(ErrorType.SHUTTING_DOWN)
        clean = self._registry.wait_idle(timeout_s)
        self.close(ErrorType.SHUTTING_DOWN)
        return clean

    def close(self, why: str = ErrorType.CLOSED) -> None:
        """Close every plugin and service; calls in flight end with ``why``."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self._admission.refusing = self._admission.refusing or why
        self._jobs.refuse(why)
        if self._health is not None:
            self._health.stop()
        self._supervisor.close(why)
        if self._health is not None:
            self._health.join()
        self._jobs.close()
        self._backends.close()

    def __enter__(self) -> Host:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- reading -----------------------------------------------------------------

    def status(self, name: str, lock_timeout: float | None = None) -> PluginStatus:
        """A snapshot of ``name``'s record. Raises
        :class:`~plugwarden.exceptions.UnknownPlugin`, or
        :class:`~plugwarden.exceptions.RegistryTimeout` when the records stay
        locked past ``lock_timeout`` (default ``lock_timeout_s``; 0: at once)."""
        return self._registry.status(name, lock_timeout)

    def statuses(self, lock_timeout: float | None = None) -> list[PluginStatus]:
        """A snapshot of every plugin's record (see :meth:`status`)."""
        return self._registry.statuses(lock_timeout)

    def names(self) -> list[str]:
        return self._registry.names()

    @property
    def records_version(self) -> int:
        """Changes whenever a state, reason, health or info does (not a
        call's own counters): a reader that saw the same version saw the
        same records."""
        return self._registry.version

    def cached_status(self, name: str) -> PluginStatus | None:
        """``name``'s snapshot when one is cached, without the lock (None:
        unknown, or changed since the last read: use :meth:`status`)."""
        return self._registry.cached_status(name)

    def histogram(self, name: str) -> tuple[list[tuple[str, int]], float]:
        """``name``'s call durations: cumulative (le, count) buckets and the sum."""
        return self._registry.histogram(name)

    def worker_pids(self, name: str) -> list[int]:
        """The live worker processes of a ``process`` plugin (empty for inline)."""
        runner = self._runner_of(name)
        return runner.pids() if runner is not None else []

    def worker_nodes(self, name: str) -> list[str]:
        """Where each serving worker runs: ``local``, or a Ray node's address."""
        runner = self._runner_of(name)
        return runner.nodes() if runner is not None else []

    def resident_bytes(self, name: str) -> int | None:
        """Resident memory of a process plugin's workers and their children."""
        runner = self._runner_of(name)
        return runner.resident_bytes() if runner is not None else None

    def gpus(self) -> list[dict[str, Any]]:
        """Each GPU as NVML last showed it to the host's GPU watch: memory
        used and total, utilisation, ECC errors, retired pages, health (an
        Xid that needs a reset makes it unhealthy) and Xids counted."""
        return self._backends.gpus()

    def worker_gpus(self, name: str) -> list[dict[str, Any]]:
        """The GPUs (as :meth:`gpus`) a plugin's workers are placed on."""
        indices: list[int] = getattr(self._runner_of(name), "gpu_indices", list)()
        return [gpu for gpu in self.gpus() if gpu["index"] in indices] if indices else []

    def gpu_bytes(self, name: str) -> int | None:
        """GPU memory of a plugin's workers as its GPU budget's guard last
        read it from NVML (None: no budget, or no worker processes)."""
        read = getattr(self._runner_of(name), "gpu_bytes", None)
        return read() if read is not None else None

    def memory_seen(self) -> dict[str, int]:
        """Each process plugin's worker memory as last read by its guards
        (the zygote's sweep or a call): for listings, with no /proc read."""
        seen = {}
        for slot in self._registry.records():
            name = slot.name
            runner = slot.runner
            value = None if runner is None else runner.last_resident_bytes()
            if value is not None:
                seen[name] = value
        return seen

    def call_timeout(self, name: str) -> float:
        """The ``timeout_s`` in force for ``name``'s calls."""
        slot = self._registry.record(name)
        return (slot.limits if slot is not None else self.config.defaults).timeout_s

    def _runner_of(self, name: str) -> Runner | None:
        """The plugin's runner; None while it has none (FAILED, restarting,
        or a duplicate name, which is listed but has no slot)."""
        slot = self._registry.record(name)
        if slot is None:
            self._registry.status(name)  # UnknownPlugin for a name never seen
            return None
        return slot.runner

    # -- calls, health, restart ----------------------------------------------------

    def call(
        self,
        name: str,
        tool: str,
        args: Mapping[str, Any] | None = None,
        *,
        deadline: Deadline | None = None,
        decode: bool = True,
    ) -> CallResult:
        """Run ``tool`` of plugin ``name``; always a result record, never
        raises. ``deadline``: when the caller's wait for a worker ends (a
        server sets it when the request arrives); default, the plugin's
        ``timeout_s`` from now. ``decode=False``, for a caller that passes
        the result on: a large result from a worker stays the checked JSON
        bytes it sent (``result.encoded``; ``result`` is None), which
        :meth:`CallResult.json_parts` writes out as they are."""
        result = self._calls.call(name, tool, args, deadline=deadline)
        return result.decoded() if decode else result

    def refusal(
        self, name: str, tool: object, args: object, timeout_s: object = None
    ) -> CallResult | None:
        """Why a call (or a job, with its ``timeout_s``) would be refused
        before any plugin code runs, or None (see
        :class:`~plugwarden.host.admission.Admission`)."""
        return self._admission.refusal(name, tool, args, timeout_s)

    def _job_call(
        self, name: str, tool: str, args: Mapping[str, Any], timeout_s: float, control: CallControl
    ) -> CallResult:
        return self._calls.call(name, tool, args, timeout_s=timeout_s, control=control)

    def _limits_of(self, name: str) -> Limits:
        return self._supervisor.slot(name).limits

    def check_health(self, name: str) -> dict[str, Any] | None:
        """Run ``name``'s health hook now and store its report (see Calls)."""
        return self._calls.check_health(name)

    def start_health_checks(self) -> None:
        """Check every available plugin's health every ``health_interval_s``,
        in the background, until :meth:`close`."""
        if self._health is None and not self._closed:
            self._health = HealthPoller(
                lambda: [
                    s.name
                    for s in self._registry.statuses()
                    if s.available and self._registry.record(s.name) is not None
                ],
                self.check_health,
                self.config.health_interval_s,
            )
            self._health.start()

    def restart(self, name: str) -> PluginStatus:
        """Rerun the whole pipeline for ``name`` with a fresh runner and a
        fresh restart count. A name claimed by two distributions stays FAILED."""
        return self._supervisor.restart(name)
