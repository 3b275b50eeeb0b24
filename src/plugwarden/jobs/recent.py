"""Finished jobs kept in memory too, so that reads of a job just done skip
the database: the newest, bounded by count and by the bytes of their results
(docs/guides/jobs.md)."""

from __future__ import annotations

import collections

from plugwarden.jobs.job import Job

__all__ = ["RECENT", "RECENT_BYTES", "RecentJobs"]

RECENT = 1024  # finished jobs kept in memory...
RECENT_BYTES = 32 * 2**20  # ...and at most this many bytes of their results


class RecentJobs:
    """Not thread-safe: the queue's lock guards it."""

    def __init__(self, most: int = RECENT, most_bytes: int = RECENT_BYTES) -> None:
        self._jobs: collections.OrderedDict[str, Job] = collections.OrderedDict()
        self._most = most
        self._most_bytes = most_bytes
        self.result_bytes = 0

    def add(self, job: Job) -> None:
        """Keep ``job``; the oldest are forgotten past either bound."""
        self._jobs[job.id] = job
        self.result_bytes += len(job.result_json or b"")
        while len(self._jobs) > self._most or self.result_bytes > self._most_bytes:
            _, old = self._jobs.popitem(last=False)
            self.result_bytes -= len(old.result_json or b"")

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)
