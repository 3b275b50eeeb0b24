"""The host's jobs (docs/guides/jobs.md and "Environments and live
installs"): the part of :class:`~plugwarden.host.host.Host` that queues,
reads and cancels jobs, a plugin's calls and the host's own installs alike."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from plugwarden.exceptions import PlugwardenError
from plugwarden.host.installs import Installs
from plugwarden.host.status import PluginStatus
from plugwarden.isolation.reporting import CallControl
from plugwarden.jobs.job import Job, JobFigures
from plugwarden.jobs.queue import JobQueue
from plugwarden.result import CallResult

__all__ = ["OPERATIONS", "HostJobs"]

OPERATIONS = ("install", "upgrade", "rollback", "uninstall")
INSTALL_TIMEOUT_S = 3600.0  # an install's job: uv's downloads may take long


class HostJobs:
    """Host's job methods (a base of :class:`~plugwarden.host.host.Host`)."""

    _jobs: JobQueue
    _installs: Installs

    @property
    def started(self) -> bool:
        raise NotImplementedError

    def status(self, name: str, lock_timeout: float | None = None) -> PluginStatus:
        raise NotImplementedError

    # -- installs (docs/guides/environments.md) ----------------------------

    def change(
        self,
        operation: str,
        name: str | None = None,
        specs: Sequence[str] | None = None,
        overrides: Sequence[str] = (),
    ) -> Job:
        """The job of ``operation`` (install, upgrade, rollback, uninstall),
        as the CLI and HTTP name it. Raises ValueError for another operation
        or a missing name, :class:`~plugwarden.exceptions.UnknownPlugin` for
        a plugin the host does not have."""
        if operation == "install":
            return self.install(specs or [], overrides)
        if operation not in OPERATIONS or name is None:
            raise ValueError(f"{operation!r} with plugin {name!r}: expected one of {OPERATIONS}")
        self.status(name)
        if operation == "upgrade":
            return self.upgrade(name, specs or None, overrides)
        return self.rollback(name) if operation == "rollback" else self.uninstall(name)

    def install(self, specs: Sequence[str], overrides: Sequence[str] = ()) -> Job:
        """A job that installs a plugin into an environment of its own and
        starts it. ``specs``: requirements and wheels (a project directory
        with ``[server] allow_sdist``); ``overrides``: requirements that win
        over every dependency's pins."""
        return self._host_job("plugwarden", "install", None, list(map(str, specs)), overrides)

    def upgrade(
        self, name: str, specs: Sequence[str] | None = None, overrides: Sequence[str] = ()
    ) -> Job:
        """A job that upgrades ``name`` to ``specs`` (default: what it was
        installed from, resolved again): started beside the old version,
        switched to once checked, rolled back if it fails in probation."""
        wanted = list(map(str, specs)) if specs else None
        return self._host_job(name, "upgrade", name, wanted, overrides)

    def rollback(self, name: str) -> Job:
        """A job that switches ``name`` back to its previous version."""
        return self._host_job(name, "rollback", name, None)

    def uninstall(self, name: str) -> Job:
        """A job that stops ``name`` and removes its environment."""
        return self._host_job(name, "uninstall", name, None)

    def _host_job(
        self,
        label: str,
        operation: str,
        name: str | None,
        specs: list[str] | None,
        overrides: Sequence[str] = (),
    ) -> Job:
        lines = list(map(str, overrides))

        def work(control: CallControl) -> CallResult:
            return self._installs.run(operation, name, specs, lines, control)

        args: dict[str, Any] = {} if specs is None else {"spec": specs}
        if lines:
            args["overrides"] = lines
        return self._jobs.submit_work(label, operation, args, work, INSTALL_TIMEOUT_S)

    # -- jobs ------------------------------------------------------------------------

    def submit(
        self,
        name: str,
        tool: str,
        args: Mapping[str, Any] | None = None,
        *,
        timeout_s: float | None = None,
    ) -> Job:
        """Queue ``tool`` of plugin ``name`` as a job and return it at once
        (state ``queued``). ``timeout_s`` None: the plugin's ``job_timeout_s``.
        Raises :class:`~plugwarden.exceptions.JobRefused` (with its
        ``error_type``: UnknownTool, Busy, ShuttingDown...) when not accepted."""
        return self._jobs.submit(name, tool, args, timeout_s)

    def job(self, job_id: str) -> Job:
        """The job as it is now; raises :class:`~plugwarden.exceptions.UnknownJob`."""
        return self._jobs.job(job_id)

    def jobs(
        self, plugin: str | None = None, state: str | None = None, *, limit: int = 100
    ) -> list[Job]:
        """The newest ``limit`` jobs, of ``plugin`` and in ``state`` if given."""
        return self.job_page(plugin, state, limit)[0]

    def job_page(
        self,
        plugin: str | None = None,
        state: str | None = None,
        limit: int = 100,
        before: int | None = None,
    ) -> tuple[list[Job], int | None]:
        """The newest ``limit`` jobs before the cursor ``before``, and the
        cursor of the next page (None: no more)."""
        return self._jobs.page(plugin, state, limit, before)

    def live_jobs(self) -> list[Job]:
        """Jobs queued or running now (no database read)."""
        return self._jobs.live()

    def watch_job(self, job_id: str, watcher: Callable[[], None]) -> Callable[[], None]:
        """Call ``watcher`` after each change of a live job; returns the
        function that stops it."""
        return self._jobs.watch(job_id, watcher)

    def job_figures(self) -> JobFigures:
        """What the metrics say of jobs: stored counts by state (none before
        the host started), queue depths and run-time histograms per plugin."""
        try:
            counts = self._jobs.store.counts() if self.started else {}
        except PlugwardenError:
            counts = {}  # the store is closing or failing: the other figures still count
        return JobFigures(counts, self._jobs.queue_depths(), self._jobs.durations())

    def cancel(self, job_id: str) -> Job:
        """Cancel a job (see :meth:`JobQueue.cancel`); a finished one is
        returned unchanged. Raises :class:`~plugwarden.exceptions.UnknownJob`."""
        return self._jobs.cancel(job_id)
