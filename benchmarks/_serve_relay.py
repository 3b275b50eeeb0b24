"""Baseline server for the result-memory benchmark: the same JSON made by
a child process, read into one buffer and answered as it is (no checks, no
isolation): what relaying a result costs at the least.

``python _serve_relay.py PORT``: ``GET /run?n=N`` answers ``[{},...]`` of N
objects, made by the child for each request.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import threading

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

CHILD = (
    "import json, struct, sys\n"
    "for line in sys.stdin:\n"
    "    data = json.dumps([{}] * int(line), separators=(',', ':')).encode()\n"
    "    sys.stdout.buffer.write(struct.pack('!Q', len(data)) + data)\n"
    "    sys.stdout.buffer.flush()\n"
)


def _fill(fd: int, buffer: bytearray) -> None:
    view, got = memoryview(buffer), 0
    while got < len(buffer):
        read = os.readv(fd, [view[got:]])
        if not read:
            raise EOFError("the child ended")
        got += read


def main() -> None:
    child = subprocess.Popen(  # unbuffered: the reads below go straight to the pipe
        [sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0
    )
    lock = threading.Lock()

    def made(n: int) -> bytearray:
        assert child.stdin is not None and child.stdout is not None
        with lock:
            child.stdin.write(f"{n}\n".encode())
            child.stdin.flush()
            head = bytearray(8)
            _fill(child.stdout.fileno(), head)
            data = bytearray(struct.unpack("!Q", head)[0])
            _fill(child.stdout.fileno(), data)
            return data

    async def run(request: Request) -> Response:
        data = await run_in_threadpool(made, int(request.query_params["n"]))
        return Response(bytes(data), media_type="application/json")

    app = Starlette(routes=[Route("/run", run)])
    json.dumps({})  # the same imports as the host's answer path
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")


if __name__ == "__main__":
    main()
