"""The job routes (docs/guides/operating.md#http): submit, read, list, cancel, and follow a
job as server-sent events. Same error shape and never-500 rules as the
other routes; database reads and writes run off the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING
from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from plugwarden.encoding import compact_json
from plugwarden.error_types import ErrorType
from plugwarden.exceptions import JobRefused, JobStoreError, UnknownJob
from plugwarden.jobs.job import HEARTBEAT_S, Job, JobState, valid_job_id
from plugwarden.web.errors import error
from plugwarden.web.payloads import run_body
from plugwarden.web.requests import authorise, body_problem

if TYPE_CHECKING:  # the app is handed a Host; it never makes one
    from plugwarden.host.host import Host
    from plugwarden.sections import ServerConfig

__all__ = ["MAX_PAGE", "job_routes"]

MAX_PAGE = 1000  # jobs in one page of GET /v1/jobs
DEFAULT_PAGE = 100


def job_routes(host: Host, token: bytes | None, server: ServerConfig) -> list[Route]:
    """Every job route needs the token: a job's args and result are its
    caller's data."""

    async def submit(request: Request) -> Response:
        denied = authorise(request, token)
        if denied is not None:
            return denied
        name = request.path_params["name"]
        body = await run_body(
            request, server.max_body_bytes, server.max_blob_bytes, server.body_timeout_s
        )
        if isinstance(body, Response):
            return body
        problem = body_problem(body, ("tool", "args", "timeout_s"))
        if problem is not None:
            return error(problem, ErrorType.INVALID_REQUEST)
        tool, args, timeout_s = body.get("tool"), body.get("args"), body.get("timeout_s")
        try:
            job = await run_in_threadpool(host.submit, name, tool, args, timeout_s=timeout_s)
        except JobRefused as exc:
            return error(str(exc), exc.error_type)
        location = f"/v1/jobs/{job.id}"
        return _job_answer(job, status_code=202, headers={"Location": location})

    async def readable(request: Request) -> Job | Response:
        """The job the request names, or the answer that refuses it (no
        token, an unknown id, a store that fails)."""
        denied = authorise(request, token)
        if denied is not None:
            return denied
        return await _job(host, request.path_params["job_id"])

    async def one(request: Request) -> Response:
        found = await readable(request)
        return found if isinstance(found, Response) else _job_answer(found)

    async def result(request: Request) -> Response:
        found = await readable(request)
        if isinstance(found, Response):
            return found
        if not found.finished:
            return error(
                f"Job {found.id} is {found.state}: it has no result yet. Follow "
                f"/v1/jobs/{found.id}/events, or poll /v1/jobs/{found.id}.",
                ErrorType.JOB_NOT_FINISHED,
            )
        return Response(found.result_json or b"null", media_type="application/json")

    async def listing(request: Request) -> Response:
        denied = authorise(request, token)
        if denied is not None:
            return denied
        query = request.query_params
        unknown = sorted(set(query) - {"plugin", "state", "limit", "before"})
        if unknown:
            return error(
                f"Unknown query parameter(s) {', '.join(unknown)}; "
                "expected plugin, state, limit, before.",
                ErrorType.INVALID_REQUEST,
            )
        state = query.get("state")
        if state is not None and state not in JobState.ALL:
            return error(
                f"Unknown job state {state[:40]!r}; one of {', '.join(JobState.ALL)}.",
                ErrorType.INVALID_REQUEST,
            )
        try:
            limit = _whole(query.get("limit"), MAX_PAGE) or DEFAULT_PAGE
            before = _whole(query.get("before"), 2**62)
        except ValueError:
            return error(
                f"limit must be a whole number from 1 to {MAX_PAGE}, before a job "
                "sequence number (from the Link header of the previous page).",
                ErrorType.INVALID_REQUEST,
            )
        try:
            jobs, cursor = await run_in_threadpool(
                host.job_page, query.get("plugin"), state, limit, before
            )
        except JobStoreError as exc:
            return _unavailable(str(exc))
        headers = {}
        if cursor is not None:
            fields = {k: v for k, v in query.items() if k != "before"} | {"before": cursor}
            headers["Link"] = f'</v1/jobs?{urlencode(fields)}>; rel="next"'
        return StreamingResponse(_listing(jobs), media_type="application/json", headers=headers)

    async def cancel(request: Request) -> Response:
        denied = authorise(request, token)
        if denied is not None:
            return denied
        job_id = request.path_params["job_id"]
        if not valid_job_id(job_id):
            return error(str(UnknownJob(job_id)), ErrorType.UNKNOWN_JOB)
        try:
            job = await run_in_threadpool(host.cancel, job_id)
        except UnknownJob as exc:
            return error(str(exc), ErrorType.UNKNOWN_JOB)
        except JobStoreError as exc:
            return _unavailable(str(exc))
        return _job_answer(job)

    async def events(request: Request) -> Response:
        found = await readable(request)
        if isinstance(found, Response):
            return found
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(
            _stream(host, found.id), media_type="text/event-stream", headers=headers
        )

    return [
        Route("/v1/jobs", listing, methods=["GET"]),
        Route("/v1/jobs/{job_id}", one, methods=["GET"]),
        Route("/v1/jobs/{job_id}", cancel, methods=["DELETE"]),
        Route("/v1/jobs/{job_id}/events", events, methods=["GET"]),
        Route("/v1/jobs/{job_id}/result", result, methods=["GET"]),
        Route("/v1/plugins/{name}/jobs", submit, methods=["POST"]),
    ]


def _job_answer(
    job: Job, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """A job with its result, passed on as stored."""
    return Response(job.to_json(), status_code, headers, media_type="application/json")


async def _listing(jobs: list[Job]) -> AsyncIterator[str]:
    """A page of jobs without their results, written a job at a time: a
    client that reads slowly holds back one job's text, not the page's."""
    yield "["
    for index, job in enumerate(jobs):
        yield ("," if index else "") + job.to_json(result=False)
    yield "]"


async def _job(host: Host, job_id: str) -> Job | Response:
    if not valid_job_id(job_id):
        return error(str(UnknownJob(job_id)), ErrorType.UNKNOWN_JOB)
    try:
        job: Job = await run_in_threadpool(host.job, job_id)
    except UnknownJob as exc:
        return error(str(exc), ErrorType.UNKNOWN_JOB)
    except JobStoreError as exc:
        return _unavailable(str(exc))
    return job


async def _stream(host: Host, job_id: str) -> AsyncIterator[str]:
    """``progress`` events while the job changes, then one ``end`` event
    with the finished job; a comment every HEARTBEAT_S keeps proxies from
    closing a quiet stream. It ends early when the server shuts down."""
    loop = asyncio.get_running_loop()
    changed = asyncio.Event()

    def wake() -> None:
        loop.call_soon_threadsafe(changed.set)

    unwatch = host.watch_job(job_id, wake)
    last = -1
    try:
        while True:
            changed.clear()
            try:
                job = await run_in_threadpool(host.job, job_id)
            except (UnknownJob, JobStoreError) as exc:  # removed by retention, or the store failed
                failure = {"error": str(exc), "error_type": ErrorType.UNKNOWN_JOB}
                yield _event("error", compact_json(failure))
                return
            if job.finished:
                yield _event("end", job.to_json())
                return
            if job.version != last:
                last = job.version
                yield _event("progress", job.to_json(result=False))
            if host.draining or host.closing:
                failure = {"error": "The server is shutting down.",
                           "error_type": ErrorType.SHUTTING_DOWN}  # fmt: skip
                yield _event("error", compact_json(failure))
                return
            try:
                await asyncio.wait_for(changed.wait(), HEARTBEAT_S)
            except TimeoutError:
                yield ": keep-alive\n\n"
    finally:
        unwatch()


def _event(kind: str, data: str) -> str:
    """One server-sent event; ``data`` is one line of JSON."""
    return f"event: {kind}\ndata: {data}\n\n"


def _unavailable(message: str) -> Response:
    return error(message, ErrorType.JOB_STORE)


def _whole(text: str | None, most: int) -> int | None:
    """``text`` as a whole number from 1 to ``most``, None when absent;
    ValueError when it is anything else."""
    if text is None:
        return None
    if not text.isdigit() or not 1 <= int(text) <= most:
        raise ValueError(text)
    return int(text)
