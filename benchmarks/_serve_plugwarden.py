"""Benchmark server: plugwarden over SITE on PORT, with background callers.

``python _serve_plugwarden.py SITE PORT CALLERS [hang]``: CALLERS threads each
call a plugin every 10 ms (background traffic); with ``hang``, one more thread
keeps a call to the ``hang`` plugin in flight.
"""

from __future__ import annotations

import itertools
import sys
import threading
import time

import uvicorn

from plugwarden import Host
from plugwarden.web.server import build, uvicorn_config


def main() -> None:
    site, port, callers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    hang = len(sys.argv) > 4 and sys.argv[4] == "hang"
    # The hung plugin's manifest asks for an hour; the operator grants it.
    host = Host({"plugins": {"hang": {"timeout_s": 3600}}}, search_path=[site])
    app = build(host, host.config)

    def keep_calling(offset: int) -> None:
        names = [n for n in sorted(host.names()) if n.startswith("p")]
        for name in itertools.cycle(names[offset::2] or names):
            host.call(name, "t", {"x": 1})
            time.sleep(0.01)  # pacing: background traffic, not a CPU hog

    def start_traffic() -> None:
        while not host.started:
            time.sleep(0.05)
        for index in range(callers):
            threading.Thread(target=keep_calling, args=(index,), daemon=True).start()
        if hang:
            threading.Thread(target=host.call, args=("hang", "t", {}), daemon=True).start()

    threading.Thread(target=start_traffic, daemon=True).start()
    # serve's own uvicorn settings (the guarded h11 protocol, bounded connections).
    config = uvicorn_config(app, host.config, host="127.0.0.1", port=port, log_level="warning")
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
