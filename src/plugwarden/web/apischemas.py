"""The component schemas of the HTTP API's OpenAPI document
(:mod:`plugwarden.web.openapi`): the bodies every route takes and answers."""

from __future__ import annotations

from typing import Any

from plugwarden.error_types import GUARDS, HTTP_STATUS, ErrorType
from plugwarden.jobs.job import JobState
from plugwarden.plugin.lifecycle import State

__all__ = ["ERROR_BODY_TYPES", "SCHEMAS", "Schema", "object_of", "ref"]

Schema = dict[str, Any]

# The error_type of an HTTP error body: a refusal in the status table, or
# Starlette's own 404 / 405 / 400 and any other HTTP error, in our shape.
ERROR_BODY_TYPES = tuple(sorted({*HTTP_STATUS, ErrorType.HTTP_ERROR}))

_JSON = "application/json"
_NULLABLE_STRING: Schema = {"type": ["string", "null"]}
_NULLABLE_NUMBER: Schema = {"type": ["number", "null"]}
_WHEN: Schema = {"type": ["string", "null"], "description": "ISO 8601, UTC"}


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def object_of(required: dict[str, Schema], optional: dict[str, Schema] | None = None) -> Schema:
    """An object with these fields (more may follow: clients ignore what
    they do not know)."""
    return {
        "type": "object",
        "required": sorted(required),
        "properties": required | (optional or {}),
    }


_SUMMARY_FIELDS: dict[str, Schema] = {
    "name": {"type": "string"},
    "state": {"type": "string", "enum": [state.value for state in State]},
    "reason": {"type": "string", "description": "why it is in this state, and the fix"},
    "description": {"type": "string"},
    "version": _NULLABLE_STRING,
    "distribution": _NULLABLE_STRING,
    "isolation": {"type": "string"},
    "enabled": {"type": "boolean"},
    "requires_gpu": {"type": "boolean"},
    "workers": {"type": "integer"},
    "tools": {"type": "array", "items": {"type": "string"}},
    "in_flight": {"type": "integer", "minimum": 0},
    "success_count": {"type": "integer", "minimum": 0},
    "error_count": {"type": "integer", "minimum": 0},
    "last_used": _WHEN,
    "last_execution_time_ms": _NULLABLE_NUMBER,
    "avg_execution_time_ms": _NULLABLE_NUMBER,
    "guard_trips": {
        "type": "object",
        "properties": {guard: {"type": "integer", "minimum": 0} for guard in GUARDS},
    },
    "restarts": {"type": "integer", "minimum": 0},
    "restarts_by_cause": {"type": "object", "additionalProperties": {"type": "integer"}},
    "uptime_seconds": {"type": "number", "minimum": 0},
    "healthy": {"type": "boolean"},
    "health": {"type": ["object", "null"], "description": "the last health check's report"},
    "environment": {"type": ["object", "null"], "description": "null: the host's own"},
}
# What every item of the plugin listing has at least (the rest may follow).
_LISTED = (
    "name", "state", "reason", "description", "version", "uptime_seconds", "last_used",
    "success_count", "error_count", "last_execution_time_ms", "avg_execution_time_ms",
)  # fmt: skip
_RECORD_FIELDS: dict[str, Schema] = {
    "permissions": {"type": "object", "description": "what the plugin is granted"},
    "protections": {
        "type": "object",
        "additionalProperties": {"type": "string"},
        "description": "each protection and whether this machine enforces it",
    },
    "history": {
        "type": "array",
        "items": object_of(
            {"state": _SUMMARY_FIELDS["state"], "reason": {"type": "string"}, "at": _WHEN}
        ),
    },
}
_WORKER_FIELDS: dict[str, Schema] = {
    "worker_resident_bytes": {"type": ["integer", "null"], "minimum": 0},
    "worker_gpu_bytes": {"type": ["integer", "null"], "minimum": 0},
    "worker_gpus": {
        "type": "array",
        "items": {"$ref": "#/components/schemas/Gpu"},
        "description": "the GPUs its workers are placed on",
    },
    "worker_nodes": {"type": "array", "items": {"type": "string"}},
}

SCHEMAS: dict[str, Schema] = {
    "Error": {
        **object_of(
            {
                "error": {"type": "string", "description": "what is wrong, and the fix"},
                "error_type": {"type": "string", "enum": list(ERROR_BODY_TYPES)},
            }
        ),
        "description": "Every refusal: a 4xx or 5xx with this body, never a traceback.",
    },
    "CallResult": object_of(
        {
            "ok": {"type": "boolean"},
            "plugin": {"type": "string"},
            "hook": {"type": "string"},
            "tool": _NULLABLE_STRING,
            "result": {
                "description": "the plugin's answer (null when not ok); binary values "
                'as {"$base64", "dtype", "shape"}'
            },
            "error": _NULLABLE_STRING,
            "error_type": {
                "type": ["string", "null"],
                "description": "a documented constant (docs/reference/errors.md), or the "
                "class name of an exception the plugin raised",
            },
            "duration_ms": {"type": "number", "minimum": 0},
            "guard_tripped": {"type": "boolean"},
            "guard": {"type": ["string", "null"], "enum": [*GUARDS, None]},
        },
        {"args": {"type": ["object", "null"]}},
    ),
    "PluginSummary": object_of(
        {key: _SUMMARY_FIELDS[key] for key in _LISTED},
        _SUMMARY_FIELDS | {"worker_resident_bytes": _WORKER_FIELDS["worker_resident_bytes"]},
    ),
    "PluginHealth": object_of(_SUMMARY_FIELDS | _RECORD_FIELDS),
    "PluginRecord": object_of(_SUMMARY_FIELDS | _RECORD_FIELDS | _WORKER_FIELDS),
    "Progress": object_of(
        {
            "done": {"type": "number"},
            "total": _NULLABLE_NUMBER,
            "fraction": _NULLABLE_NUMBER,
            "message": _NULLABLE_STRING,
            "updated_at": _WHEN,
        }
    ),
    "Job": object_of(
        {
            "id": {"type": "string"},
            "plugin": {"type": "string"},
            "tool": {"type": "string"},
            "args": {"type": "object"},
            "state": {"type": "string", "enum": list(JobState.ALL)},
            "submitted_at": _WHEN,
            "started_at": _WHEN,
            "finished_at": _WHEN,
            "duration_s": _NULLABLE_NUMBER,
            "timeout_s": {"type": "number"},
            "progress": {"oneOf": [ref("Progress"), {"type": "null"}]},
            "record": {
                "type": ["object", "null"],
                "description": "the call's result record once the job ended (null before)",
            },
        }
    ),
    "RunRequest": {
        **object_of({"tool": {"type": "string"}}, {"args": {"type": "object"}}),
        "additionalProperties": False,
    },
    "JobRequest": {
        **object_of(
            {"tool": {"type": "string"}},
            {"args": {"type": "object"}, "timeout_s": {"type": "number", "exclusiveMinimum": 0}},
        ),
        "additionalProperties": False,
    },
    "InstallRequest": {
        **object_of(
            {"spec": {"$ref": "#/components/schemas/Requirements"}},
            {"overrides": {"$ref": "#/components/schemas/Requirements"}},
        ),
        "additionalProperties": False,
    },
    "UpgradeRequest": {
        **object_of({}, {"spec": ref("Requirements"), "overrides": ref("Requirements")}),
        "additionalProperties": False,
    },
    "Requirements": {
        "description": "requirement lines or wheel paths (never installer options)",
        "oneOf": [
            {"type": "string"},
            {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 32},
        ],
    },
    "Gpu": object_of(
        {
            "index": {"type": "integer", "minimum": 0},
            "name": {"type": "string"},
            "memory_used_bytes": {"type": "integer"},
            "memory_total_bytes": {"type": "integer"},
            "utilization": {"type": ["integer", "null"]},
            "ecc_uncorrected": {"type": ["integer", "null"]},
            "retired_pages": {"type": ["integer", "null"]},
            "remapped_rows": {
                "type": ["integer", "null"],
                "description": "memory rows remapped for ECC errors (Ampere and later)",
            },
            "healthy": {"type": "boolean"},
            "reason": {
                "type": ["string", "null"],
                "description": "why it is unhealthy: an Xid that needs a reset, or a memory "
                "repair that waits for one or failed",
            },
            "xid_attribution": {
                "type": "string",
                "description": "whether an Xid recycles only the worker it names (the "
                "driver's kernel log is read) or every worker on its GPU, and why",
            },
            "xids": {"type": "object", "additionalProperties": {"type": "integer"}},
            "stranded_bytes": {
                "type": "integer",
                "description": "held by processes of lost workers after their replacement "
                "stopped waiting for it",
            },
            "stranded_pids": {"type": "array", "items": {"type": "integer"}},
        }
    ),
    "Gpus": {
        "description": "each GPU as NVML last showed it (none without NVML)",
        "type": "array",
        "items": ref("Gpu"),
    },
    "Readiness": object_of(
        {"ready": {"type": "boolean"}, "reasons": {"type": "array", "items": {"type": "string"}}}
    ),
}
