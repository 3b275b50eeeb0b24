"""Where jobs live (docs/guides/jobs.md): an embedded SQLite database.

stdlib ``sqlite3`` in WAL mode (readers never block the writer), one
connection behind a lock. Rows are written when a job is submitted, starts
and ends; progress lives in memory while a job runs and is stored with its
end. ``:memory:`` keeps jobs for the host's lifetime only.

Several hosts may share one file. Each holds a lock file of its own
(``<database>.hosts/<owner>.lock``, ``flock``) for as long as it runs, and
marks its jobs with its owner id; a starting host marks ``lost`` every
queued or running job whose owner no longer holds its lock: a host that
died (even by SIGKILL) loses the kernel lock with its process.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import sqlite3
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

from plugwarden.encoding import compact_json
from plugwarden.error_types import ErrorType
from plugwarden.exceptions import JobStoreError
from plugwarden.jobs.job import Job, JobState, Progress, outcome_of
from plugwarden.result import CallResult

__all__ = ["JobStore", "lost_record"]

log = logging.getLogger("plugwarden.jobs")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    owner TEXT NOT NULL,
    plugin TEXT NOT NULL,
    tool TEXT NOT NULL,
    args TEXT NOT NULL,
    state TEXT NOT NULL,
    submitted REAL NOT NULL,
    started REAL,
    finished REAL,
    timeout_s REAL NOT NULL,
    progress TEXT,
    record TEXT,
    result BLOB
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state);
CREATE INDEX IF NOT EXISTS jobs_plugin ON jobs (plugin, seq);
"""
_COLUMNS = "seq, id, plugin, tool, args, state, submitted, started, finished, timeout_s, " + (
    "progress, record, result"
)
_FINISHED = tuple(sorted(JobState.FINISHED))
PAGE_BYTES = 8 * 2**20  # a page of a job listing holds about this much at most


def lost_record(job: Job, running: bool) -> dict[str, Any]:
    """The outcome of a job the host stopped under (or before) it."""
    when = "while the job was running" if running else "before the job started"
    failed = CallResult.failure(
        f"Host stopped {when}: the job is lost. Submit it again.",
        ErrorType.JOB_LOST,
        plugin=job.plugin,
        tool=job.tool,
    )
    return outcome_of(failed)


class JobStore:
    def __init__(self, path: str, keep_s: float, keep_max: int) -> None:
        self.path = path
        self.keep_s = keep_s
        self.keep_max = keep_max
        self.owner = uuid.uuid4().hex
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._owner_fd: int | None = None
        self._owners_dir: Path | None = None

    # -- opening and closing ------------------------------------------------------

    def open(self) -> int:
        """Open (or create) the database; mark the jobs of hosts that died
        ``lost``; apply retention. Returns how many jobs were marked lost.
        Raises :class:`JobStoreError` naming the path and the fix."""
        memory = self.path == ":memory:"
        if not memory:
            self._check_companions()
        try:
            if not memory:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(
                self.path, check_same_thread=False, isolation_level=None, timeout=5.0
            )
        except (OSError, sqlite3.Error) as exc:
            raise self._error(exc) from exc
        try:
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if not memory and str(mode).lower() != "wal":
                raise sqlite3.OperationalError(f"cannot switch to WAL mode (got {mode})")
            db.execute("PRAGMA synchronous=NORMAL")
            check = db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise sqlite3.DatabaseError(f"integrity check failed: {check}")
            db.executescript(_SCHEMA)
            columns = {row[1] for row in db.execute("PRAGMA table_info(jobs)")}
            if "result" not in columns:  # a database of an earlier version: results in records
                db.execute("ALTER TABLE jobs ADD COLUMN result BLOB")
            self._db = db
            if not memory:
                self._claim()
            lost = self._mark_lost()
            self.prune()
        except (OSError, sqlite3.Error) as exc:
            db.close()
            self._db = None
            self._release()
            raise self._error(exc) from exc
        return lost

    def _check_companions(self) -> None:
        """SQLite maps the ``-shm`` file into memory: one it cannot write (or
        not a file) may fail every write, or kill the host with SIGBUS."""
        for suffix in ("-wal", "-shm"):
            companion = self.path + suffix
            if not os.path.lexists(companion):
                continue
            if not os.path.isfile(companion) or not os.access(companion, os.R_OK | os.W_OK):
                raise JobStoreError(
                    self.path,
                    f"its {suffix} file {companion} cannot be written (another user's file, or "
                    "not a file). Remove it while no host uses the database, or fix its owner; "
                    "or set [jobs] path elsewhere.",
                )

    def _error(self, exc: BaseException) -> JobStoreError:
        text = str(exc)
        if isinstance(exc, sqlite3.DatabaseError) and "not a database" in text:
            fix = "the file is corrupt or not a jobs database: move it away (a new one is made)"
        elif "readonly" in text or isinstance(exc, PermissionError) or "unable to open" in text:
            fix = "it cannot be written here: fix its permissions, or set [jobs] path elsewhere"
        else:
            fix = "fix the file or set [jobs] path to another one (':memory:' keeps none)"
        return JobStoreError(self.path, f"{text}; {fix}.")

    def _claim(self) -> None:
        """Hold a lock file of our own while we run: our jobs are alive."""
        self._owners_dir = Path(self.path + ".hosts")
        self._owners_dir.mkdir(exist_ok=True)
        # Locked under a temporary name, then renamed: no other host ever
        # sees our lock file unlocked.
        temporary = self._owners_dir / f".{self.owner}.tmp"
        fd = os.open(temporary, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.rename(temporary, self._owners_dir / f"{self.owner}.lock")
        self._owner_fd = fd
        for lock in self._owners_dir.glob("*.lock"):  # the litter of hosts that died
            self._alive(lock.stem)

    def _alive(self, owner: str) -> bool:
        if owner == self.owner:
            return True
        if self._owners_dir is None:
            return False
        lock = self._owners_dir / f"{owner}.lock"
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True  # its host holds it
        finally:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()
        return False

    def _mark_lost(self) -> int:
        db = self._connection()
        with self._lock:
            rows = db.execute(
                f"SELECT {_COLUMNS}, owner FROM jobs WHERE state IN (?, ?)",
                (JobState.QUEUED, JobState.RUNNING),
            ).fetchall()
        alive = {owner: self._alive(owner) for owner in {row[-1] for row in rows}}
        dead = [row for row in rows if not alive[row[-1]]]
        now = time.time()
        for row in dead:
            job = _job(row[:-1])
            running = job.state == JobState.RUNNING
            self.write(
                replace(
                    job, state=JobState.LOST, finished_at=now, outcome=lost_record(job, running)
                ),
                only_if_live=True,
            )
        return len(dead)

    def _release(self) -> None:
        if self._owner_fd is not None and self._owners_dir is not None:
            with contextlib.suppress(FileNotFoundError):
                (self._owners_dir / f"{self.owner}.lock").unlink()
            os.close(self._owner_fd)
            self._owner_fd = None

    def close(self) -> None:
        with self._lock:
            db, self._db = self._db, None
        if db is not None:
            db.close()
        self._release()

    def _connection(self) -> sqlite3.Connection:
        db = self._db
        if db is None:
            raise JobStoreError(self.path, "not open (the host is not started, or closed)")
        return db

    # -- writing --------------------------------------------------------------------

    def insert(self, job: Job) -> None:
        self._execute(
            "INSERT INTO jobs (id, owner, plugin, tool, args, state, submitted, timeout_s) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                job.id,
                self.owner,
                job.plugin,
                job.tool,
                json.dumps(job.args),
                job.state,
                job.submitted_at,
                job.timeout_s,
            ),
        )

    def write(self, job: Job, *, only_if_live: bool = False) -> None:
        """Store ``job``'s state, times, progress, outcome and result."""
        guard = " AND state IN ('queued', 'running')" if only_if_live else ""
        self._execute(
            "UPDATE jobs SET state = ?, started = ?, finished = ?, progress = ?, record = ?, "
            f"result = ? WHERE id = ?{guard}",
            (
                job.state,
                job.started_at,
                job.finished_at,
                None if job.progress is None else json.dumps(job.progress.stored()),
                None if job.outcome is None else json.dumps(job.outcome),
                job.result_json,
                job.id,
            ),
        )

    def keep(self, job: Job) -> Job:
        """Write a finished ``job``; when the store cannot (a full disk), the
        job as failed, naming the store's error (written if it fits, else
        it is lost at the next start): what readers see is what is stored."""
        try:
            self.write(job)
            return job
        except JobStoreError as exc:
            log.exception("job %s: could not store its end", job.id)
            problem = str(exc)
        failed = CallResult.failure(
            f"The job ended {job.state}, but the job store could not keep it: {problem}",
            ErrorType.JOB_STORE, plugin=job.plugin, tool=job.tool,
            duration_ms=float((job.outcome or {}).get("duration_ms") or 0.0),
        )  # fmt: skip
        job = replace(job, state=JobState.FAILED, outcome=outcome_of(failed),
                      result_json=None)  # fmt: skip
        with contextlib.suppress(JobStoreError):
            self.write(job)
        return job

    def prune(self) -> int:
        """Remove finished jobs past ``keep_s`` or beyond the newest ``keep_max``."""
        marks = ",".join("?" * len(_FINISHED))
        old = self._execute(
            f"DELETE FROM jobs WHERE state IN ({marks}) AND finished < ?",
            (*_FINISHED, time.time() - self.keep_s),
        )
        extra = self._execute(
            f"DELETE FROM jobs WHERE seq IN (SELECT seq FROM jobs WHERE state IN ({marks}) "
            "ORDER BY seq DESC LIMIT -1 OFFSET ?)",
            (*_FINISHED, self.keep_max),
        )
        return old + extra

    def _execute(self, sql: str, parameters: tuple[Any, ...]) -> int:
        try:
            with self._lock:
                return self._connection().execute(sql, parameters).rowcount
        except sqlite3.Error as exc:
            raise self._error(exc) from exc

    # -- reading ---------------------------------------------------------------------

    def get(self, job_id: str) -> Job | None:
        rows = self._query(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,))
        return _job(rows[0]) if rows else None

    def page(
        self, plugin: str | None, state: str | None, limit: int, before: int | None
    ) -> tuple[list[tuple[int, Job]], bool]:
        """Newest first: up to ``limit`` jobs (with their sequence numbers)
        of ``plugin`` in ``state`` (None: any) submitted before ``before``,
        without their results, and whether more follow. A page stops early
        past PAGE_BYTES of jobs' args and records (at least one job)."""
        clauses, parameters = [], []
        for column, value in (("plugin", plugin), ("state", state), ("seq <", before)):
            if value is not None:
                clauses.append(f"{column} ?" if "<" in column else f"{column} = ?")
                parameters.append(value)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        columns = _COLUMNS.replace(", result", ", NULL")
        sql = f"SELECT {columns} FROM jobs {where} ORDER BY seq DESC LIMIT ?"
        rows: list[Any] = []
        size = 0
        try:
            with self._lock:
                cursor = self._connection().execute(sql, (*parameters, limit + 1))
                for row in cursor:
                    if len(rows) == limit or (rows and size > PAGE_BYTES):
                        cursor.close()
                        return [(row[0], _job(row)) for row in rows], True
                    rows.append(row)
                    size += len(row[4]) + len(row[11] or "")
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        return [(row[0], _job(row)) for row in rows], False

    def counts(self) -> dict[str, int]:
        rows = self._query("SELECT state, count(*) FROM jobs GROUP BY state", ())
        return dict.fromkeys(JobState.ALL, 0) | {row[0]: row[1] for row in rows}

    def _query(self, sql: str, parameters: tuple[Any, ...]) -> list[Any]:
        try:
            with self._lock:
                return self._connection().execute(sql, parameters).fetchall()
        except sqlite3.Error as exc:
            raise self._error(exc) from exc


def _job(row: Any) -> Job:
    (
        _,
        job_id,
        plugin,
        tool,
        args,
        state,
        submitted,
        started,
        finished,
        timeout,
        progress,
        record,
        result,
    ) = row
    outcome = None if record is None else json.loads(record)
    if outcome is not None and "result" in outcome:  # stored by an earlier version
        old = outcome.pop("result")
        outcome.pop("args", None)
        result = None if old is None else compact_json(old).encode()
    return Job(
        id=job_id,
        plugin=plugin,
        tool=tool,
        args=json.loads(args),
        state=state,
        submitted_at=submitted,
        timeout_s=timeout,
        started_at=started,
        finished_at=finished,
        progress=None if progress is None else Progress.from_dict(json.loads(progress)),
        outcome=outcome,
        result_json=None if result is None else bytes(result),
    )
