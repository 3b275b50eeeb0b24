"""Baseline server: a plain Starlette app answering the same JSON from constants.

``python _serve_constant.py PORT LIST_JSON_FILE HEALTH_JSON_FILE``
"""

from __future__ import annotations

import json
import sys

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


def main() -> None:
    port = int(sys.argv[1])
    with open(sys.argv[2]) as listing, open(sys.argv[3]) as single:
        plugins, health = json.load(listing), json.load(single)

    async def all_plugins(request: Request) -> JSONResponse:
        return JSONResponse(plugins)

    async def one(request: Request) -> JSONResponse:
        return JSONResponse(health)

    app = Starlette(
        routes=[Route("/v1/plugins", all_plugins), Route("/v1/plugins/{name}/health", one)]
    )
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
