"""Workers' stdout and stderr into the host's log, tagged with the plugin.

One thread reads every worker's output pipe. Memory stays bounded whatever a
plugin prints: lines are cut at ``LINE_LIMIT`` characters, each worker keeps
only its last ``TAIL`` lines (quoted when it dies), and past ``RATE`` lines a
second the rest are counted, not logged.
"""

from __future__ import annotations

import collections
import logging
import os
import selectors
import threading
import time

from plugwarden.logs import parse_record

__all__ = ["OutputPump", "OutputTail"]

log = logging.getLogger("plugwarden.output")

LINE_LIMIT = 8000  # a worker's log record with its traceback is one line
TAIL = 20
RATE = 200


class OutputTail:
    """What one worker printed: its last lines, and what was dropped."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.lines: collections.deque[str] = collections.deque(maxlen=TAIL)
        self.logger = logging.getLogger(f"plugwarden.plugin.{label}")
        self._partial = b""
        self._window = 0.0
        self._in_window = 0
        self.dropped = 0
        self.closed = threading.Event()
        # A capture in progress (stacks asked for): its lines, not logged one by one.
        self._capture_lock = threading.Lock()
        self._capture: list[str] | None = None
        self._capture_limit = 0
        self._captured_at: float | None = None

    def start_capture(self, limit: int) -> None:
        """Keep the next lines (at most ``limit``) for :meth:`stop_capture`."""
        with self._capture_lock:
            self._capture, self._capture_limit, self._captured_at = [], limit, None

    def captured_count(self) -> int:
        with self._capture_lock:
            return len(self._capture or ())

    def quiet_for(self) -> float | None:
        """Seconds since the last captured line (None: none yet)."""
        with self._capture_lock:
            at = self._captured_at
        return None if at is None else time.monotonic() - at

    def stop_capture(self) -> list[str]:
        with self._capture_lock:
            lines, self._capture = self._capture or [], None
        return lines

    def feed(self, data: bytes) -> None:
        data = self._partial + data
        *complete, self._partial = data.split(b"\n")
        if len(self._partial) > LINE_LIMIT:
            complete.append(self._partial)
            self._partial = b""
        for raw in complete:
            self._line(raw.decode("utf-8", "replace").rstrip("\r"))

    def flush(self) -> None:
        if self._partial:
            self._line(self._partial.decode("utf-8", "replace"))
            self._partial = b""
        if self.dropped:
            self.logger.warning("[%d more lines not logged]", self.dropped)
            self.dropped = 0

    def _line(self, line: str) -> None:
        if len(line) > LINE_LIMIT:
            line = line[:LINE_LIMIT] + f"... [{len(line) - LINE_LIMIT} more characters]"
        with self._capture_lock:
            if self._capture is not None:
                if len(self._capture) < self._capture_limit:
                    self._capture.append(line)
                self._captured_at = time.monotonic()
                return
        record = parse_record(line)
        level, text = logging.INFO, line
        if record is not None:
            level, logger, message = record
            text = f"{logger}: {message}"
        self.lines.append(text.split("\n", 1)[0])  # quoted in reasons: never a traceback
        now = time.monotonic()
        if now - self._window >= 1.0:
            if self.dropped:
                self.logger.warning("[%d lines not logged: over %d a second]", self.dropped, RATE)
            self._window, self._in_window, self.dropped = now, 0, 0
        self._in_window += 1
        if self._in_window > RATE:
            self.dropped += 1
            return
        self.logger.log(level, "%s", text)

    def last_line(self) -> str | None:
        return self.lines[-1] if self.lines else None


class OutputPump:
    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._lock = threading.Lock()
        self._adds: list[tuple[int, OutputTail]] = []
        self._wake_r, self._wake_w = os.pipe()
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._thread: threading.Thread | None = None
        self._stopped = False

    def add(self, fd: int, tail: OutputTail) -> None:
        """Read ``fd`` until EOF into ``tail``; the pump closes ``fd``."""
        with self._lock:
            if self._stopped:
                os.close(fd)
                return
            self._adds.append((fd, tail))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="plugwarden-output", daemon=True
                )
                self._thread.start()
        os.write(self._wake_w, b"x")

    def _run(self) -> None:
        while not self._stopped:
            for key, _ in self._selector.select():
                if self._stopped:
                    break
                if key.fd == self._wake_r:
                    os.read(self._wake_r, 4096)
                    with self._lock:
                        adds, self._adds = self._adds, []
                    for fd, tail in adds:
                        self._selector.register(fd, selectors.EVENT_READ, tail)
                    continue
                tail = key.data
                try:
                    data = os.read(key.fd, 65536)
                except OSError:
                    data = b""
                if data:
                    try:
                        tail.feed(data)
                    # This thread reads every worker's output: whatever one
                    # worker printed is logged against it, never its end.
                    except Exception:
                        log.exception("output of %r not logged", tail.label)
                    continue
                self._selector.unregister(key.fd)
                os.close(key.fd)
                tail.flush()
                tail.closed.set()

    def close(self) -> None:
        """Stop the thread, flush every tail and close every pipe it held."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            thread = self._thread
            adds, self._adds = self._adds, []
        if thread is not None:
            os.write(self._wake_w, b"x")
            thread.join()
        for fd, tail in adds:
            os.close(fd)
            tail.flush()
        for key in list(self._selector.get_map().values()):
            if key.fd != self._wake_r:
                os.close(key.fd)
                key.data.flush()
        self._selector.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
