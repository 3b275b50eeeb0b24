"""The CLI's job commands (README, "CLI"): ``run --job`` with a live
progress bar, ``jobs`` and ``cancel``. They talk to the running server, or
(``--local``) to a one-shot host, through the same client as the others.
rich draws the bar and the table."""

from __future__ import annotations

import sys
from typing import Any, Protocol

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.prompt import Confirm
from rich.table import Table

from plugwarden.console import JOB_STATE_STYLES

__all__ = ["follow_job", "jobs_table", "offer_cancel", "print_job"]

EXIT_INTERRUPTED = 130


class JobClient(Protocol):
    def cancel(self, job_id: str) -> dict[str, Any]: ...

    def follow(self, job_id: str) -> Any: ...


def follow_job(client: JobClient, job: dict[str, Any], console: Console) -> dict[str, Any]:
    """Show ``job``'s progress until it ends; the finished job."""
    job_id = job["id"]
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
            total = progress.get("total")
            done = progress.get("done")
            text = "" if done is None else f"{done:g}"
            text += "" if total is None or done is None else f"/{total:g}"
            bar.update(
                task,
                total=total,
                completed=done or 0,
                done=text,
                message=escape(str(progress.get("message") or job["state"])),
            )
            bar.refresh()
    return job


def offer_cancel(client: JobClient, job_id: str, console: Console) -> int:
    """After Ctrl-C: cancel the job if the user says so (at a terminal),
    else say how to; the exit status for an interrupted command."""
    if sys.stdin.isatty() and Confirm.ask(f"Cancel job {job_id}?", console=console):
        cancelled = client.cancel(job_id)
        console.print(f"Cancel requested; job {job_id} is {cancelled['state']}.")
        return EXIT_INTERRUPTED
    console.print(
        f"Job {job_id} goes on. Follow it with 'plugwarden jobs', cancel it with "
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


def jobs_table(jobs: list[dict[str, Any]]) -> Table:
    table = Table(title="Jobs (newest first)", title_justify="left")
    for column in ("job", "plugin", "tool", "state", "progress", "submitted", "took"):
        table.add_column(column, overflow="fold")
    for job in jobs:
        progress = job.get("progress") or {}
        fraction = progress.get("fraction")
        shown = f"{fraction:.0%}" if fraction is not None else str(progress.get("done", ""))
        took = job.get("duration_s")
        table.add_row(
            job["id"],
            escape(job["plugin"]),
            escape(job["tool"]),
            _state(job["state"]),
            escape(shown),
            escape(str(job.get("submitted_at") or "")),
            "" if took is None else f"{took:.1f} s",
        )
    return table
