"""The routes that probes and dashboards poll, answered from cached bytes.

``GET /v1/plugins/{name}/health`` is the plugin's cached record, read
without the registry's lock; only its uptime is formatted per request.
``GET /v1/plugins`` is one cached body. A change of state, reason, health
or info rebuilds it on the next request; calls (in flight, RUNNING, the
counters), uptimes and worker memory rebuild it by age, so in the list they
are at most ``LIST_MAX_AGE_S`` old (a plugin's own record is always
current). A rebuild reuses each plugin's piece unless its record, its
memory figure or its age moved on.

:class:`PolledRoutesApp` answers both ahead of Starlette's middleware and
router, which cost more than the answer itself; whatever it cannot answer
from the caches (an unknown plugin, a record changed since it was last
read, a stale list) goes the normal way, through the routes in ``app.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.types import Receive, Scope, Send

from plugwarden.host.status import PluginStatus

if TYPE_CHECKING:  # the app is handed a Host; it never makes one
    from plugwarden.host.host import Host

__all__ = ["LIST_MAX_AGE_S", "Listing", "PolledRoutesApp"]

LIST_MAX_AGE_S = 0.1

_PREFIX = "/v1/plugins/"
_HEALTH = "/health"


class Listing:
    """The cached list body and health records of one host's plugins. Used
    from the event loop only (one thread), so it holds no lock."""

    def __init__(self, host: Host) -> None:
        self._host = host
        self._version = -1
        self._oldest = 0.0  # when the oldest piece in the body was formatted
        self._body = b""
        # name -> (the record, its memory figure, when formatted, the JSON)
        self._pieces: dict[str, tuple[PluginStatus, int | None, float, str]] = {}

    def fresh(self) -> bytes | None:
        """The list body, if no state changed since it was built and it is
        young enough; else None (read the statuses and :meth:`build`)."""
        if self._host.records_version != self._version:
            return None
        if time.monotonic() - self._oldest >= LIST_MAX_AGE_S:
            return None
        return self._body

    def build(self, version: int, statuses: list[PluginStatus]) -> bytes:
        """The list body for ``statuses``, read at registry ``version`` (read
        the version first: a change in between only makes the next request
        rebuild again)."""
        now = time.monotonic()
        memory = self._host.memory_seen()
        old, pieces = self._pieces, {}
        # Half the age limit: pieces formatted at different times would
        # otherwise expire one after another, a rebuild per request.
        renew = now - LIST_MAX_AGE_S / 2
        for status in statuses:
            rss = memory.get(status.name)
            piece = old.get(status.name)
            if piece is None or piece[0] is not status or piece[1] != rss or piece[2] < renew:
                piece = (status, rss, now, _piece(status, rss))
            pieces[status.name] = piece
        self._pieces = pieces
        self._body = ("[" + ",".join(p[3] for p in pieces.values()) + "]").encode()
        self._oldest = min((p[2] for p in pieces.values()), default=now)
        self._version = version
        return self._body

    def health(self, name: str) -> bytes | None:
        """``name``'s full record, if the registry has it cached; else None."""
        status = self._host.cached_status(name)
        return None if status is None else status.to_json().encode()

    def answer(self, path: str) -> bytes | None:
        """The body for a GET of ``path``, when the caches have it."""
        if path == "/v1/plugins":
            return self.fresh()
        if path.startswith(_PREFIX) and path.endswith(_HEALTH):
            name = path[len(_PREFIX) : -len(_HEALTH)]
            if name and "/" not in name:
                return self.health(name)
        return None


def _piece(status: PluginStatus, rss: int | None) -> str:
    """One plugin's list entry: its cached JSON (no history) with the uptime
    and the workers' memory filled in."""
    head, tail = status.json_parts(history=False)
    memory = "null" if rss is None else str(rss)
    return f'{head}{status.uptime_seconds!r}{tail[:-1]},"worker_resident_bytes":{memory}}}'


class PolledRoutesApp(Starlette):
    """Starlette, with the GETs :class:`Listing` can answer from its caches
    served before the middleware stack and the router."""

    listing: Listing | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        listing = self.listing
        if (
            listing is not None
            and scope["type"] == "http"
            and scope["method"] == "GET"
            and not scope.get("root_path")
        ):
            body = _answer(listing.answer, scope["path"])
            if body is not None:
                headers = [
                    (b"content-length", str(len(body)).encode()),
                    (b"content-type", b"application/json"),
                ]
                await send({"type": "http.response.start", "status": 200, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
        await super().__call__(scope, receive, send)


def _answer(answer: Callable[[str], bytes | None], path: str) -> bytes | None:
    """``answer(path)``; None if it fails: the normal route then answers,
    or reports the error as every route does."""
    try:
        return answer(path)
    except Exception:  # noqa: BLE001 - the normal route handles it
        return None
