"""The host's own ``plugwarden`` inside a plugin's environment.

plugwarden is not on the package index, and the worker side in an
environment must be the host's own code (the wire between them is
private). Each environment gets a small wheel named ``plugwarden`` at the
host's version: a ``.pth`` file that puts a folder holding only a link to
the host's ``plugwarden`` package on the path, and one requirement,
:data:`WORKER_REQUIRES` (the worker side imports pluggy, wrapt and the
standard library, nothing else). It is installed as an override, so a plugin that
depends on ``plugwarden`` (as ``plugwarden new`` writes it) gets this one
whatever version it asks for, and its own pins win for everything else.
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import io
import os
import zipfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

__all__ = ["WORKER_PACKAGES", "WORKER_REQUIRES", "HostRuntime", "host_runtime"]

# What the worker side needs in an environment: the hook markers and the guards.
WORKER_REQUIRES = ("pluggy>=1.5", "wrapt>=1.16")
PACKAGE = Path(__file__).resolve().parent.parent  # the host's plugwarden package
# What the worker side imports beside the standard library: the host's own
# copies, linked into the runtime folder, so that a plugin's environment
# runs none of its own code in its zygote (see Zygote's ``isolated``).
WORKER_PACKAGES = ("plugwarden", "pluggy", "wrapt")


def _package_dir(name: str) -> Path:
    if name == "plugwarden":
        return PACKAGE
    module = importlib.import_module(name)
    return Path(module.__file__ or "").resolve().parent


class HostRuntime:
    """``folder``: on a worker's path, it holds ``plugwarden``, ``pluggy``
    and ``wrapt`` (links to the host's packages, ``packages``); ``wheel``:
    the stub distribution that puts it on the environment's path."""

    def __init__(self, folder: Path, wheel: Path, packages: tuple[Path, ...]) -> None:
        self.folder = folder
        self.wheel = wheel
        self.packages = packages

    def requirement(self) -> str:
        """The override line that installs the stub."""
        return f"plugwarden @ {self.wheel.as_uri()}"


def host_version() -> str:
    try:
        return version("plugwarden")
    except PackageNotFoundError:  # run from a source tree
        return "0+unknown"


def host_runtime(base: Path) -> HostRuntime:
    """The runtime folder and stub wheel for this host, made under ``base``
    the first time (one per host version and package location)."""
    host = host_version()
    key = hashlib.sha256(str(PACKAGE).encode()).hexdigest()[:12]
    folder = base / f"{host.replace('+', '_')}-{key}"
    folder.mkdir(parents=True, exist_ok=True)
    packages = tuple(_package_dir(name) for name in WORKER_PACKAGES)
    for name, package in zip(WORKER_PACKAGES, packages, strict=True):
        link = folder / name
        if not link.is_symlink() or os.readlink(link) != str(package):
            temporary = folder / f".{name}.{os.getpid()}"
            temporary.unlink(missing_ok=True)
            temporary.symlink_to(package, target_is_directory=True)
            os.replace(temporary, link)
    wheel = folder / f"plugwarden-{host.replace('-', '_')}-py3-none-any.whl"
    if not wheel.exists():
        temporary = folder / f".{wheel.name}.{os.getpid()}"
        temporary.write_bytes(_stub_wheel(host, folder))
        os.replace(temporary, wheel)
    return HostRuntime(folder, wheel, packages)


def _stub_wheel(host: str, folder: Path) -> bytes:
    info = f"plugwarden-{host.replace('-', '_')}.dist-info"
    requires = "".join(f"Requires-Dist: {line}\n" for line in WORKER_REQUIRES)
    files = {
        "plugwarden_host.pth": f"{folder}\n",
        f"{info}/METADATA": (
            f"Metadata-Version: 2.1\nName: plugwarden\nVersion: {host}\n"
            f"Summary: the host's plugwarden, provided to a plugin's environment\n{requires}"
        ),
        f"{info}/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: plugwarden\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = []
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in files.items():
            data = text.encode()
            archive.writestr(name, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            record.append(f"{name},sha256={digest.decode()},{len(data)}")
        record.append(f"{info}/RECORD,,")
        archive.writestr(f"{info}/RECORD", "\n".join(record) + "\n")
    return buffer.getvalue()
