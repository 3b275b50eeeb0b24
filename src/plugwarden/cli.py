"""The ``plugwarden`` command (SPEC section 8).

argparse (standard library) parses; rich draws tables and colours. Every
command works with no config file; every command that prints data takes
``--json``; the exit status is 0 when all is well, 1 when a plugin is not,
2 for a usage or config error.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from plugwarden.config import HostConfig
from plugwarden.console import STATE_STYLES, all_well
from plugwarden.core.host import Host
from plugwarden.core.registry import PluginStatus
from plugwarden.exceptions import PlugwardenError

__all__ = ["main"]

EXIT_OK, EXIT_NOT_WELL, EXIT_USAGE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="plugwarden", description="A crash-proof plugin host for Python."
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
        return sub

    serve = command(
        "serve", "Serve health, metrics and the status page over HTTP.", json_flag=False
    )
    serve.add_argument("--host", help="address to bind (default from config: 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind (default from config: 8765)")
    command("list", "List every plugin with its state and reason.")
    command("health", "Show one plugin's health record.").add_argument("name")
    run = command("run", "Run a tool of a plugin.")
    run.add_argument("name")
    run.add_argument("tool")
    run.add_argument(
        "--args",
        default="{}",
        metavar="JSON",
        help="the tool's arguments as a JSON object (default {})",
    )
    command("restart", "Restart a plugin: rerun its whole pipeline.").add_argument("name")
    command("doctor", "Explain the GPU, driver, CUDA and every plugin's state.")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
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


def _status_table(statuses: list[PluginStatus], title: str = "Plugins") -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("plugin", "state", "version", "calls ok/err", "reason"):
        table.add_column(column, overflow="fold")
    for status in sorted(statuses, key=lambda s: s.name):
        style = STATE_STYLES.get(status.state, "")
        metrics = status.metrics
        table.add_row(
            escape(status.name),
            f"[{style}]{status.state.value}[/{style}]",
            escape(status.info.version),
            f"{metrics['success_count']}/{metrics['error_count']}",
            escape(status.reason),  # reasons quote config keys like [plugins.x]
        )
    return table


def _cmd_list(args: argparse.Namespace, config: HostConfig, console: Console) -> int:
    with Host(config) as host:
        statuses = host.statuses()
    if args.json:
        _emit_json([s.to_dict(history=False) for s in statuses])
    elif statuses:
        console.print(_status_table(statuses))
    else:
        console.print("No plugins installed (entry point group 'plugwarden.plugins').")
    return EXIT_OK if all_well(statuses, config) else EXIT_NOT_WELL


def _print_status(status: PluginStatus, console: Console, as_json: bool) -> int:
    if as_json:
        _emit_json(status.to_dict())
    else:
        console.print(_status_table([status], title=f"Plugin {status.name}"))
    return EXIT_OK if status.available else EXIT_NOT_WELL


def _cmd_health(args: argparse.Namespace, config: HostConfig, console: Console) -> int:
    with Host(config) as host:
        return _print_status(host.status(args.name), console, args.json)


def _cmd_restart(args: argparse.Namespace, config: HostConfig, console: Console) -> int:
    with Host(config) as host:
        return _print_status(host.restart(args.name), console, args.json)


def _cmd_run(args: argparse.Namespace, config: HostConfig, console: Console) -> int:
    try:
        tool_args = json.loads(args.args)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--args is not valid JSON: {exc}") from exc
    if not isinstance(tool_args, dict):
        raise ValueError('--args must be a JSON object, like \'{"text": "hi"}\'')
    with Host(config) as host:
        host.status(args.name)  # an unknown name is a usage error, not a failed call
        result = host.call(args.name, args.tool, tool_args)
    if args.json:
        _emit_json(result.to_dict())
    elif result.ok:
        console.print_json(json.dumps(result.result))
    else:
        console.print(
            f"[red]{escape(str(result.error_type))}:[/red] {escape(str(result.error))}",
            highlight=False,
        )
    return EXIT_OK if result.ok else EXIT_NOT_WELL


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
    "doctor": _cmd_doctor,
}
