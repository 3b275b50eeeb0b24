"""Every ``error_type`` of the contract (docs/guides/isolation.md and
"HTTP"), one constant each.

A result record's or an HTTP error body's ``error_type`` is either one of
these names or, for an exception a plugin raised in its own code, that
exception's class name (``ValueError``). Clients may switch on them: they are
stable.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, Literal

__all__ = ["GUARDS", "ErrorType", "Guard"]

# The guards a call can trip: a trip counts under its name in the metrics
# (plugwarden_plugin_guard_trips_total{guard}) and in a result's ``guard``.
Guard = Literal["timeout", "memory", "tasks", "crash", "protocol", "gpu_memory", "gpu_fault"]
GUARDS: tuple[Guard, ...] = (
    "timeout", "memory", "tasks", "crash", "protocol", "gpu_memory", "gpu_fault",
)  # fmt: skip


class ErrorType:
    """The names plugwarden itself gives to failed calls and refused requests."""

    # A call that did not run, or ran and was cut short by the host.
    BUSY: Final = "Busy"  # every worker stayed busy for the call's whole timeout
    PLUGIN_NOT_AVAILABLE: Final = "PluginNotAvailable"  # FAILED, UNAVAILABLE or not loaded
    UNKNOWN_PLUGIN: Final = "UnknownPlugin"  # no plugin of that name (it lists the known)
    UNKNOWN_TOOL: Final = "UnknownTool"  # a tool the plugin's manifest does not declare
    INVALID_ARGUMENTS: Final = "InvalidArguments"  # args not an object, a bad tool or timeout_s
    RESTARTED: Final = "Restarted"  # the plugin was restarted while the call ran
    CLOSED: Final = "Closed"  # the host closed while the call ran
    SHUTTING_DOWN: Final = "ShuttingDown"  # the server is draining
    CANCELLED: Final = "Cancelled"  # a job cancelled by its caller
    JOB_LOST: Final = "JobLost"  # the host stopped while the job was queued or running
    UNINSTALLED: Final = "Uninstalled"  # the plugin was uninstalled while the call ran
    # Installs, upgrades, rollbacks and uninstalls (jobs of the host's own).
    INSTALL_FAILED: Final = "InstallFailed"  # nothing changed; the reason says why
    ROLLED_BACK: Final = "RolledBack"  # an upgrade failed in probation: the old version serves
    # A guard tripped.
    TIMEOUT: Final = "Timeout"  # past timeout_s: killed (the reason says where it was stuck)
    MEMORY_LIMIT: Final = "MemoryLimitExceeded"  # its worker tree's memory past memory_mb: killed
    TASK_LIMIT: Final = "TaskLimitExceeded"  # threads plus processes past max_tasks
    GPU_MEMORY_LIMIT: Final = "GpuMemoryLimitExceeded"  # its GPU memory (NVML) past gpu_memory_mb
    GPU_FAULT: Final = "GpuFault"  # an Xid on its GPU: the worker was recycled
    WORKER_DIED: Final = "WorkerDied"  # the worker exited or was killed by a signal (named)
    # The plugin answered, but not with something the host can pass on.
    RESULT_NOT_SERIALIZABLE: Final = "ResultNotSerializable"  # not JSON; the plugin stays up
    RESULT_TOO_LARGE: Final = "ResultTooLarge"  # past max_result_bytes; the plugin stays up
    RESULT_TOO_DEEP: Final = "ResultTooDeep"  # nests past 128 levels; the plugin stays up
    PROTOCOL: Final = "ProtocolViolation"  # the worker broke the wire protocol: it was killed
    # Loading.
    WORKER_START: Final = "WorkerStart"  # no worker process could be started
    IMPORT_FAILED: Final = "ImportFailed"  # importing the plugin raised, exited, crashed or hung
    MISSING_HOOK: Final = "MissingHook"  # a required hook (validate, run) is not implemented
    UNKNOWN_HOOK: Final = "UnknownHook"  # a @hookimpl not named init, validate, run or health
    HOOK_SIGNATURE: Final = "HookSignatureMismatch"  # parameters unlike its hookspec's
    BACKEND_UNAVAILABLE: Final = "BackendUnavailable"  # Ray not installed, or no node fits
    # The host itself.
    REGISTRY_TIMEOUT: Final = "RegistryTimeout"  # the registry stayed locked past lock_timeout_s
    JOB_STORE: Final = "JobStoreUnavailable"  # the jobs database refused a write
    INTERNAL: Final = "InternalError"  # a fault of plugwarden's own, logged: retry
    # HTTP requests refused before any plugin code runs.
    INVALID_JSON: Final = "InvalidJSON"  # a body that is not JSON, not finite, or nested too deep
    INVALID_REQUEST: Final = "InvalidRequest"  # unknown fields, a bad spec, a bad query
    PAYLOAD_TOO_LARGE: Final = "PayloadTooLarge"  # a body past max_body_bytes (or max_blob_bytes)
    UNSUPPORTED_MEDIA_TYPE: Final = "UnsupportedMediaType"  # not JSON, multipart or octets
    CLIENT_DISCONNECT: Final = "ClientDisconnect"  # the client left while sending the body
    REQUEST_TIMEOUT: Final = "RequestTimeout"  # a body slower than server.body_timeout_s
    MUTATIONS_DISABLED: Final = "MutationsDisabled"  # no token: run, jobs, installs are off
    UNAUTHORIZED: Final = "Unauthorized"  # no bearer token sent
    FORBIDDEN: Final = "Forbidden"  # a wrong bearer token
    NOT_FOUND: Final = "NotFound"  # no such route
    UNKNOWN_JOB: Final = "UnknownJob"  # no job of that id (or removed by retention)
    JOB_NOT_FINISHED: Final = "JobNotFinished"  # a job's result, asked before its end
    METHOD_NOT_ALLOWED: Final = "MethodNotAllowed"  # Allow names the methods it serves
    BAD_REQUEST: Final = "BadRequest"  # a request the HTTP layer could not read
    HTTP_ERROR: Final = "HTTPError"  # any other HTTP-level refusal

    # The names of a call the host ended on purpose: no guard trip, no crash.
    ENDED_BY_HOST: Final = frozenset({RESTARTED, CLOSED, SHUTTING_DOWN, CANCELLED, UNINSTALLED})
    # Failures that are not the plugin's doing (fail_on_error ignores them).
    NOT_THE_PLUGINS: Final = frozenset(
        {BUSY, PLUGIN_NOT_AVAILABLE, UNKNOWN_PLUGIN, UNKNOWN_TOOL, INVALID_ARGUMENTS, INTERNAL}
        | ENDED_BY_HOST
    )

    @staticmethod
    def http_status(error_type: str | None) -> int:
        """The HTTP status of an answer with this ``error_type``: a request
        the host refused (nothing ran) has its 4xx or 5xx; a call that ran,
        or tried to, answers 200 with its result record, ``ok: false``."""
        return HTTP_STATUS.get(error_type or "", 200)


# One table for every route: what each refusal answers over HTTP.
HTTP_STATUS: Final[Mapping[str, int]] = {
    ErrorType.INVALID_JSON: 400,
    ErrorType.CLIENT_DISCONNECT: 400,
    ErrorType.BAD_REQUEST: 400,
    ErrorType.UNAUTHORIZED: 401,
    ErrorType.MUTATIONS_DISABLED: 403,
    ErrorType.FORBIDDEN: 403,
    ErrorType.UNKNOWN_PLUGIN: 404,
    ErrorType.UNKNOWN_JOB: 404,
    ErrorType.NOT_FOUND: 404,
    ErrorType.METHOD_NOT_ALLOWED: 405,
    ErrorType.JOB_NOT_FINISHED: 409,
    ErrorType.REQUEST_TIMEOUT: 408,
    ErrorType.PAYLOAD_TOO_LARGE: 413,
    ErrorType.UNSUPPORTED_MEDIA_TYPE: 415,
    ErrorType.INVALID_REQUEST: 422,
    ErrorType.INVALID_ARGUMENTS: 422,
    ErrorType.UNKNOWN_TOOL: 422,
    ErrorType.BUSY: 429,
    ErrorType.INTERNAL: 503,
    ErrorType.REGISTRY_TIMEOUT: 503,
    ErrorType.JOB_STORE: 503,
    ErrorType.SHUTTING_DOWN: 503,
    ErrorType.CLOSED: 503,
}
