"""The ``plugwarden`` command (SPEC section 8).

argparse (standard library) parses; rich draws tables and colours. Every
command works with no config file; every command that prints data takes
``--json``; the exit status is 0 when all is well, 1 when a plugin is not,
2 for a usage or config error.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from plugwarden import __version__
from plugwarden.config import HostConfig
from plugwarden.console import STATE_STYLES, all_well, well
from plugwarden.core.jobs import JobState
from plugwarden.exceptions import PlugwardenError
from plugwarden.jobs_cli import follow_job, jobs_table, offer_cancel, print_job
from plugwarden.record import print_record
from plugwarden.remote import URL_ENV, LocalHost, RemoteHost, server_url

__all__ = ["main"]

EXIT_OK, EXIT_NOT_WELL, EXIT_USAGE = 0, 1, 2


REMOTE_COMMANDS = ("list", "health", "run", "restart", "jobs", "cancel")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="plugwarden", description="A crash-proof plugin host for Python."
    )
    parser.add_argument("--version", action="version", version=f"plugwarden {__version__}")
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="log what the host and the plugins do (stderr); default: errors only",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str, *, json_flag: bool = True) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument(
            "--config",
            metavar="PATH",
            help="host config (TOML); default: plugwarden.toml here, else built-in defaults",
        )
        if json_flag:
            sub.add_argument("--json", action="store_true", help="print JSON for machines")
        if name in REMOTE_COMMANDS:
            sub.add_argument(
                "--url",
                help=f"the running server (default: ${URL_ENV}, else the config's [server])",
            )
            sub.add_argument(
                "--token", help="bearer token (default: $PLUGWARDEN_TOKEN, else the config's)"
            )
            sub.add_argument(
                "--local",
                action="store_true",
                help="no server: start a one-shot host in this process instead",
            )
        return sub

    serve = command(
        "serve", "Serve health, metrics and the status page over HTTP.", json_flag=False
    )
    serve.add_argument("--host", help="address to bind (default from config: 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind (default from config: 8765)")
    command("list", "List every plugin of the running server with its state and reason.")
    command("health", "Show one plugin's whole record, with its history.").add_argument("name")
    run = command("run", "Run a tool of a plugin on the running server.")
    run.add_argument("name")
    run.add_argument("tool")
    run.add_argument(
        "--args",
        default="{}",
        metavar="JSON",
        help="the tool's arguments as a JSON object (default {})",
    )
    run.add_argument(
        "--job",
        action="store_true",
        help="run it as a job: show its progress until it ends (Ctrl-C offers to cancel)",
    )
    restart = command("restart", "Restart a plugin of the running server: its pipeline again.")
    restart.add_argument("name")
    jobs = command("jobs", "List the jobs of the running server, newest first.")
    jobs.add_argument("--plugin", help="only this plugin's jobs")
    jobs.add_argument("--state", choices=JobState.ALL, help="only jobs in this state")
    jobs.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    command("cancel", "Cancel a job of the running server.").add_argument("id")
    command("doctor", "Explain the GPU, driver, CUDA, containment and every plugin's state.")
    check = command(
        "check", "Check a plugin against the contract: a wheel, sdist, project or installed name."
    )
    check.add_argument(
        "target", nargs="?", default=".", help="wheel, sdist, project directory or plugin name"
    )
    check.add_argument("--level", type=int, default=1, help="conformance level to enforce (1)")
    check.add_argument(
        "--examples",
        default="{}",
        metavar="JSON",
        help="each tool's example args as a JSON object of tool -> args",
    )
    new = command("new", "Write a new plugin distribution that passes the checks.", json_flag=False)
    new.add_argument("name")
    new.add_argument("--dir", help="where to write it (default: ./NAME)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command != "serve":  # serve sets up its own logging, from its config
        logging.basicConfig(
            level=logging.INFO if args.verbose else logging.ERROR,
            format="%(levelname)s %(name)s: %(message)s",
        )
    console = Console(soft_wrap=False)
    errors = Console(stderr=True, soft_wrap=True)
    try:
        config = HostConfig.load(args.config)
        handler: Callable[[argparse.Namespace, HostConfig, Console], int] = _COMMANDS[args.command]
        return handler(args, config, console)
    except (PlugwardenError, ValueError) as exc:
        errors.print(f"[red]plugwarden: error:[/red] {escape(str(exc))}", highlight=False)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


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
    table = Table(title=title, title_justify="left")
    for column in ("plugin", "state", "version", "calls ok/err", "reason"):
        table.add_column(column, overflow="fold")
    for record in sorted(records, key=lambda r: str(r.get("name"))):
        health = "" if record.get("healthy", True) else " [red](unhealthy)[/red]"
        table.add_row(
            escape(str(record.get("name"))),
            _state(record) + health,
            escape(str(record.get("version", ""))),
            f"{record.get('success_count', 0)}/{record.get('error_count', 0)}",
            escape(str(record.get("reason", ""))),  # reasons quote config keys like [plugins.x]
        )
    return table


def _cmd_list(args: argparse.Namespace, config: HostConfig, console: Console) -> int:
    with _plugins(args, config) as plugins:
        records = plugins.records()
    if args.json:
        _emit_json(records)
    elif records:
        console.print(_status_table(records))
    else:
        console.print("No plugins installed (entry point group 'plugwarden.plugins').")
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
    if args.job:
        return _run_job(args, config, console, tool_args)
    with _plugins(args, config) as plugins:
        result = plugins.run(args.name, args.tool, tool_args)
    if args.json:
        _emit_json(result)
    elif result.get("ok"):
        console.print_json(json.dumps(result.get("result")))
    else:
        console.print(
            f"[red]{escape(str(result.get('error_type')))}:[/red] "
            f"{escape(str(result.get('error')))}",
            highlight=False,
        )
    return EXIT_OK if result.get("ok") else EXIT_NOT_WELL


def _run_job(
    args: argparse.Namespace, config: HostConfig, console: Console, tool_args: dict[str, Any]
) -> int:
    with _plugins(args, config) as plugins:
        job = plugins.submit(args.name, args.tool, tool_args)
        try:
            if not args.json:
                console.print(f"job {job['id']} submitted", highlight=False)
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
        jobs = plugins.jobs(args.plugin, args.state, args.limit)
    if args.json:
        _emit_json(jobs)
    elif jobs:
        console.print(jobs_table(jobs))
    else:
        console.print("No jobs.")
    return EXIT_OK


def _cmd_cancel(args: argparse.Namespace, config: HostConfig, console: Console) -> int:
    with _plugins(args, config) as plugins:
        job = plugins.cancel(args.id)
    if args.json:
        _emit_json(job)
    else:
        console.print(
            f"job {job['id']}: {job['state']}"
            + (" (cancel requested)" if job["state"] in JobState.LIVE else ""),
            highlight=False,
        )
    return EXIT_OK


def _cmd_check(args: argparse.Namespace, config: HostConfig, console: Console) -> int:
    from plugwarden.check import check

    examples = _json_object(args.examples, "--examples")
    return check(args.target, console, as_json=args.json, level=args.level, examples=examples)


def _cmd_new(args: argparse.Namespace, config: HostConfig, console: Console) -> int:
    from plugwarden.scaffold import new_plugin

    target = new_plugin(args.name, Path(args.dir) if args.dir else None)
    console.print(
        escape(
            f"Wrote plugin {args.name!r} in {target}/. Next: cd {target} && pip install "
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
    if not isinstance(value, dict):
        raise ValueError(f'{flag} must be a JSON object, like \'{{"text": "hi"}}\'')
    return value


def _cmd_serve(args: argparse.Namespace, config: HostConfig, console: Console) -> int:
    from plugwarden.web.server import serve

    return serve(config, host=args.host, port=args.port)


def _cmd_doctor(args: argparse.Namespace, config: HostConfig, console: Console) -> int:
    from plugwarden.doctor import doctor

    return doctor(config, console, as_json=args.json)


_COMMANDS: dict[str, Callable[[argparse.Namespace, HostConfig, Console], int]] = {
    "serve": _cmd_serve,
    "list": _cmd_list,
    "health": _cmd_health,
    "run": _cmd_run,
    "restart": _cmd_restart,
    "jobs": _cmd_jobs,
    "cancel": _cmd_cancel,
    "doctor": _cmd_doctor,
    "check": _cmd_check,
    "new": _cmd_new,
}
