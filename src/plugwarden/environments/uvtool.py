"""Running uv (the ``uv`` package from the index, ``plugwarden[envs]``):
creating an environment, building a project into a wheel, installing into
an environment, each with its phases told as they happen and its failure
answered with uv's own reason.

uv runs with the host's environment less ``PLUGWARDEN_*`` (a source build
runs a package's code). uv does not read pip's settings; where uv's own
(``UV_INDEX_URL``...) are not set, pip's are passed on: its config files
and ``PIP_*`` variables' ``index-url``, ``extra-index-url``, ``find-links``
and ``constraint``, so a plugin's environment draws from the same indexes
as ``pip install`` would (and, with extra indexes, picks versions as pip
does: the best across all of them, uv's ``unsafe-best-match``).
"""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence

from plugwarden.exceptions import InstallFailed
from plugwarden.plugin.environment import RESERVED_PREFIX

__all__ = ["Phase", "Uv", "find_uv"]

# How an install tells how far it got: (phase, message).
Phase = Callable[[str, str], None]

# pip's setting -> uv's variable, and how uv separates several values.
PIP_TO_UV = {
    "index-url": ("UV_INDEX_URL", " "),
    "extra-index-url": ("UV_EXTRA_INDEX_URL", " "),
    "find-links": ("UV_FIND_LINKS", ","),
    "constraint": ("UV_CONSTRAINT", " "),
}
PIP_FILES = ("/etc/xdg/pip/pip.conf", "/etc/pip.conf", "~/.pip/pip.conf", "~/.config/pip/pip.conf")
# uv's summary lines, and the phase that follows each.
NEXT_PHASE = {"Resolved": "downloading", "Prepared": "installing"}
REASON_LINES = 12  # of uv's error output, in a reason


def find_uv() -> str:
    """The uv program; raises :class:`InstallFailed` with the fix."""
    try:
        from uv import find_uv_bin
    except ImportError:
        found = shutil.which("uv")
        if found:
            return found
        raise InstallFailed(
            "Installing a plugin into an environment of its own needs uv: "
            "pip install 'plugwarden[envs]' (or put uv on PATH)."
        ) from None
    return str(find_uv_bin())


def pip_settings(environ: Mapping[str, str]) -> dict[str, list[str]]:
    """pip's index settings as pip reads them: its config files in order
    (``[global]`` then ``[install]``), then ``PIP_*`` variables."""
    files = [os.path.expanduser(path) for path in PIP_FILES]
    if environ.get("PIP_CONFIG_FILE"):
        files.append(environ["PIP_CONFIG_FILE"])
    found: dict[str, list[str]] = {}
    for path in files:
        parser = configparser.ConfigParser(interpolation=None)
        try:
            parser.read(path)
        except configparser.Error:
            continue  # pip would refuse it too; uv goes without it
        for section in ("global", "install"):
            for key in PIP_TO_UV:
                if parser.has_option(section, key):
                    found[key] = parser.get(section, key).split()
    for key in PIP_TO_UV:
        variable = "PIP_" + key.upper().replace("-", "_")
        if environ.get(variable):
            found[key] = environ[variable].split()
    return found


def uv_environment(environ: Mapping[str, str]) -> dict[str, str]:
    env = {key: value for key, value in environ.items() if not key.startswith(RESERVED_PREFIX)}
    for key, values in pip_settings(environ).items():
        variable, separator = PIP_TO_UV[key]
        if variable not in env and values:
            env[variable] = separator.join(values)
            if key == "extra-index-url":  # pip's way: the best version across every index
                env.setdefault("UV_INDEX_STRATEGY", "unsafe-best-match")
    env.setdefault("UV_NO_PROGRESS", "1")
    return env


class Uv:
    """uv, run with ``environ`` (default: this process's)."""

    def __init__(self, program: str | None = None, environ: Mapping[str, str] | None = None):
        self.program = program or find_uv()
        self.environ = uv_environment(os.environ if environ is None else environ)

    def venv(self, root: str, python: str) -> None:
        self._run(["venv", "--quiet", "--python", python, root])

    def build_wheel(self, project: str, out: str, tell: Phase) -> None:
        tell("building", f"building {project} into a wheel")
        self._run(["build", "--wheel", "--out-dir", out, project])

    def install(
        self,
        python: str,
        requirements: Sequence[str],
        overrides: str,
        *,
        allow_sdist: bool,
        tell: Phase,
    ) -> None:
        """Install ``requirements`` into the environment of ``python``, with
        the ``overrides`` file; wheels only unless ``allow_sdist``."""
        command = ["pip", "install", "--python", python, "--override", overrides]
        if not allow_sdist:
            command.append("--no-build")
        tell("resolving", "resolving " + " ".join(requirements))
        self._run([*command, *requirements], tell)

    def _run(self, arguments: list[str], tell: Phase | None = None) -> None:
        said: list[str] = []
        with subprocess.Popen(
            [self.program, *arguments],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=self.environ,
            text=True,
            errors="replace",
        ) as process:
            try:
                for line in process.stderr or ():
                    line = line.rstrip()
                    said.append(line)
                    del said[:-200]
                    word = line.split(" ", 1)[0]
                    if tell is not None and word in NEXT_PHASE:
                        tell(NEXT_PHASE[word], line)
            except BaseException:  # a cancel (raised by tell): uv stops too
                process.kill()
                raise
        if process.returncode != 0:
            raise InstallFailed(_reason(said, process.returncode))


def _reason(said: list[str], code: int) -> str:
    """uv's error, from its first ``error:`` line on (else its last lines)."""
    start = next((i for i, line in enumerate(said) if line.startswith("error:")), None)
    lines = said[start:] if start is not None else said[-REASON_LINES:]
    text = " ".join(line.strip() for line in lines[:REASON_LINES] if line.strip())
    return text.removeprefix("error: ") or f"uv exited with code {code}"
