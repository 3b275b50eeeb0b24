"""The HTTP API as an OpenAPI 3.1 document, served at ``GET /openapi.json``
(docs/reference/http.md is generated from it).

Every route of the app is described here, with its bodies, answers and
errors; ``tests/test_web_openapi.py`` checks the document against the
app's routes and the error table, and ``tox -e api`` fuzzes a live server
against it with Schemathesis.
"""

from __future__ import annotations

from functools import cache

from plugwarden.error_types import HTTP_STATUS
from plugwarden.jobs.job import JobState
from plugwarden.web.apischemas import SCHEMAS, Schema, object_of, ref
from plugwarden.web.jobroutes import MAX_PAGE

__all__ = ["document"]

_JSON = "application/json"


def _answer(description: str, schema: Schema | None = None, media: str = _JSON) -> Schema:
    answer: Schema = {"description": description}
    if schema is not None:
        answer["content"] = {media: {"schema": schema}}
    return answer


def _errors(*statuses: int) -> dict[str, Schema]:
    """The error answers a route can give, each naming its error types."""
    answers = {}
    for status in statuses:
        names = sorted(name for name, code in HTTP_STATUS.items() if code == status)
        answers[str(status)] = _answer(", ".join(names) or "refused", ref("Error"))
    return answers


_READ_ERRORS = (503,)
_TOKEN_ERRORS = (401, 403)
_BODY_ERRORS = (400, 408, 413, 415, 422)
_NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
_JOB_ID = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}
_OPEN_OR_TOKEN: list[Schema] = [{}, {"bearer": []}]  # open unless public_reads = false
_TOKEN: list[Schema] = [{"bearer": []}]


def _job_links(id_from: str) -> Schema:
    """What a client does next with a job it was given."""
    return {
        f"{verb}Job": {"operationId": operation, "parameters": {"job_id": id_from}}
        for verb, operation in (
            ("Get", "getJob"),
            ("Cancel", "cancelJob"),
            ("Follow", "jobEvents"),
            ("Result", "jobResult"),
        )
    }


def _job_accepted(description: str) -> Schema:
    return {
        "202": {
            **_answer(description, ref("Job")),
            "headers": {"Location": {"schema": {"type": "string"}, "description": "the job"}},
            "links": _job_links("$response.body#/id"),
        }
    }


def _run_body(request: str) -> Schema:
    """A run's or a job's body: JSON, multipart with file parts, or octets."""
    return {
        "required": True,
        "content": {
            _JSON: {"schema": ref(request)},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["request"],
                    "properties": {"request": ref(request)},
                    "additionalProperties": {
                        "type": "string",
                        "format": "binary",
                        "description": 'a file part, referred to in args as {"$blob": "PART"}',
                    },
                },
                "encoding": {"request": {"contentType": _JSON}},
            },
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }


_OCTET_QUERY = [
    {
        "name": key,
        "in": "query",
        "required": False,
        "description": f"{what} (only with an application/octet-stream body)",
        **({"content": {_JSON: {"schema": {"type": "object"}}}} if key == "args" else
           {"schema": {"type": "string"}}),
    }
    for key, what in (
        ("tool", "the tool"),
        ("arg", "the argument that takes the bytes"),
        ("args", "the other args, a JSON object"),
        ("dtype", "an array's dtype, e.g. |u1"),
        ("shape", "an array's shape, e.g. 1080,1920,3"),
    )
]  # fmt: skip


def _plugin_routes() -> dict[str, Schema]:
    return {
        "/v1/plugins": {
            "get": {
                "operationId": "listPlugins",
                "summary": "Every plugin with its state, reason and metrics",
                "security": _OPEN_OR_TOKEN,
                "responses": {
                    "200": _answer("a flat list", {"type": "array", "items": ref("PluginSummary")}),
                    **_errors(*_TOKEN_ERRORS, *_READ_ERRORS),
                },
            },
            "post": {
                "operationId": "installPlugin",
                "summary": "Install a plugin into an environment of its own (a job)",
                "security": _TOKEN,
                "requestBody": {
                    "required": True,
                    "content": {_JSON: {"schema": ref("InstallRequest")}},
                },
                "responses": {
                    **_job_accepted("the install job"),
                    **_errors(*_TOKEN_ERRORS, *_BODY_ERRORS, 429, 503),
                },
            },
        },
        "/v1/plugins/{name}": {
            "parameters": [_NAME],
            "get": {
                "operationId": "getPlugin",
                "summary": "A plugin's full record: health, history, grants, its workers now",
                "security": _OPEN_OR_TOKEN,
                "responses": {
                    "200": _answer("the full record", ref("PluginRecord")),
                    **_errors(*_TOKEN_ERRORS, 404, *_READ_ERRORS),
                },
            },
            "delete": {
                "operationId": "uninstallPlugin",
                "summary": "Uninstall a plugin installed with plugwarden install (a job)",
                "security": _TOKEN,
                "responses": {
                    **_job_accepted("the uninstall job"),
                    **_errors(*_TOKEN_ERRORS, 404, 429, 503),
                },
            },
        },
        "/v1/plugins/{name}/health": {
            "parameters": [_NAME],
            "get": {
                "operationId": "getPluginHealth",
                "summary": "A plugin's record as the registry holds it (no process is read)",
                "security": _OPEN_OR_TOKEN,
                "responses": {
                    "200": _answer("the record, in any state", ref("PluginHealth")),
                    **_errors(*_TOKEN_ERRORS, 404, *_READ_ERRORS),
                },
            },
        },
        "/v1/plugins/{name}/run": {
            "parameters": [_NAME],
            "post": {
                "operationId": "runTool",
                "summary": "Run one of the plugin's tools and wait for its result",
                "security": _TOKEN,
                "parameters": _OCTET_QUERY,
                "requestBody": _run_body("RunRequest"),
                "responses": {
                    "200": {
                        "description": "the result record; ok false when the plugin failed",
                        "content": {
                            _JSON: {"schema": ref("CallResult")},
                            "multipart/mixed": {"schema": {"type": "string"}},
                        },
                    },
                    **_errors(*_TOKEN_ERRORS, 404, *_BODY_ERRORS, 429, 503),
                },
            },
        },
        "/v1/plugins/{name}/restart": {
            "parameters": [_NAME],
            "post": {
                "operationId": "restartPlugin",
                "summary": "Rerun the plugin's whole pipeline (resets its crash-loop count)",
                "security": _TOKEN,
                "responses": {
                    "200": _answer("the record after the restart", ref("PluginHealth")),
                    **_errors(*_TOKEN_ERRORS, 404, 503),
                },
            },
        },
        "/v1/plugins/{name}/jobs": {
            "parameters": [_NAME],
            "post": {
                "operationId": "submitJob",
                "summary": "Run a tool as a job: answered at once, followed by its id",
                "security": _TOKEN,
                "parameters": _OCTET_QUERY,
                "requestBody": _run_body("JobRequest"),
                "responses": {
                    **_job_accepted("the queued job"),
                    **_errors(*_TOKEN_ERRORS, 404, *_BODY_ERRORS, 429, 503),
                },
            },
        },
        "/v1/plugins/{name}/upgrade": {
            "parameters": [_NAME],
            "post": {
                "operationId": "upgradePlugin",
                "summary": "Upgrade a plugin beside its running version (a job)",
                "security": _TOKEN,
                "requestBody": {
                    "required": False,
                    "content": {_JSON: {"schema": ref("UpgradeRequest")}},
                },
                "responses": {
                    **_job_accepted("the upgrade job"),
                    **_errors(*_TOKEN_ERRORS, 404, *_BODY_ERRORS, 429, 503),
                },
            },
        },
        "/v1/plugins/{name}/rollback": {
            "parameters": [_NAME],
            "post": {
                "operationId": "rollbackPlugin",
                "summary": "Swap a plugin's current and previous versions (a job)",
                "security": _TOKEN,
                "responses": {
                    **_job_accepted("the rollback job"),
                    **_errors(*_TOKEN_ERRORS, 404, 429, 503),
                },
            },
        },
    }


def _job_routes() -> dict[str, Schema]:
    job_errors = _errors(*_TOKEN_ERRORS, 404, 503)
    return {
        "/v1/jobs": {
            "get": {
                "operationId": "listJobs",
                "summary": "Jobs, newest first, a page at a time (no results)",
                "security": _TOKEN,
                "parameters": [
                    {"name": "plugin", "in": "query", "schema": {"type": "string"}},
                    {
                        "name": "state",
                        "in": "query",
                        "schema": {"type": "string", "enum": list(JobState.ALL)},
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE},
                    },
                    {
                        "name": "before",
                        "in": "query",
                        "description": "from the Link header",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 2**62},
                    },
                ],
                "responses": {
                    "200": {
                        **_answer("a page of jobs", {"type": "array", "items": ref("Job")}),
                        "headers": {
                            "Link": {"schema": {"type": "string"}, "description": 'rel="next"'}
                        },
                    },
                    **_errors(*_TOKEN_ERRORS, 422, 503),
                },
            },
        },
        "/v1/jobs/{job_id}": {
            "parameters": [_JOB_ID],
            "get": {
                "operationId": "getJob",
                "summary": "A job with its progress and, once ended, its result",
                "security": _TOKEN,
                "responses": {"200": _answer("the job", ref("Job")), **job_errors},
            },
            "delete": {
                "operationId": "cancelJob",
                "summary": "Cancel a job (cooperative, then its worker is killed); "
                "the job stays readable, cancelled",
                "security": _TOKEN,
                "responses": {"200": _answer("the job", ref("Job")), **job_errors},
            },
        },
        "/v1/jobs/{job_id}/events": {
            "parameters": [_JOB_ID],
            "get": {
                "operationId": "jobEvents",
                "summary": "The job's progress as server-sent events, to its end",
                "security": _TOKEN,
                "responses": {
                    "200": _answer(
                        "events 'progress' (the job), then 'end' (the job with its result) "
                        "or 'error' (an error body)",
                        object_of(
                            {
                                "event": {"enum": ["progress", "end", "error"]},
                                "data": {"type": "string", "contentMediaType": _JSON},
                            }
                        ),
                        "text/event-stream",
                    ),
                    **job_errors,
                },
            },
        },
        "/v1/jobs/{job_id}/result": {
            "parameters": [_JOB_ID],
            "get": {
                "operationId": "jobResult",
                "summary": "Only the result of a job that ended",
                "security": _TOKEN,
                "responses": {
                    "200": _answer("the result, as the plugin returned it", {}),
                    **_errors(*_TOKEN_ERRORS, 404, 409, 503),
                },
            },
        },
    }


def _host_routes() -> dict[str, Schema]:
    def page(operation: str, summary: str, media: str, schema: Schema) -> Schema:
        return {
            "get": {
                "operationId": operation,
                "summary": summary,
                "security": [{}] if operation in ("liveness", "readiness") else _OPEN_OR_TOKEN,
                "responses": {
                    "200": _answer(summary, schema, media),
                    **(_errors(*_TOKEN_ERRORS, 503) if operation != "liveness" else {}),
                },
            }
        }

    return {
        "/healthz": page(
            "liveness", "The server answers", _JSON, object_of({"status": {"const": "alive"}})
        ),
        "/readyz": {
            "get": {
                "operationId": "readiness",
                "summary": "Whether every required plugin can serve",
                "security": [{}],
                "responses": {
                    "200": _answer("ready", ref("Readiness")),
                    "503": _answer("not ready, with the reasons", ref("Readiness")),
                },
            }
        },
        "/metrics": page("metrics", "Prometheus text exposition", "text/plain", {"type": "string"}),
        "/v1/gpus": page(
            "listGpus", "Each GPU as the host's GPU watch reads it", _JSON, ref("Gpus")
        ),
        "/": page("statusPage", "The status page", "text/html", {"type": "string"}),
        "/openapi.json": page("openapi", "This document", _JSON, {"type": "object"}),
    }


@cache
def document(version: str) -> Schema:
    """The OpenAPI 3.1 document of every route (built once)."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "plugwarden",
            "version": version,
            "description": "A crash-proof plugin host. Mutating routes and job reads need "
            "the bearer token ([server] token or PLUGWARDEN_TOKEN); without one "
            "configured they answer 403 MutationsDisabled. Plugin records, metrics and "
            "the page are open unless [server] public_reads = false.",
        },
        "paths": _plugin_routes() | _job_routes() | _host_routes(),
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
