"""The client commands of ``plugwarden`` (docs/guides/operating.md#cli):
everything but ``serve``, which :mod:`plugwarden.cli.main` starts without
importing these (rich, httpx: ~100 ms a server does not need at start).

rich draws tables and colours; every command that prints data takes
``--json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from plugwarden.cli.jobcommands import follow_job, jobs_table, offer_cancel, print_job
from plugwarden.cli.recordview import print_record
from plugwarden.cli.remote import LocalHost, RemoteHost, server_url
from plugwarden.config import HostConfig
from plugwarden.console import EXIT_NOT_WELL, EXIT_OK, STATE_STYLES, all_well, well
from plugwarden.exceptions import UnknownJob
from plugwarden.jobs.job import JobState

if TYPE_CHECKING:
    from plugwarden.environments.project import BuiltProject

__all__ = ["run_command"]


def run_command(args: argparse.Namespace, config: HostConfig) -> int:
    """Run the client command ``args.command``; its exit status."""
    return _COMMANDS[args.command](args, config, Console(soft_wrap=False))


def _emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def _plugins(args: argparse.Namespace, config: HostConfig) -> RemoteHost | LocalHost:
    """Where the command's plugins are: the running server, or (--local) here."""
    if args.local:
        return LocalHost(config)
    return RemoteHost(server_url(config, args.url), args.token or config.server.token)


def _state(record: dict[str, Any]) -> str:
    style = STATE_STYLES.get(str(record.get("state")), "")
    return f"[{style}]{escape(str(record.get('state')))}[/{style}]"


def _status_table(records: list[dict[str, Any]], title: str = "Plugins") -> Table:
    """One line of reason each (its first sentence): the whole reasons of
    the plugins that are not well follow the table (:func:`_reasons`), so an
    install command is never broken mid-word in a narrow column."""
    table = Table(title=title, title_justify="left")
    for column in ("plugin", "state", "version", "calls ok/err", "reason"):
        table.add_column(column, overflow="ellipsis", no_wrap=column != "reason")
    for record in sorted(records, key=lambda r: str(r.get("name"))):
        health = "" if record.get("healthy", True) else " [red](unhealthy)[/red]"
        table.add_row(
            escape(str(record.get("name"))),
            _state(record) + health,
            escape(str(record.get("version", ""))),
            f"{record.get('success_count', 0)}/{record.get('error_count', 0)}",
            escape(_first_sentence(str(record.get("reason", "")))),  # quotes [plugins.x]
        )
    return table


def _first_sentence(reason: str) -> str:
    head, _, rest = reason.partition(". ")
    return f"{head}. (more below)" if rest else head


def _reasons(records: list[dict[str, Any]], console: Console) -> None:
    """The whole reason of each plugin that is not well, wrapped at spaces."""
    for record in sorted(records, key=lambda r: str(r.get("name"))):
        reason = str(record.get("reason", ""))
        if not well(record) and reason != _first_sentence(reason):
            console.print(f"\n[bold]{escape(str(record.get('name')))}[/bold]: {escape(reason)}")


def _print_rows(
    rows: list[dict[str, Any]],
    as_json: bool,
    console: Console,
    table: Callable[[list[dict[str, Any]]], Table],
    empty: str,
) -> None:
    """``rows`` as JSON, as ``table`` draws them, or ``empty`` when there are none."""
    if as_json:
        _emit_json(rows)
    elif rows:
        console.print(table(rows))
    else:
        console.print(empty)


def _cmd_list(args: argparse.Namespace, config: HostConfig, console: Console) -> int:
    with _plugins(args, config) as plugins:
        records = plugins.records()
    empty = "No plugins installed (entry point group 'plugwarden.plugins')."
    _print_rows(records, args.json, console, _status_table, empty)
    if not args.json:
        _reasons(records, console)
    return EXIT_OK if all_well(records) else EXIT_NOT_WELL


def _show(record: dict[str, Any], console: Console, as_json: bool) -> int:
    if as_json:
        _emit_json(record)
    else:
        print_record(record, console)
    return EXIT_OK if well(record) else EXIT_NOT_WELL


def _cmd_health(args: argparse.Namespace, config: HostConfig, console: Console) -> int:
    with _plugins(args, config) as plugins:
        return _show(plugins.record(args.name), console, args.json)


def _cmd_restart(args: argparse.Namespace, config: HostConfig, console: Console) -> int:
    with _plugins(args, config) as plugins:
        return _show(plugins.restart(args.name), console, args.json)


def _cmd_run(args: argparse.Namespace, config: HostConfig, console: Console) -> int:
    tool_args = _json_object(args.args, "--args")
    files = _files(args.file, tool_args)
    if args.job:
        return _run_job(args, config, console, tool_args, files)
    with _plugins(args, config) as plugins:
        result = plugins.run(args.name, args.tool, tool_args, files)
    if args.json:
        _emit_json(result)
    elif result.get("ok"):
        console.print_json(json.dumps(_described(result.get("result"))))
    else:
        console.print(
            f"[red]{escape(str(result.get('error_type')))}:[/red] "
            f"{escape(str(result.get('error')))}",
            highlight=False,
        )
    return EXIT_OK if result.get("ok") else EXIT_NOT_WELL


def _run_job(
    args: argparse.Namespace,
    config: HostConfig,
    console: Console,
    tool_args: dict[str, Any],
    files: dict[str, bytes],
) -> int:
    with _plugins(args, config) as plugins:
        job = plugins.submit(args.name, args.tool, tool_args, files)
        return _to_its_end(plugins, job, args, console)


def _files(given: list[str], tool_args: dict[str, Any]) -> dict[str, bytes]:
    """``--file NAME=PATH`` values read; an argument NAME that --args does
    not refer to as ``{"$blob": NAME}`` anywhere is added as one."""
    files: dict[str, bytes] = {}
    for spec in given:
        name, equals, path = spec.partition("=")
        if not equals or not name or not path:
            raise ValueError(f"--file takes NAME=PATH, got {spec!r}")
        try:
            files[name] = Path(path).expanduser().read_bytes()
        except OSError as exc:
            raise ValueError(f"--file {name}: cannot read {path}: {exc.strerror}") from None
        if f'"$blob": {json.dumps(name)}' not in json.dumps(tool_args):
            tool_args[name] = {"$blob": name}
    return files


def _described(value: Any) -> Any:
    """A result for the terminal: binary values (base64) said, not printed."""
    if isinstance(value, dict):
        if "$base64" in value:
            size = len(value["$base64"]) * 3 // 4
            shape = f", {value.get('dtype')} {value.get('shape')}" if "dtype" in value else ""
            return f"<{size} bytes{shape}>"
        return {key: _described(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_described(item) for item in value]
    return value


def _to_its_end(
    plugins: RemoteHost | LocalHost,
    job: dict[str, Any],
    args: argparse.Namespace,
    console: Console,
    said: str = "submitted",
) -> int:
    """Follow ``job`` with a progress bar, then print how it ended."""
    try:
        if not args.json:
            console.print(f"job {job['id']} {said}", highlight=False)
        ended = follow_job(plugins, job, Console(stderr=True) if args.json else console)
    except KeyboardInterrupt:
        return offer_cancel(plugins, job["id"], console)
    if args.json:
        _emit_json(ended)
    else:
        print_job(ended, console)
    return EXIT_OK if ended["state"] == JobState.SUCCEEDED else EXIT_NOT_WELL


def _cmd_jobs(args: argparse.Namespace, config: HostConfig, console: Console) -> int:
    if not 1 <= args.limit <= 1000:
        raise ValueError("--limit must be from 1 to 1000")
    with _plugins(args, config) as plugins:
        if args.watch is not None:  # jobs watch ID: follow it again, to its end
            if args.watch != "watch" or not args.id:
                raise ValueError("jobs takes 'watch ID' (a job's id or its start), or nothing")
            job = plugins.job(_job_id(plugins, args.id))
            return _to_its_end(plugins, job, args, console, f"is {job['state']}")
        jobs = plugins.jobs(args.plugin, args.state, args.limit)
    _print_rows(jobs, args.json, console, jobs_table, "No jobs.")
    return EXIT_OK


def _cmd_cancel(args: argparse.Namespace, config: HostConfig, console: Console) -> int:
    with _plugins(args, config) as plugins:
        job = plugins.cancel(_job_id(plugins, args.id))
    if args.json:
        _emit_json(job)
    else:
        console.print(
            f"job {job['id']}: {job['state']}"
            + (" (cancel requested)" if job["state"] in JobState.LIVE else ""),
            highlight=False,
        )
    return EXIT_OK


JOB_ID_LENGTH = 32  # a job's id: a uuid's hex


def _job_id(plugins: Any, given: str) -> str:
    """The job ``given`` names: its whole id, or a prefix of exactly one
    job's (the newest 1000 are looked at), as a terminal shows ids cut."""
    if len(given) >= JOB_ID_LENGTH:
        return given
    matches = [job["id"] for job in plugins.jobs(None, None, 1000) if job["id"].startswith(given)]
    if len(matches) > 1:
        shown = ", ".join(match[: len(given) + 4] for match in matches[:5])
        raise ValueError(f"Job id {given!r} is the start of {len(matches)} jobs' ({shown}...): "
                         "give more of it.")  # fmt: skip
    if not matches:
        raise UnknownJob(given)
    return str(matches[0])


def _cmd_change(args: argparse.Namespace, config: HostConfig, console: Console) -> int:
    """install, upgrade, rollback, uninstall: a job of the server's, followed
    to its end. A project directory is built into a wheel here, as the user
    running the command (the server builds nothing from source unless
    allowed), with what it asks of its environment."""
    specs: list[str] = []
    overrides: list[str] = []
    for spec in getattr(args, "spec", []):
        if Path(spec).is_dir():
            built = _build(spec, Console(stderr=True) if args.json else console)
            specs.extend(built.specs)
            overrides.extend(built.overrides)
        else:
            specs.append(str(Path(spec).resolve()) if Path(spec).is_file() else spec)
    with _plugins(args, config) as plugins:
        job = plugins.change(args.command, getattr(args, "name", None), specs, overrides)
        return _to_its_end(plugins, job, args, console)


def _build(directory: str, console: Console) -> BuiltProject:
    from plugwarden.environments.project import build_project
    from plugwarden.environments.uvtool import Uv

    out = Path(tempfile.mkdtemp(prefix="plugwarden-build-"))
    out.chmod(0o755)  # the server's job reads the wheel, perhaps as another user
    console.print(f"building {escape(directory)} into a wheel", highlight=False)
    return build_project(directory, out, Uv(), lambda phase, message: None)


def _cmd_check(args: argparse.Namespace, config: HostConfig, console: Console) -> int:
    from plugwarden.cli.check import check

    examples = _json_object(args.examples, "--examples")
    return check(args.target, console, as_json=args.json, level=args.level, examples=examples)


def _cmd_new(args: argparse.Namespace, config: HostConfig, console: Console) -> int:
    from plugwarden.cli.scaffold import new_plugin

    target = new_plugin(args.name, Path(args.dir) if args.dir else None)
    console.print(
        escape(
            f"Wrote plugin {args.name!r} in {target}/. Next: cd {target} && pip install -e "
            "'.[test]' && pytest (and plugwarden check .)"
        ),
        highlight=False,
    )
    return EXIT_OK


def _json_object(text: str, flag: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{flag} is not valid JSON: {exc}") from exc
    except RecursionError:
        raise ValueError(f"{flag} nests too deeply") from None
    if not isinstance(value, dict):
        raise ValueError(f'{flag} must be a JSON object, like \'{{"text": "hi"}}\'')
    return value


def _cmd_doctor(args: argparse.Namespace, config: HostConfig, console: Console) -> int:
    from plugwarden.cli.doctor import doctor

    return doctor(config, console, as_json=args.json)


_COMMANDS: dict[str, Callable[[argparse.Namespace, HostConfig, Console], int]] = {
    "list": _cmd_list,
    "health": _cmd_health,
    "run": _cmd_run,
    "restart": _cmd_restart,
    "jobs": _cmd_jobs,
    "cancel": _cmd_cancel,
    "install": _cmd_change,
    "upgrade": _cmd_change,
    "rollback": _cmd_change,
    "uninstall": _cmd_change,
    "doctor": _cmd_doctor,
    "check": _cmd_check,
    "new": _cmd_new,
}
