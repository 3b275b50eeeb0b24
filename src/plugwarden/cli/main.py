"""The ``plugwarden`` command (docs/guides/operating.md#cli).

argparse (standard library) parses; rich draws tables and colours. Every
command works with no config file; every command that prints data takes
``--json``; the exit status is 0 when all is well, 1 when a plugin is not,
2 for a usage or config error.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

from plugwarden import __version__
from plugwarden.config import URL_ENV, HostConfig
from plugwarden.console import EXIT_USAGE
from plugwarden.exceptions import PlugwardenError
from plugwarden.jobs.job import JobState

__all__ = ["main", "parser"]


REMOTE_COMMANDS = (
    "list", "health", "run", "restart", "jobs", "cancel", "install", "upgrade", "rollback",
    "uninstall",
)  # fmt: skip


def parser() -> argparse.ArgumentParser:
    """The `plugwarden` command line (docs/reference/cli.md is generated from it)."""
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
        "--file",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="send a file's bytes as argument NAME (or as the part an --args value refers "
        'to as {"$blob": "NAME", "dtype": ..., "shape": [...]}); repeatable',
    )
    run.add_argument(
        "--job",
        action="store_true",
        help="run it as a job: show its progress until it ends (Ctrl-C offers to cancel)",
    )
    restart = command("restart", "Restart a plugin of the running server: its pipeline again.")
    restart.add_argument("name")
    jobs = command(
        "jobs", "List the jobs of the running server, newest first; 'jobs watch ID' follows one."
    )
    jobs.add_argument("watch", nargs="?", metavar="watch", help="follow job ID to its end")
    jobs.add_argument("id", nargs="?", metavar="ID", help="the job's id, or its start")
    jobs.add_argument("--plugin", help="only this plugin's jobs")
    jobs.add_argument("--state", choices=JobState.ALL, help="only jobs in this state")
    jobs.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    command("cancel", "Cancel a job of the running server.").add_argument("id")
    install = command(
        "install", "Install a plugin into an environment of its own on the running server."
    )
    install.add_argument(
        "spec",
        nargs="+",
        help="a requirement, a wheel or a project directory (several: one plugin)",
    )
    upgrade = command(
        "upgrade", "Upgrade a plugin installed with 'install'; rolled back by itself if it fails."
    )
    upgrade.add_argument("name")
    upgrade.add_argument("spec", nargs="*", help="what to upgrade to (default: what it came from)")
    command("rollback", "Switch a plugin back to its previous version.").add_argument("name")
    command("uninstall", "Stop a plugin installed with 'install' and remove it.").add_argument(
        "name"
    )
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
    args = parser().parse_args(argv)
    if args.command != "serve":  # serve sets up its own logging, from its config
        logging.basicConfig(
            level=logging.INFO if args.verbose else logging.ERROR,
            format="%(levelname)s %(name)s: %(message)s",
        )
    try:
        config = HostConfig.load(args.config)
        if args.command == "serve":
            from plugwarden.web.launch import serve

            return serve(config, host=args.host, port=args.port)
        from plugwarden.cli.commands import run_command

        return run_command(args, config)
    except (PlugwardenError, ValueError) as exc:
        from rich.console import Console
        from rich.markup import escape

        errors = Console(stderr=True, soft_wrap=True)
        errors.print(f"[red]plugwarden: error:[/red] {escape(str(exc))}", highlight=False)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
