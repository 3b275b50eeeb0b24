"""How the CLI reaches plugins: a running server over its HTTP API
(:class:`RemoteHost`, the default), or a one-shot host in this process
(:class:`LocalHost`, ``--local``). Both speak plain dicts, the records of
the HTTP API, so the CLI prints one shape whichever it talks to.

httpx is the HTTP client: already the project's test client, timeouts and
connection errors as distinct exceptions, no global state.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from types import TracebackType
from typing import Any

import httpx

from plugwarden.blob import with_parts
from plugwarden.config import URL_ENV, HostConfig
from plugwarden.exceptions import PlugwardenError, UnknownJob, UnknownPlugin
from plugwarden.host.host import Host
from plugwarden.jobs.job import HEARTBEAT_S

__all__ = ["LocalHost", "RemoteHost", "ServerError", "ServerUnreachable", "server_url"]


class ServerUnreachable(PlugwardenError):
    """Nothing answers at the server's address."""

    def __init__(self, url: str, cause: str) -> None:
        self.url = url
        super().__init__(
            f"No plugwarden server answers at {url} ({cause}). Start one with "
            "'plugwarden serve', point --url or PLUGWARDEN_URL at it, or add --local to run "
            "a one-shot host in this process instead."
        )


class ServerError(PlugwardenError):
    """The server refused a request; the message is its own JSON error."""

    def __init__(self, status: int, message: str, error_type: str) -> None:
        self.status = status
        self.error_type = error_type
        super().__init__(f"{message} (HTTP {status} {error_type})")


def server_url(config: HostConfig, url: str | None = None) -> str:
    """--url, else PLUGWARDEN_URL, else the config's [server] address."""
    chosen = url or os.environ.get(URL_ENV)
    if chosen:
        return chosen.rstrip("/")
    host = config.server.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"  # bound to every address: reach it on loopback
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{config.server.port}"


# What the server's answer about the token means for a CLI user.
_TOKEN_FIXES = {
    "Unauthorized": "Missing token: pass --token TOKEN or set PLUGWARDEN_TOKEN "
    "(the server's [server] token).",
    "Forbidden": "Wrong token: pass the server's [server] token with --token, or in "
    "PLUGWARDEN_TOKEN.",
}


class RemoteHost:
    def __init__(self, url: str, token: str | None, timeout_s: float = 300.0) -> None:
        self.url = url
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.Client(base_url=url, headers=headers, timeout=timeout_s)

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            answer = self._client.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ServerUnreachable(self.url, str(exc) or type(exc).__name__) from None
        try:
            body = answer.json()
        except ValueError:
            raise ServerError(answer.status_code, answer.text[:200], "NotJSON") from None
        if answer.status_code == 404 and isinstance(body, dict):
            if body.get("error_type") == "UnknownJob":
                raise UnknownJob(path.split("/")[3])
            name = path.split("/")[3] if path.count("/") >= 3 else path
            error = str(body.get("error", ""))
            known = error.partition("Known plugins: ")[2].partition(".")[0]
            raise UnknownPlugin(name, known.split(", ") if known else None)
        if answer.status_code >= 400 and isinstance(body, dict) and "ok" not in body:
            error, kind = str(body.get("error")), str(body.get("error_type"))
            if kind in _TOKEN_FIXES:
                error = _TOKEN_FIXES[kind]
            raise ServerError(answer.status_code, error, kind)
        return body

    def records(self) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = self._request("GET", "/v1/plugins")
        return records

    def record(self, name: str) -> dict[str, Any]:
        record: dict[str, Any] = self._request("GET", f"/v1/plugins/{name}")
        return record

    def gpus(self) -> list[dict[str, Any]]:
        gpus: list[dict[str, Any]] = self._request("GET", "/v1/gpus")
        return gpus

    def run(
        self, name: str, tool: str, args: dict[str, Any], files: dict[str, bytes] | None = None
    ) -> dict[str, Any]:
        self.record(name)  # an unknown name is a usage error, not a failed call
        body = _body(tool, args, files)
        result: dict[str, Any] = self._request("POST", f"/v1/plugins/{name}/run", **body)
        return result

    def restart(self, name: str) -> dict[str, Any]:
        record: dict[str, Any] = self._request("POST", f"/v1/plugins/{name}/restart")
        return record

    def submit(
        self, name: str, tool: str, args: dict[str, Any], files: dict[str, bytes] | None = None
    ) -> dict[str, Any]:
        body = _body(tool, args, files)
        job: dict[str, Any] = self._request("POST", f"/v1/plugins/{name}/jobs", **body)
        return job

    def job(self, job_id: str) -> dict[str, Any]:
        job: dict[str, Any] = self._request("GET", f"/v1/jobs/{job_id}")
        return job

    def jobs(self, plugin: str | None, state: str | None, limit: int) -> list[dict[str, Any]]:
        query = {k: v for k, v in (("plugin", plugin), ("state", state)) if v is not None}
        jobs: list[dict[str, Any]] = self._request(
            "GET", "/v1/jobs", params={**query, "limit": limit}
        )
        return jobs

    def cancel(self, job_id: str) -> dict[str, Any]:
        job: dict[str, Any] = self._request("DELETE", f"/v1/jobs/{job_id}")
        return job

    def change(
        self, operation: str, name: str | None, specs: list[str], overrides: list[str]
    ) -> dict[str, Any]:
        """Start an install, upgrade, rollback or uninstall: its job."""
        body = {"json": {"spec": specs, "overrides": overrides}} if specs else {}
        if operation == "install":
            job: dict[str, Any] = self._request("POST", "/v1/plugins", **body)
        elif operation == "uninstall":
            job = self._request("DELETE", f"/v1/plugins/{name}")
        else:
            job = self._request("POST", f"/v1/plugins/{name}/{operation}", **body)
        return job

    def follow(self, job_id: str) -> Iterator[dict[str, Any]]:
        """The job after each change (server-sent events), the last one finished."""
        timeout = httpx.Timeout(10.0, read=HEARTBEAT_S * 2 + 5)
        try:
            with self._client.stream("GET", f"/v1/jobs/{job_id}/events", timeout=timeout) as answer:
                if answer.status_code != 200:
                    answer.read()
                    body = answer.json()
                    raise ServerError(answer.status_code, body["error"], body["error_type"])
                kind = ""
                for line in answer.iter_lines():
                    if line.startswith("event: "):
                        kind = line[len("event: ") :]
                    elif line.startswith("data: "):
                        data = json.loads(line[len("data: ") :])
                        if kind == "error":
                            raise ServerError(503, data["error"], data["error_type"])
                        yield data
                        if kind == "end":
                            return
        except httpx.TransportError as exc:
            raise ServerUnreachable(self.url, str(exc) or type(exc).__name__) from None
        raise ServerError(503, "The event stream ended before the job did", "StreamEnded")

    def __enter__(self) -> RemoteHost:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._client.close()


class LocalHost:
    """A one-shot :class:`Host` in this process: started on enter, closed on exit."""

    def __init__(self, config: HostConfig) -> None:
        self._host = Host(config)

    def records(self) -> list[dict[str, Any]]:
        return [status.to_dict(history=False) for status in self._host.statuses()]

    def record(self, name: str) -> dict[str, Any]:
        return self._host.status(name).to_dict()

    def run(
        self, name: str, tool: str, args: dict[str, Any], files: dict[str, bytes] | None = None
    ) -> dict[str, Any]:
        self._host.status(name)  # an unknown name is a usage error, not a failed call
        result = self._host.call(name, tool, _with_files(args, files))
        # Binary values as the server answers them (base64).
        record: dict[str, Any] = json.loads(b"".join(bytes(p) for p in result.json_parts()))
        return record

    def restart(self, name: str) -> dict[str, Any]:
        return self._host.restart(name).to_dict()

    def submit(
        self, name: str, tool: str, args: dict[str, Any], files: dict[str, bytes] | None = None
    ) -> dict[str, Any]:
        self._host.status(name)  # an unknown name is a usage error
        return self._host.submit(name, tool, _with_files(args, files)).to_dict()

    def job(self, job_id: str) -> dict[str, Any]:
        return self._host.job(job_id).to_dict()

    def jobs(self, plugin: str | None, state: str | None, limit: int) -> list[dict[str, Any]]:
        return [job.to_dict() for job in self._host.jobs(plugin, state, limit=limit)]

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._host.cancel(job_id).to_dict()

    def change(
        self, operation: str, name: str | None, specs: list[str], overrides: list[str]
    ) -> dict[str, Any]:
        return self._host.change(operation, name, specs, overrides).to_dict()

    def follow(self, job_id: str) -> Iterator[dict[str, Any]]:
        """The job after each change, the last one finished."""
        changed = threading.Event()
        unwatch = self._host.watch_job(job_id, changed.set)
        try:
            while True:
                changed.clear()
                job = self._host.job(job_id)
                yield job.to_dict()
                if job.finished:
                    return
                changed.wait(1.0)
        finally:
            unwatch()

    def __enter__(self) -> LocalHost:
        self._host.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._host.close()


def _body(tool: str, args: dict[str, Any], files: dict[str, bytes] | None) -> dict[str, Any]:
    """A run's or job's body for httpx: JSON, or multipart with ``files``."""
    body = {"tool": tool, "args": args}
    if not files:
        return {"json": body}
    parts = {name: (name, data, "application/octet-stream") for name, data in files.items()}
    return {"data": {"request": json.dumps(body)}, "files": parts}


def _with_files(args: dict[str, Any], files: dict[str, bytes] | None) -> dict[str, Any]:
    """``args`` with the ``{"$blob": NAME}`` references to ``files`` resolved
    (as the server resolves a multipart body's)."""
    if not files:
        return args
    try:
        resolved: dict[str, Any] = with_parts(
            args, {name: memoryview(data) for name, data in files.items()}, set()
        )
    except ValueError as exc:
        raise ServerError(422, str(exc), "InvalidRequest") from None
    return resolved
