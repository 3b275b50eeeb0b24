"""Jobs through the Python API: progress, cancellation, guards, queueing and
the SQLite store, with real plugins in real worker processes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from plugwarden import ErrorType, JobRefused, JobState, State, UnknownJob
from plugwarden.exceptions import JobStoreError
from tests.conftest import WHO_AM_I, plugin_source, wait_for

# Reports its progress for about n * dt seconds; stops when cancelled.
STEPS = """
import plugwarden, time
n, dt = args.get('n', 20), args.get('dt', 0.1)
for i in range(n):
    if plugwarden.cancelled():
        return {'stopped_at': i}
    plugwarden.progress(i + 1, n, f'step {i + 1} of {n}')
    time.sleep(dt)
return {'done': n}
"""

# Ignores the cancel flag, hung in a C-level sleep.
HUNG_IN_C = """
import ctypes
ctypes.CDLL(None).sleep(3600)
return 'never'
"""

BLOCK_UNTIL_FILE = """
import os, time
open(args['started'], 'a').close()
while not os.path.exists(args['release']):
    time.sleep(0.01)
return 'released'
"""


class Gate:
    """Arguments for BLOCK_UNTIL_FILE: the job blocks in its worker until
    :meth:`release` (a test that never releases it leaves it hung)."""

    def __init__(self, tmp_path):
        self.args = {"started": str(tmp_path / "started"), "release": str(tmp_path / "release")}

    def wait_started(self):
        wait_for(lambda: os.path.exists(self.args["started"]), 30, "the gated job to start")

    def release(self):
        open(self.args["release"], "w").close()


@pytest.fixture
def gated_job(plugwarden_plugin, plugwarden_host, tmp_path):
    """``start(config=None) -> (host, gate, job)``: a job that blocks in its
    worker until ``gate.release()``."""

    def start(config=None):
        plugwarden_plugin("gate", plugin_source(BLOCK_UNTIL_FILE))
        host = plugwarden_host(config)
        gate = Gate(tmp_path)
        job = host.submit("gate", "t", gate.args)
        gate.wait_started()
        return host, gate, job

    return start


def finished(host, job_id, timeout_s=30.0):
    wait_for(lambda: host.job(job_id).finished, timeout_s, f"job {job_id} to finish")
    return host.job(job_id)


@pytest.fixture
def steps(plugwarden_plugin):
    plugwarden_plugin("steps", plugin_source(STEPS))
    return "steps"


class TestProgress:
    @pytest.mark.parametrize("isolation", ["process", "inline"])
    def test_a_job_reports_increasing_progress_then_its_result(
        self, steps, plugwarden_host, isolation
    ):
        """Progress read while the job runs only grows, the last report
        (20 of 20) arrives, and the job ends succeeded with the run's record."""
        host = plugwarden_host({"defaults": {"isolation": isolation}})
        job = host.submit(steps, "count", {"n": 20, "dt": 0.1})
        assert job.state == JobState.QUEUED and len(job.id) == 32
        seen = []
        while not host.job(job.id).finished:
            progress = host.job(job.id).progress
            if progress is not None:
                seen.append(progress.done)
            time.sleep(0.02)
        done = host.job(job.id)
        assert done.state == JobState.SUCCEEDED and done.ok
        assert done.record.ok and done.record.result == {"done": 20}
        assert done.record.tool == "count" and done.record.plugin == steps
        assert seen == sorted(seen) and len(set(seen)) >= 3
        assert done.progress.done == 20 and done.progress.total == 20
        assert done.progress.message == "step 20 of 20" and done.progress.fraction == 1.0
        assert done.started_at >= done.submitted_at and done.finished_at >= done.started_at

    def test_progress_and_cancelled_outside_a_job_do_nothing(
        self, plugwarden_plugin, plugwarden_host
    ):
        body = (
            "import plugwarden\nfor i in range(100000):\n    plugwarden.progress(i, 100000)\n"
            "return plugwarden.cancelled()"
        )
        plugwarden_plugin("quiet", plugin_source(body))
        host = plugwarden_host()
        result = host.call("quiet", "t", {})
        assert result.ok and result.result is False

    def test_progress_with_a_wrong_type_fails_the_call_with_a_clear_error(
        self, plugwarden_plugin, plugwarden_host
    ):
        plugwarden_plugin("sloppy", plugin_source("import plugwarden\nplugwarden.progress('half')"))
        host = plugwarden_host()
        job = finished(host, host.submit("sloppy", "t", {}).id)
        assert job.state == JobState.FAILED and job.record.error_type == "TypeError"
        assert "finite numbers" in job.record.error

    def test_a_progress_flood_past_the_throttle_kills_the_worker_not_the_host(
        self, plugwarden_plugin, plugwarden_host
    ):
        """A plugin that sends progress frames behind the throttle's back is
        a protocol violation: its job fails, the plugin comes back."""
        body = (
            "import plugwarden.isolation.reporting as r\nreporter = r._process_reporter[0]\n"
            "if reporter is None:\n    return 'not a job'\n"
            "for i in range(100000):\n    reporter._send(i, None, 'flood')\nreturn 'sent'"
        )
        plugwarden_plugin("flood", plugin_source(body))
        host = plugwarden_host({"defaults": {"restart_backoff_s": 0.05}})
        job = finished(host, host.submit("flood", "t", {}).id)
        assert job.state == JobState.FAILED
        assert job.record.error_type == ErrorType.PROTOCOL
        assert "progress flood" in job.record.error
        wait_for(lambda: host.call("flood", "t", {}).ok, 30, "the plugin to serve again")

    def test_a_forked_child_reporting_progress_sends_nothing(
        self, plugwarden_plugin, plugwarden_host
    ):
        """Hostile or careless: a child the plugin forks calls progress() and
        cancelled(); only the worker itself may talk to the host, so the job
        runs on and its worker is not killed for a protocol violation."""
        body = (
            "import os, plugwarden\npid = os.fork()\nif pid == 0:\n"
            "    for i in range(50):\n        plugwarden.progress(i, 50, 'from the child')\n"
            "    plugwarden.cancelled()\n    os._exit(0)\n"
            "os.waitpid(pid, 0)\nplugwarden.progress(1, 1, 'parent')\n"
            "return os.readlink('/proc/self/ns/pid') + ':' + os.readlink('/proc/self')"
        )
        plugwarden_plugin("forker", plugin_source(body))
        host = plugwarden_host()
        first = finished(host, host.submit("forker", "t", {}).id)
        assert first.state == JobState.SUCCEEDED, first.record
        assert first.progress.message == "parent"
        second = finished(host, host.submit("forker", "t", {}).id)
        assert second.record.result == first.record.result  # the same worker


class TestCancel:
    @pytest.mark.parametrize("isolation", ["process", "inline"])
    def test_a_cooperative_cancel_ends_the_job_cancelled(self, steps, plugwarden_host, isolation):
        host = plugwarden_host({"defaults": {"isolation": isolation}})
        job = host.submit(steps, "count", {"n": 1000, "dt": 0.01})
        wait_for(lambda: host.job(job.id).progress is not None, 30, "progress")
        pid_before = host.worker_pids(steps)
        asked = time.monotonic()
        host.cancel(job.id)
        done = finished(host, job.id)
        assert time.monotonic() - asked < host.config.jobs.cancel_grace_s + 1
        assert done.state == JobState.CANCELLED
        assert done.record.ok and "stopped_at" in done.record.result
        assert host.worker_pids(steps) == pid_before  # nothing was killed
        assert host.call(steps, "count", {"n": 1, "dt": 0}).ok

    def test_a_forced_cancel_kills_a_hung_worker_and_the_plugin_serves_on(
        self, plugwarden_plugin, plugwarden_host
    ):
        """A plugin deaf to the flag, in a C sleep: after cancel_grace_s its
        worker is killed and replaced; no trip, no restart, still available."""
        body = "if args.get('hang'):\n" + textwrap.indent(HUNG_IN_C, "    ") + WHO_AM_I
        plugwarden_plugin("deaf", plugin_source(body))
        host = plugwarden_host({"jobs": {"cancel_grace_s": 1}})
        first_pid = host.call("deaf", "t", {}).result
        job = host.submit("deaf", "t", {"hang": True})
        wait_for(lambda: host.job(job.id).state == JobState.RUNNING, 30, "the job to run")
        asked = time.monotonic()
        host.cancel(job.id)
        done = finished(host, job.id)
        assert time.monotonic() - asked < 1 + 1
        assert done.state == JobState.CANCELLED
        assert done.record.error_type == ErrorType.CANCELLED
        assert "cancel_grace_s (1s)" in done.record.error
        assert not done.record.guard_tripped
        after = host.call("deaf", "t", {})
        assert after.ok and after.result != first_pid
        status = host.status("deaf")
        assert status.state is State.INITIALIZED
        assert status.metrics["restarts"] == 0
        assert sum(status.metrics["guard_trips"].values()) == 0

    def test_inline_a_forced_cancel_abandons_the_call(
        self, plugwarden_plugin, plugwarden_host, tmp_path
    ):
        """Inline, Python cannot stop the thread: after the grace the job ends
        cancelled and the caller is free; the plugin's thread runs on."""
        plugwarden_plugin("gate", plugin_source(BLOCK_UNTIL_FILE))
        host = plugwarden_host(
            {"defaults": {"isolation": "inline"}, "jobs": {"cancel_grace_s": 0.5}}
        )
        gate = Gate(tmp_path)
        job = host.submit("gate", "t", gate.args)
        gate.wait_started()
        host.cancel(job.id)
        done = finished(host, job.id)
        assert done.state == JobState.CANCELLED and "abandoned" in done.record.error
        assert host.status("gate").available
        gate.release()

    def test_a_manual_restart_fails_the_running_job_with_restarted(self, gated_job):
        host, _, job = gated_job()
        host.restart("gate")
        done = finished(host, job.id)
        assert done.state == JobState.FAILED and done.record.error_type == ErrorType.RESTARTED

    def test_a_drain_past_its_timeout_loses_the_running_job(self, gated_job, plugwarden_host):
        host, gate, job = gated_job()
        assert host.drain(0.2) is False
        with pytest.raises(JobRefused) as refused:
            host.submit("gate", "t", gate.args)
        assert refused.value.error_type == ErrorType.SHUTTING_DOWN
        reopened = plugwarden_host()
        assert reopened.job(job.id).state == JobState.LOST

    def test_cancelling_a_queued_job_touches_no_worker(
        self, plugwarden_plugin, plugwarden_host, tmp_path
    ):
        plugwarden_plugin("gate", plugin_source(BLOCK_UNTIL_FILE))
        host = plugwarden_host()
        pids = host.worker_pids("gate")
        gate = Gate(tmp_path)
        running = host.submit("gate", "t", gate.args)
        gate.wait_started()
        queued = host.submit("gate", "t", gate.args)
        assert host.job(queued.id).state == JobState.QUEUED
        cancelled = host.cancel(queued.id)
        assert cancelled.state == JobState.CANCELLED and cancelled.started_at is None
        assert "before it started" in cancelled.record.error
        gate.release()
        assert finished(host, running.id).state == JobState.SUCCEEDED
        assert host.worker_pids("gate") == pids
        assert host.cancel(running.id).state == JobState.SUCCEEDED  # finished: unchanged

    def test_cancelling_an_unknown_job_raises_unknown_job(self, steps, plugwarden_host):
        host = plugwarden_host()
        with pytest.raises(UnknownJob, match="Unknown job"):
            host.cancel("0" * 32)
        with pytest.raises(UnknownJob):
            host.job("not-an-id")


class TestGuardsAndQueue:
    def test_a_segfault_fails_the_job_with_the_signal(self, plugwarden_plugin, plugwarden_host):
        plugwarden_plugin("segv", plugin_source("import ctypes\nctypes.string_at(0)"))
        host = plugwarden_host()
        done = finished(host, host.submit("segv", "t", {}).id)
        assert done.state == JobState.FAILED
        assert done.record.error_type == ErrorType.WORKER_DIED
        assert "SIGSEGV" in done.record.error

    def test_a_job_past_its_timeout_fails_naming_job_timeout_s(
        self, plugwarden_plugin, plugwarden_host
    ):
        plugwarden_plugin("sleepy", plugin_source("import time\ntime.sleep(60)"))
        config = {"job_timeout_s": 0.5, "restart_backoff_s": 0.05}
        host = plugwarden_host({"plugins": {"sleepy": config}})
        done = finished(host, host.submit("sleepy", "t", {}).id)
        assert done.state == JobState.FAILED and done.record.error_type == ErrorType.TIMEOUT
        assert "job_timeout_s" in done.record.error and done.timeout_s == 0.5
        wait_for(lambda: host.status("sleepy").available, 30, "the restart")
        shorter = finished(host, host.submit("sleepy", "t", {}, timeout_s=0.2).id)
        assert shorter.timeout_s == 0.2 and "0.2s" in shorter.record.error

    def test_a_job_past_its_memory_limit_fails_with_the_usual_reason(
        self, plugwarden_plugin, plugwarden_host
    ):
        body = "blocks = []\nwhile True:\n    blocks.append(bytearray(16 * 2**20))"
        plugwarden_plugin("hog", plugin_source(body))
        host = plugwarden_host({"plugins": {"hog": {"memory_mb": 200}}})
        done = finished(host, host.submit("hog", "t", {}).id)
        assert done.state == JobState.FAILED
        assert done.record.error_type == ErrorType.MEMORY_LIMIT
        assert "200 MB memory limit" in done.record.error

    def test_a_full_queue_answers_busy(self, gated_job):
        host, gate, first = gated_job({"jobs": {"max_queued_jobs": 2}})
        queued = [host.submit("gate", "t", gate.args) for _ in range(2)]
        with pytest.raises(JobRefused, match="max_queued_jobs") as refused:
            host.submit("gate", "t", gate.args)
        assert refused.value.error_type == ErrorType.BUSY
        gate.release()
        for job in (first, *queued):
            assert finished(host, job.id).state == JobState.SUCCEEDED

    def test_jobs_and_calls_share_the_plugins_workers(self, gated_job):
        """A synchronous call waits for the worker a job holds, and runs after it."""
        host, gate, job = gated_job({"plugins": {"gate": {"timeout_s": 0.3}}})
        assert host.call("gate", "t", gate.args).error_type == ErrorType.BUSY
        gate.release()
        assert finished(host, job.id).state == JobState.SUCCEEDED

    @pytest.mark.parametrize(
        ("tool", "args", "error_type"),
        [("", {}, ErrorType.INVALID_ARGUMENTS), ("t", [1], ErrorType.INVALID_ARGUMENTS),
         ("t", {"s": {1, 2}}, ErrorType.INVALID_ARGUMENTS)],
    )  # fmt: skip
    def test_bad_submissions_are_refused_before_anything_is_stored(
        self, steps, plugwarden_host, tool, args, error_type
    ):
        host = plugwarden_host()
        with pytest.raises(JobRefused) as refused:
            host.submit(steps, tool, args)
        assert refused.value.error_type == error_type
        assert host.jobs() == []

    def test_an_unknown_plugin_is_refused(self, steps, plugwarden_host):
        host = plugwarden_host()
        with pytest.raises(JobRefused) as refused:
            host.submit("nope", "t", {})
        assert refused.value.error_type == ErrorType.UNKNOWN_PLUGIN


class TestDurable:
    def test_a_result_stored_by_one_host_is_read_by_the_next(self, steps, plugwarden_host):
        first = plugwarden_host()
        job = finished(first, first.submit(steps, "count", {"n": 3, "dt": 0}).id)
        first.close()
        second = plugwarden_host()
        again = second.job(job.id)
        assert again.state == JobState.SUCCEEDED and again.record == job.record
        assert again.progress.done == 3 and again.started_at == job.started_at
        assert [j.id for j in second.jobs(plugin=steps)] == [job.id]
        assert second.jobs(state="failed") == []

    def test_a_sigkilled_host_leaves_its_running_job_lost_on_the_next_start(
        self, plugwarden_plugin, plugwarden_site, plugwarden_host, tmp_path
    ):
        plugwarden_plugin("gate", plugin_source(BLOCK_UNTIL_FILE))
        database = tmp_path / "jobs.sqlite3"
        (tmp_path / "gate").mkdir()
        gate = Gate(tmp_path / "gate")
        grant = {"read": [str(tmp_path / "gate")], "write": [str(tmp_path / "gate")]}
        script = (
            "import sys, time\nfrom plugwarden import Host\n"
            f"config = {{'jobs': {{'path': {str(database)!r}}}, "
            f"'defaults': {{'permissions': {grant!r}}}}}\n"
            f"host = Host(config, search_path=[{str(plugwarden_site)!r}])\n"
            f"host.start()\nrunning = host.submit('gate', 't', {gate.args!r})\n"
            f"queued = host.submit('gate', 't', {gate.args!r})\n"
            "print(running.id, queued.id, flush=True)\ntime.sleep(3600)\n"
        )
        child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        try:
            running_id, queued_id = child.stdout.readline().split()
            gate.wait_started()
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
            child.stdout.close()
        host = plugwarden_host({"jobs": {"path": str(database)}})
        lost = host.job(running_id)
        assert lost.state == JobState.LOST and lost.record.error_type == ErrorType.JOB_LOST
        assert "Host stopped while the job was running" in lost.record.error
        assert "before the job started" in host.job(queued_id).record.error

    def test_a_live_host_s_jobs_are_not_marked_lost_by_another(
        self, plugwarden_plugin, plugwarden_host, tmp_path
    ):
        plugwarden_plugin("gate", plugin_source(BLOCK_UNTIL_FILE))
        gate = Gate(tmp_path)
        first = plugwarden_host()
        job = first.submit("gate", "t", gate.args)
        gate.wait_started()
        second = plugwarden_host()
        assert second.job(job.id).state == JobState.RUNNING
        gate.release()
        assert finished(first, job.id).state == JobState.SUCCEEDED
        assert second.job(job.id).state == JobState.SUCCEEDED

    def test_closing_the_host_loses_its_queued_and_running_jobs_with_a_reason(
        self, plugwarden_plugin, plugwarden_host, tmp_path
    ):
        plugwarden_plugin("gate", plugin_source(BLOCK_UNTIL_FILE))
        gate = Gate(tmp_path)
        host = plugwarden_host()
        running = host.submit("gate", "t", gate.args)
        gate.wait_started()
        queued = host.submit("gate", "t", gate.args)
        host.close()
        reopened = plugwarden_host()
        assert reopened.job(running.id).state == JobState.LOST
        assert "while the job was running" in reopened.job(running.id).record.error
        assert reopened.job(queued.id).state == JobState.LOST

    def test_retention_keeps_the_newest_keep_max_jobs(self, steps, plugwarden_host):
        host = plugwarden_host()
        ids = [finished(host, host.submit(steps, "c", {"n": 1, "dt": 0}).id).id for _ in range(4)]
        host.close()
        kept = plugwarden_host({"jobs": {"keep_max": 2}})
        assert [job.id for job in kept.jobs()] == ids[:1:-1]

    def test_a_corrupt_database_is_a_startup_error_naming_the_path(
        self, steps, plugwarden_host, tmp_path
    ):
        database = tmp_path / "broken.sqlite3"
        database.write_bytes(b"this is not a database" * 100)
        host = plugwarden_host({"jobs": {"path": str(database)}}, start=False)
        with pytest.raises(JobStoreError, match="not a jobs database") as error:
            host.start()
        assert str(database) in str(error.value)

    def test_an_unwritable_database_path_is_a_startup_error(self, steps, plugwarden_host, tmp_path):
        blocker = tmp_path / "a-file"
        blocker.write_text("")
        path = blocker / "jobs.sqlite3"
        host = plugwarden_host({"jobs": {"path": str(path)}}, start=False)
        with pytest.raises(JobStoreError, match=str(path)):
            host.start()

    def test_memory_database_keeps_jobs_for_the_host_only(self, steps, plugwarden_host):
        host = plugwarden_host({"jobs": {"path": ":memory:"}})
        job = finished(host, host.submit(steps, "c", {"n": 1, "dt": 0}).id)
        assert host.job(job.id).state == JobState.SUCCEEDED
        assert plugwarden_host({"jobs": {"path": ":memory:"}}).jobs() == []


class TestBoundedStore:
    """A job's result and args cost the host and its disk a bounded amount."""

    def test_a_result_over_the_stored_cap_fails_the_job_naming_the_key(
        self, plugwarden_plugin, plugwarden_host
    ):
        plugwarden_plugin("big", plugin_source("return 'x' * args['n']"))
        host = plugwarden_host({"jobs": {"max_result_bytes": 10_000}})
        job = finished(host, host.submit("big", "t", {"n": 200_000}).id)
        assert job.state == JobState.FAILED
        assert job.record.error_type == ErrorType.RESULT_TOO_LARGE
        assert "[jobs] max_result_bytes" in job.record.error
        assert job.record.result is None
        small = finished(host, host.submit("big", "t", {"n": 10}).id)
        assert small.state == JobState.SUCCEEDED and small.record.result == "x" * 10
        database = host.config.jobs.database()
        host.close()
        assert b"x" * 20_000 not in Path(database).read_bytes()

    def test_a_jobs_args_are_stored_once(self, steps, plugwarden_host):
        """They were stored again in its record: a 1 MB argument cost 2 MB."""
        import sqlite3

        host = plugwarden_host()
        job = finished(host, host.submit(steps, "c", {"n": 1, "dt": 0, "pad": "y" * 50_000}).id)
        assert job.record.args["pad"] == "y" * 50_000  # the Python record is whole
        with contextlib.closing(sqlite3.connect(host.config.jobs.database())) as db:
            args, record = db.execute(
                "SELECT args, record FROM jobs WHERE id = ?", (job.id,)
            ).fetchone()
        assert "y" * 50_000 in args and "y" * 100 not in record

    def test_a_page_of_jobs_stops_near_its_byte_bound_and_the_next_goes_on(
        self, steps, plugwarden_host
    ):
        """A listing of 1000 jobs with 1 MiB of args each held them all at
        once (four such requests took the host from 197 to 1049 MB)."""
        from plugwarden.jobs.store import PAGE_BYTES

        host = plugwarden_host()
        pad = "y" * 2**20
        count = PAGE_BYTES // 2**20 + 4
        ids = [finished(host, host.submit(steps, "c", {"n": 1, "dt": 0, "pad": pad}).id).id
               for _ in range(count)]  # fmt: skip
        first, cursor = host.job_page(limit=1000)
        assert 1 <= len(first) <= PAGE_BYTES // 2**20 + 1 and cursor is not None
        rest, last = host.job_page(limit=1000, before=cursor)
        assert [job.id for job in first + rest] == ids[::-1] and last is None

    def test_a_job_the_store_cannot_keep_reads_failed_by_id_and_in_listings(
        self, plugwarden_plugin, plugwarden_host
    ):
        """The disk filled up as it ended: it read succeeded by id (memory)
        and running in a listing (database). Both now say failed, naming the
        store; after a restart it is failed or lost, never running."""
        plugwarden_plugin("big", plugin_source("return 'x' * args['n']"))
        host = plugwarden_host()
        store = host._jobs.store  # the disk fills: SQLite's own page cap, on its connection
        store._connection().execute(
            "PRAGMA max_page_count = " + str(store._query("PRAGMA page_count", ())[0][0] + 1)
        )
        job = finished(host, host.submit("big", "t", {"n": 2_000_000}).id)
        assert job.state == JobState.FAILED
        assert job.record.error_type == ErrorType.JOB_STORE and "full" in job.record.error
        assert host.job(job.id).state == JobState.FAILED
        assert [(j.id, j.state) for j in host.jobs()] == [(job.id, JobState.FAILED)]
        host.close()
        assert plugwarden_host().job(job.id).state in (JobState.FAILED, JobState.LOST)

    def test_a_companion_file_sqlite_cannot_write_is_a_startup_error_naming_it(
        self, steps, plugwarden_host, tmp_path
    ):
        """SQLite maps the -shm file: one it cannot use may kill the host."""
        database = tmp_path / "jobs.sqlite3"
        (tmp_path / "jobs.sqlite3-shm").mkdir()
        host = plugwarden_host({"jobs": {"path": str(database)}}, start=False)
        with pytest.raises(JobStoreError, match=r"jobs\.sqlite3-shm"):
            host.start()


class TestOwners:
    def test_lock_files_of_dead_hosts_are_cleared_and_a_live_one_is_kept(
        self, steps, plugwarden_host, tmp_path
    ):
        import fcntl

        database = tmp_path / "jobs.sqlite3"
        owners = tmp_path / "jobs.sqlite3.hosts"
        owners.mkdir()
        (owners / ("d" * 32 + ".lock")).write_text("")  # nobody holds it: a dead host's
        held = owners / ("a" * 32 + ".lock")
        with open(held, "w") as holder:
            fcntl.flock(holder, fcntl.LOCK_EX)  # a live host's
            host = plugwarden_host({"jobs": {"path": str(database)}})
            names = sorted(p.name for p in owners.iterdir())
            assert names == sorted([held.name, f"{host._jobs.store.owner}.lock"])
            host.close()
            assert [p.name for p in owners.iterdir()] == [held.name]
