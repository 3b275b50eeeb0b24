"""A job (docs/guides/jobs.md): a call that runs in the background, with progress.

:class:`Job` is an immutable snapshot, safe to hand out; the
:class:`~plugwarden.jobs.queue.JobQueue` keeps the live ones and the
:class:`~plugwarden.jobs.store.JobStore` every one.
"""

from __future__ import annotations

import json
import math
import re
from bisect import bisect_left
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from plugwarden.blob import answer_json, summary_json
from plugwarden.encoding import compact_json
from plugwarden.error_types import ErrorType
from plugwarden.exceptions import JobRefused
from plugwarden.plugin.lifecycle import iso
from plugwarden.result import CallResult

__all__ = [
    "DURATION_BUCKETS",
    "HEARTBEAT_S",
    "Job",
    "JobDurations",
    "JobFigures",
    "JobState",
    "Progress",
    "job_outcome",
    "outcome_of",
    "storable_arguments",
    "valid_job_id",
]

HEARTBEAT_S = 15.0  # a job's event stream with no news sends a comment this often

_JOB_ID = re.compile(r"[0-9a-f]{32}")
DURATION_BUCKETS = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, math.inf)


def valid_job_id(value: str) -> bool:
    """Whether ``value`` has the form of a job id (32 hex digits)."""
    return _JOB_ID.fullmatch(value) is not None


class JobState:
    QUEUED: Final = "queued"
    RUNNING: Final = "running"
    SUCCEEDED: Final = "succeeded"
    FAILED: Final = "failed"
    CANCELLED: Final = "cancelled"
    LOST: Final = "lost"  # the host stopped while the job was queued or running

    ALL: Final = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED, LOST)
    LIVE: Final = frozenset({QUEUED, RUNNING})
    FINISHED: Final = frozenset({SUCCEEDED, FAILED, CANCELLED, LOST})


@dataclass(frozen=True, slots=True)
class Progress:
    """The last progress a job reported: ``done`` of ``total`` (None: unknown)."""

    done: float
    total: float | None = None
    message: str = ""
    updated_at: float = 0.0  # time.time()

    @property
    def fraction(self) -> float | None:
        if not self.total or self.total <= 0:
            return None
        return min(1.0, max(0.0, self.done / self.total))

    def to_dict(self) -> dict[str, Any]:
        return {
            "done": self.done,
            "total": self.total,
            "fraction": self.fraction,
            "message": self.message,
            "updated_at": _when(self.updated_at),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Progress:
        return cls(data["done"], data.get("total"), data.get("message", ""), data.get("at", 0.0))

    def stored(self) -> dict[str, Any]:
        return {"done": self.done, "total": self.total, "message": self.message,
                "at": self.updated_at}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Job:
    """One job as it is now; times are ``time.time()``. Once it finished,
    ``outcome`` is its call's result record without args and result (the
    same fields a synchronous call returns) and ``result_json`` the result
    as JSON bytes, passed on as the plugin sent it; :attr:`record` puts them
    together as Python data."""

    id: str
    plugin: str
    tool: str
    args: dict[str, Any]
    state: str
    submitted_at: float
    timeout_s: float
    started_at: float | None = None
    finished_at: float | None = None
    progress: Progress | None = None
    outcome: dict[str, Any] | None = None
    result_json: bytes | None = None
    version: int = field(default=0, compare=False)  # bumped by every change of a live job

    @property
    def finished(self) -> bool:
        return self.state in JobState.FINISHED

    @property
    def ok(self) -> bool:
        return self.state == JobState.SUCCEEDED

    @property
    def duration_s(self) -> float | None:
        if self.started_at is None:
            return None
        end = self.finished_at if self.finished_at is not None else datetime.now(UTC).timestamp()
        return round(max(0.0, end - self.started_at), 3)

    @property
    def record(self) -> CallResult | None:
        """The result record of the job's call, as a synchronous call returns
        it (:meth:`Host.call`, its result decoded); None until it finished."""
        if self.outcome is None:
            return None
        outcome = self.outcome
        return CallResult(
            ok=bool(outcome.get("ok")),
            plugin=outcome.get("plugin") or "",
            hook=outcome.get("hook") or "run",
            tool=outcome.get("tool"),
            args=self.args,
            result=None if self.result_json is None else json.loads(self.result_json),
            error=outcome.get("error"),
            error_type=outcome.get("error_type"),
            duration_ms=float(outcome.get("duration_ms") or 0.0),
            guard=outcome.get("guard"),
        )

    def to_dict(self) -> dict[str, Any]:
        """The job as Python data, its record whole."""
        record = self.record
        return self._fields() | {"record": None if record is None else record.to_dict()}

    def to_json(self, *, result: bool = True) -> str:
        """The job as HTTP answers it: the record without its args (the
        job's own), with the result passed on as stored, or, without
        ``result`` (listings), only its size in ``result_bytes``."""
        head = compact_json(self._fields())[:-1]
        if self.outcome is None:
            return f'{head},"record":null}}'
        record = compact_json(self.outcome)[:-1]
        if not result:
            size = 0 if self.result_json is None else len(self.result_json)
            return f'{head},"record":{record},"result_bytes":{size}}}}}'
        stored = "null" if self.result_json is None else self.result_json.decode()
        return f'{head},"record":{record},"result":{stored}}}}}'

    def _fields(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "plugin": self.plugin,
            "tool": self.tool,
            "args": self.args,
            "state": self.state,
            "submitted_at": _when(self.submitted_at),
            "started_at": _when(self.started_at),
            "finished_at": _when(self.finished_at),
            "duration_s": self.duration_s,
            "timeout_s": self.timeout_s,
            "progress": None if self.progress is None else self.progress.to_dict(),
        }


def outcome_of(result: CallResult) -> dict[str, Any]:
    """A call's record as a job keeps it: without args (the job's own) and
    result (kept apart, as JSON bytes)."""
    outcome = result.to_dict()
    del outcome["args"], outcome["result"]
    return outcome


def job_outcome(result: CallResult, cap: int) -> tuple[dict[str, Any], bytes | None]:
    """A finished call as a job keeps it: :func:`outcome_of`, and the
    result's JSON bytes (as the worker sent them, newlines of JSON
    whitespace made spaces: an event stream's line holds it). A result over
    ``cap`` bytes fails the job with the reason."""
    if not result.ok:
        return outcome_of(result), None
    if isinstance(result.encoded, memoryview):
        size = len(result.encoded)
        raw = result.encoded.tobytes() if size <= cap else b""
    else:
        text = result.encoded if isinstance(result.encoded, str) else answer_json(result.result)
        raw = text.encode()
        size = len(raw)
    if size > cap:
        failed = CallResult.failure(
            f"The job's result is {size} bytes, over the {cap}-byte cap on a stored job result "
            "([jobs] max_result_bytes). Return less (write large outputs to a file the plugin "
            "is granted), or raise the cap.",
            ErrorType.RESULT_TOO_LARGE,
            plugin=result.plugin,
            hook=result.hook,
            tool=result.tool,
            duration_ms=result.duration_ms,
        )
        return outcome_of(failed), None
    return outcome_of(result), raw.replace(b"\n", b" ").replace(b"\r", b" ")


def storable_arguments(
    plugin: str, args: Mapping[str, Any] | None, timeout_s: object
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """A job's args as stored (plain JSON data: binary values described,
    see :mod:`plugwarden.blob`) and, where they hold binary values, the args
    the call takes (None: the same); its timeout checked. Raises
    :class:`JobRefused` (InvalidArguments) for what cannot be a job."""
    if timeout_s is not None and (
        isinstance(timeout_s, bool)
        or not isinstance(timeout_s, int | float)
        or not math.isfinite(timeout_s)
        or timeout_s <= 0
    ):
        raise JobRefused(
            plugin, f"timeout_s must be a positive number, got {timeout_s!r}",
            ErrorType.INVALID_ARGUMENTS,
        )  # fmt: skip
    arguments = dict(args or {})
    try:
        json.dumps(arguments, allow_nan=False)
        return arguments, None
    except (TypeError, ValueError) as exc:
        problem = exc
    try:
        return json.loads(summary_json(arguments)), arguments
    except (TypeError, ValueError):
        raise JobRefused(
            plugin, f"A job's args must be JSON data and binary values to be stored ({problem}).",
            ErrorType.INVALID_ARGUMENTS,
        ) from None  # fmt: skip


@dataclass(slots=True)
class JobDurations:
    """A histogram of finished jobs' run times (seconds), Prometheus buckets."""

    buckets: list[int] = field(default_factory=lambda: [0] * len(DURATION_BUCKETS))
    total_s: float = 0.0

    def observe(self, seconds: float) -> None:
        self.buckets[bisect_left(DURATION_BUCKETS, seconds)] += 1
        self.total_s += seconds

    def cumulative(self) -> tuple[list[tuple[str, int]], float]:
        out, running = [], 0
        for bound, count in zip(DURATION_BUCKETS, self.buckets, strict=True):
            running += count
            out.append(("+Inf" if math.isinf(bound) else str(bound), running))
        return out, self.total_s


def _when(moment: float | None) -> str | None:
    return None if moment is None else iso(datetime.fromtimestamp(moment, UTC))


@dataclass(frozen=True, slots=True)
class JobFigures:
    """Jobs as the metrics count them."""

    counts: dict[str, int]  # stored jobs by state
    queue_depths: dict[str, int]  # per plugin: jobs waiting
    durations: dict[str, tuple[list[tuple[str, int]], float]]  # per plugin: buckets, sum
