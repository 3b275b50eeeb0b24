"""The one error hierarchy of plugwarden. Each error carries its context."""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "CorruptFile",
    "InstallFailed",
    "JobRefused",
    "JobStoreError",
    "LoadError",
    "ManifestError",
    "PlugwardenError",
    "RegistryTimeout",
    "TransitionError",
    "UnknownJob",
    "UnknownPlugin",
    "describe",
]


class PlugwardenError(Exception):
    """Base of every error plugwarden raises on purpose."""


class ConfigError(PlugwardenError):
    """The host config is malformed; ``key`` names the offending key (None:
    the file as a whole)."""

    def __init__(self, source: str, key: str | None, message: str) -> None:
        self.source = source
        self.key = key
        self.message = message
        super().__init__(f"{source}: {key}: {message}" if key else f"{source}: {message}")


class ManifestError(PlugwardenError):
    """A plugin's manifest is malformed; carries the file and the key."""

    def __init__(self, path: str, key: str | None, message: str) -> None:
        self.path = path
        self.key = key
        self.message = message
        where = f"{path}: key '{key}'" if key else path
        super().__init__(f"Invalid manifest {where}: {message}")


class LoadError(PlugwardenError):
    """A plugin cannot be loaded; ``reason`` is the actionable sentence and
    ``error_type`` one of :class:`plugwarden.ErrorType`'s names. With
    ``unavailable``, something the plugin needs is missing (the plugin is
    UNAVAILABLE, not retried); otherwise the load failed (FAILED)."""

    def __init__(self, reason: str, error_type: str, *, unavailable: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.error_type = error_type
        self.unavailable = unavailable  # what the plugin needs is missing: UNAVAILABLE


class InstallFailed(PlugwardenError):
    """An install, upgrade, rollback or uninstall did not happen (or was
    undone); ``reason`` says why, in the installer's own words where it was
    the installer, and ``error_type`` is ``InstallFailed`` or, for an
    upgrade that failed in probation, ``RolledBack``."""

    def __init__(self, reason: str, error_type: str = "InstallFailed") -> None:
        super().__init__(reason)
        self.reason = reason
        self.error_type = error_type


class CorruptFile(PlugwardenError):
    """A model file's structure is broken; the message says how."""


class UnknownPlugin(PlugwardenError, LookupError):
    """No plugin of that name is registered."""

    def __init__(self, name: str, known: list[str] | None = None) -> None:
        self.name = name
        self.known = sorted(known or [])
        hint = f" Known plugins: {', '.join(self.known)}." if self.known else ""
        super().__init__(
            f"Unknown plugin '{name}'.{hint} Install one into a running server with "
            "plugwarden install SPEC; one installed with pip is found after a restart of the "
            "server."
        )


class TransitionError(PlugwardenError):
    """A lifecycle transition that the state machine forbids."""

    def __init__(self, name: str, current: str | None, target: str) -> None:
        self.name = name
        self.current = current
        self.target = target
        super().__init__(f"Plugin '{name}': transition {current} -> {target} is not allowed")


class RegistryTimeout(PlugwardenError, TimeoutError):
    """The registry lock could not be taken in time (HTTP answers 503)."""

    def __init__(self, mode: str, timeout_s: float) -> None:
        self.mode = mode
        self.timeout_s = timeout_s
        super().__init__(f"Registry {mode} lock not acquired within {timeout_s:g}s")


class UnknownJob(PlugwardenError, LookupError):
    """No job of that id is known (never submitted, or past retention)."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(
            f"Unknown job {job_id[:64]!r}: never submitted here, or removed by retention "
            "([jobs] keep_s, keep_max)."
        )


class JobRefused(PlugwardenError):
    """A job was not accepted; ``error_type`` says why (Busy, UnknownTool...)."""

    def __init__(self, plugin: str, message: str, error_type: str) -> None:
        self.plugin = plugin
        self.error_type = error_type
        super().__init__(message)


class JobStoreError(PlugwardenError):
    """The jobs database cannot be opened or written; carries its path."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        super().__init__(f"Jobs database {path}: {message}")


def describe(exc: BaseException) -> str:
    """One line naming the exception, never a traceback."""
    if isinstance(exc, SystemExit):
        return f"SystemExit: plugin called sys.exit({exc.code!r})"
    if isinstance(exc, KeyboardInterrupt):
        return "KeyboardInterrupt: plugin raised KeyboardInterrupt"
    try:
        message = str(exc).strip().splitlines()
    # str() of a plugin's exception is plugin code too.
    except BaseException:  # noqa: BLE001
        message = ["<its message could not be read>"]
    return f"{type(exc).__name__}: {message[0]}" if message else type(exc).__name__
