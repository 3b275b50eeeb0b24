"""Shared test helpers: plugin sources, waiting on conditions (plugwarden.testing's
wait_for), running the command."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys

import psutil

from plugwarden.testing import ECHO_PLUGIN, plugin_source, wait_for

ECHO = ECHO_PLUGIN

__all__ = [
    "ECHO",
    "WHO_AM_I",
    "free_port",
    "gone",
    "identity",
    "plugin_source",
    "plugwarden_command",
    "process_named",
    "wait_for",
]

# A run() body returning which process it runs in, as identity() names a
# pid the host lists: a worker in a PID namespace of its own knows no pid of
# the host's, but its namespace and its pid there are the same seen from
# either side.
WHO_AM_I = "import os\nreturn os.readlink('/proc/self/ns/pid') + ':' + os.readlink('/proc/self')"


def process_named(ident: str) -> int | None:
    """The pid the host knows the process by whose identity() is ``ident``."""
    for pid in psutil.pids():
        try:
            if identity(pid) == ident:
                return pid
        except OSError:
            continue
    return None


def identity(pid: int) -> str:
    """What WHO_AM_I returns in the process the host knows as ``pid``."""
    namespace = os.readlink(f"/proc/{pid}/ns/pid")
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("NSpid:"):
                return f"{namespace}:{line.split()[-1]}"
    return f"{namespace}:{pid}"


pytest_plugins = ["pytester"]  # the author kit is tested as an author runs it

# The Ray backend's tests need Ray and a network namespace of their own: tox -e ray.
# Schemathesis against a live server: tox -e api.
collect_ignore = [
    folder
    for folder, needs in (("ray", "ray"), ("api", "schemathesis"))
    if not importlib.util.find_spec(needs)
]


def plugwarden_command(
    *args: str, cwd: object, timeout_s: float = 300
) -> subprocess.CompletedProcess[str]:
    """``python -m plugwarden ARGS`` in ``cwd``, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "plugwarden", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def gone(pid: int) -> bool:
    """The process no longer runs (a zombie counts as gone: it runs no code)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def pytest_configure(config):
    """Hosts made outside the fixtures keep their jobs database out of the
    user's state directory: a temporary one for the session."""
    import os
    import tempfile

    config._plugwarden_state = tempfile.TemporaryDirectory(prefix="plugwarden-state-")
    config._plugwarden_old_state = os.environ.get("XDG_STATE_HOME")
    os.environ["XDG_STATE_HOME"] = config._plugwarden_state.name


def pytest_unconfigure(config):
    import os

    old = getattr(config, "_plugwarden_old_state", None)
    if old is None:
        os.environ.pop("XDG_STATE_HOME", None)
    else:
        os.environ["XDG_STATE_HOME"] = old
    state = getattr(config, "_plugwarden_state", None)
    if state is not None:
        state.cleanup()


# Tests that drive a system tool (Chromium, promtool, Prometheus) skip where it
# is missing, saying '.ci/run installs it'. Loudly: in the summary always,
# and under CI=true such a skip fails the run (CI must have them all).
TOOL_SKIP = ".ci/run installs it"
_tool_skips: list[str] = []


def pytest_runtest_logreport(report):
    if report.skipped and isinstance(report.longrepr, tuple) and TOOL_SKIP in report.longrepr[2]:
        _tool_skips.append(f"{report.nodeid}: {report.longrepr[2]}")


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if _tool_skips:
        terminalreporter.section("SYSTEM TOOLS MISSING: these tests did not run", red=True)
        for line in _tool_skips:
            terminalreporter.line(line, red=True)


def pytest_sessionfinish(session, exitstatus):
    import os

    if _tool_skips and os.environ.get("CI") == "true" and exitstatus == 0:
        session.exitstatus = 1
