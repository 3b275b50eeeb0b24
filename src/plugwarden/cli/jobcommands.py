"""The CLI's job commands (docs/guides/operating.md#cli): ``run --job`` with
a live progress bar, ``jobs`` and ``cancel``. They talk to the running
server, or (``--local``) to a one-shot host, through the same client as the
others. rich draws the bar and the table."""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from typing import Any, Protocol

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.prompt import Confirm
from rich.table import Table

from plugwarden.console import JOB_STATE_STYLES
from plugwarden.jobs.job import JobState

__all__ = ["follow_job", "jobs_table", "offer_cancel", "print_job"]

EXIT_INTERRUPTED = 130


class JobClient(Protocol):
    def cancel(self, job_id: str) -> dict[str, Any]: ...

    def follow(self, job_id: str) -> Any: ...


def follow_job(client: JobClient, job: dict[str, Any], console: Console) -> dict[str, Any]:
    """Show ``job``'s progress until it ends (a bar at a terminal, else a
    plain line at most every PLAIN_EVERY_S); the finished job."""
    job_id = job["id"]
    if not console.is_terminal:
        return _follow_plainly(client, job, console)
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[done]}"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[message]}"),
    )
    # No refresh thread: a Ctrl-C then never lands while that thread holds
    # the console's lock (the interrupted command could hang on it).
    with Progress(*columns, console=console, transient=True, auto_refresh=False) as bar:
        task = bar.add_task(f"{job['plugin']} {job['tool']}", total=None, done="", message="")
        for job in client.follow(job_id):
            progress = job.get("progress") or {}
            bar.update(
                task,
                total=progress.get("total"),
                completed=progress.get("done") or 0,
                done=_progress_text(progress),
                message=escape(str(progress.get("message") or job["state"])),
            )
            bar.refresh()
    return job


PLAIN_EVERY_S = 1.0


def _progress_text(progress: dict[str, Any]) -> str:
    total, done = progress.get("total"), progress.get("done")
    text = "" if done is None else f"{done:g}"
    return text + ("" if total is None or done is None else f"/{total:g}")


def _follow_plainly(client: JobClient, job: dict[str, Any], console: Console) -> dict[str, Any]:
    """Progress as lines, for a log or a pipe: one when it changes, at most
    one every PLAIN_EVERY_S (the last before the end is always shown)."""
    shown, last, current = "", 0.0, job
    for current in client.follow(job["id"]):
        progress = current.get("progress") or {}
        said = progress.get("message") or current["state"]
        line = f"{job['plugin']} {job['tool']}: {_progress_text(progress)} {said}"
        now = time.monotonic()
        ended = current["state"] not in JobState.LIVE
        if line != shown and (now - last >= PLAIN_EVERY_S or ended):
            console.print(escape(line.strip()), highlight=False, soft_wrap=True)
            shown, last = line, now
    return current


def offer_cancel(client: JobClient, job_id: str, console: Console) -> int:
    """After Ctrl-C: cancel the job if the user says so (at a terminal),
    else say how to; the exit status for an interrupted command."""
    if sys.stdin.isatty() and Confirm.ask(f"Cancel job {job_id}?", console=console):
        cancelled = client.cancel(job_id)
        console.print(f"Cancel requested; job {job_id} is {cancelled['state']}.")
        return EXIT_INTERRUPTED
    console.print(
        f"Job {job_id} goes on. Follow it with 'plugwarden jobs watch {job_id}', cancel it with "
        f"'plugwarden cancel {job_id}'.",
        soft_wrap=True,
    )
    return EXIT_INTERRUPTED


def _state(state: str) -> str:
    style = JOB_STATE_STYLES.get(state, "")
    return f"[{style}]{escape(state)}[/{style}]" if style else escape(state)


def print_job(job: dict[str, Any], console: Console) -> None:
    """A finished (or any) job: its state, then its result or error."""
    record = job.get("record") or {}
    console.print(f"job {job['id']}: {_state(job['state'])}", highlight=False)
    if record.get("ok"):
        console.print_json(data=record.get("result"))
    elif record:
        console.print(
            f"[red]{escape(str(record.get('error_type')))}:[/red] "
            f"{escape(str(record.get('error')))}",
            highlight=False,
        )


SHORT_ID = 12  # a job's id in the table: its start (cancel and jobs watch take it)


def jobs_table(jobs: list[dict[str, Any]]) -> Table:
    """Jobs at 80 columns: an id's start, the time submitted (UTC) without
    its date when it is today's; --json has every field whole."""
    table = Table(
        title="Jobs (newest first, times UTC)",
        title_justify="left",
        box=None,  # columns two spaces apart: the room goes to the fields
        pad_edge=False,
        header_style="bold",
    )
    # One line a job within 80 columns: the fixed-width fields whole, a long
    # plugin or tool name cut (…), never a word broken over two lines.
    widths = {"job": (SHORT_ID, SHORT_ID), "plugin": (6, 12), "tool": (4, 10),
              "state": (9, 9), "done": (4, 4), "submitted": (11, 11), "took": (7, 8)}  # fmt: skip
    for column, (least, most) in widths.items():
        table.add_column(column, overflow="ellipsis", no_wrap=True, min_width=least, max_width=most)
    for job in jobs:
        progress = job.get("progress") or {}
        fraction = progress.get("fraction")
        shown = f"{fraction:.0%}" if fraction is not None else str(progress.get("done", ""))
        took = job.get("duration_s")
        table.add_row(
            escape(job["id"][:SHORT_ID]),
            escape(job["plugin"]),
            escape(job["tool"]),
            _state(job["state"]),
            escape(shown),
            escape(_when(job.get("submitted_at"))),
            "" if took is None else f"{took:.1f} s",
        )
    return table


def _when(stamp: str | None) -> str:
    """``2026-12-07T02:03:50.489Z`` as ``02:03:50`` today, else ``12-07 02:03``."""
    if not stamp or len(stamp) < 19:
        return stamp or ""
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    return stamp[11:19] if stamp.startswith(today) else f"{stamp[5:10]} {stamp[11:16]}"
