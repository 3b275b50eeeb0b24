"""Baseline server: a plain Starlette app answering the same JSON.

``python _serve_constant.py PORT LIST_JSON_FILE HEALTH_JSON_FILE [encode]``:
the bodies are encoded once, at start (the honest baseline: what serving
cached bytes costs); with ``encode``, JSONResponse encodes the parsed JSON
again on every request.
"""

from __future__ import annotations

import json
import sys

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


def main() -> None:
    port = int(sys.argv[1])
    encode = len(sys.argv) > 4 and sys.argv[4] == "encode"
    with open(sys.argv[2]) as listing, open(sys.argv[3]) as single:
        plugins, health = json.load(listing), json.load(single)
    listed = JSONResponse(plugins).body
    one_body = JSONResponse(health).body

    async def all_plugins(request: Request) -> Response:
        if encode:
            return JSONResponse(plugins)
        return Response(listed, media_type="application/json")

    async def one(request: Request) -> Response:
        if encode:
            return JSONResponse(health)
        return Response(one_body, media_type="application/json")

    app = Starlette(
        routes=[Route("/v1/plugins", all_plugins), Route("/v1/plugins/{name}/health", one)]
    )
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
