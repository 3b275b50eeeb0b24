"""Where a stuck call was stuck (docs/guides/isolation.md): before the host kills
a worker whose call ran past its timeout, it asks the worker for its Python
stacks (``faulthandler`` on :data:`STACKS_SIGNAL`, every thread, written to
the worker's output), waits for them a moment (bounded in time and size),
logs them, and names the innermost frame of the plugin's own code, and the
innermost frame of all, in the reason.

faulthandler writes from its signal handler without the GIL: a worker busy
in C code (a read, a lock) still answers.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from plugwarden.isolation.process.handle import WorkerProcess

__all__ = ["STACKS_SIGNAL", "stuck_at", "take_stacks"]

log = logging.getLogger("plugwarden.stacks")

STACKS_SIGNAL = signal.SIGRTMIN + 7  # a real-time signal no library claims
WAIT_S = 2.0  # for the dump to arrive
QUIET_S = 0.1  # no new line for this long: the dump is complete
MAX_LINES = 400
_FRAME = re.compile(r'\s*File "(?P<file>.*)", line (?P<line>\d+) in (?P<function>.*)')


def take_stacks(worker: WorkerProcess) -> list[str]:
    """The worker's stacks as faulthandler wrote them (empty: it did not
    answer in time, or is gone). Logged as one record."""
    tail = worker.tail
    tail.start_capture(MAX_LINES)
    try:
        os.kill(worker.pid, STACKS_SIGNAL)
    except OSError:
        tail.stop_capture()
        return []
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        quiet = tail.quiet_for()
        if tail.captured_count() and quiet is not None and quiet >= QUIET_S:
            break
        time.sleep(0.02)
    lines = tail.stop_capture()
    if lines:
        log.warning("worker %s: its stacks before it was killed:\n%s", worker.label,
                    "\n".join(lines))  # fmt: skip
    return lines


def stuck_at(lines: Sequence[str], package_dir: Path | None) -> str | None:
    """ "in track at pipeline.py:88, in read at cv2/io.py:12": the innermost
    frame of the plugin's own code (under ``package_dir``) in the thread that
    was current, then the innermost frame of all when it differs."""
    frames = []
    for line in _current_thread(lines):
        found = _FRAME.match(line)
        if found:
            frames.append((found["file"], int(found["line"]), found["function"]))
    if not frames:
        return None
    home = os.path.realpath(package_dir) if package_dir is not None else None
    own = next((f for f in frames if home and os.path.realpath(f[0]).startswith(home)), None)
    parts = [f for f in (own, frames[0]) if f is not None]
    if len(parts) == 2 and parts[0] == parts[1]:
        parts = parts[:1]
    return ", ".join(
        f"in {function} at {_short(file, home)}:{line}" for file, line, function in parts
    )


def _current_thread(lines: Sequence[str]) -> list[str]:
    """The lines of the thread the signal interrupted (faulthandler marks it
    "Current thread"), else of the first thread."""
    blocks: list[list[str]] = []
    for line in lines:
        if line.startswith(("Thread 0x", "Current thread 0x")):
            blocks.append([line])
        elif blocks:
            blocks[-1].append(line)
    current = [block for block in blocks if block[0].startswith("Current thread")]
    return (current or blocks or [[]])[0]


def _short(file: str, home: str | None) -> str:
    """A frame's file as a reader finds it: relative to the plugin's package,
    else its last two path parts."""
    real = os.path.realpath(file)
    if home and real.startswith(home + os.sep):
        return os.path.relpath(real, os.path.dirname(home))
    return os.path.join(*Path(file).parts[-2:]) if len(Path(file).parts) > 1 else file
