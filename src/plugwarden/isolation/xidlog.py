"""Which process an Xid hit (docs/guides/gpu.md#gpu-faults). NVML's Xid
events name a GPU, not a process; the driver's own line in the kernel log
names both: ``NVRM: Xid (PCI:0000:3b:00): 31, pid=1234, name=python3, ...``
(``pid='<unknown>'`` where it cannot tell). :class:`XidAttribution` reads
those lines as they come (``/dev/kmsg``: root, or ``CAP_SYSLOG`` where
``kernel.dmesg_restrict`` is set) and gives each event the process its line
names, so that an Xid recycles only the worker that caused it. Where the
log cannot be read, an event names no process and recycles every worker on
its GPU, and :attr:`XidAttribution.state` says so."""

from __future__ import annotations

import dataclasses
import os
import re
import time
from dataclasses import dataclass

from plugwarden.isolation.nvml import XidEvent, pci_bus

__all__ = [
    "ATTRIBUTION_S",
    "LINES_KEPT",
    "WAITING_MAX",
    "LoggedXid",
    "XidAttribution",
    "XidLog",
    "parse",
]

# How long an event waits for its line (the driver writes both at once), and
# how long a line waits for its event.
ATTRIBUTION_S = 1.0
LINE_KEEP_S = 10.0
READS_PER_SWEEP = 4096  # a flood of kernel messages cannot hold a sweep up
# An Xid storm (a GPU can report thousands a second) keeps only the newest
# lines, and events past these wait for none: they go at once, GPU-wide.
LINES_KEPT = 1024
WAITING_MAX = 64
# A /dev/kmsg record: "PRIORITY,SEQUENCE,MICROSECONDS,FLAGS[,...];MESSAGE". Its
# priority is facility * 8 + level, and the kernel gives every line written from
# user space a facility other than its own (0): only a driver's line is below 8.
_RECORD = re.compile(r"(\d+),\d+,\d+,[^;]*;(.*)")
_XID = re.compile(
    r"NVRM: Xid \(PCI:([0-9A-Fa-f]+:[0-9A-Fa-f]+:[0-9A-Fa-f]+)[^)]*\): (\d+)"
    r"(?:, pid='?(\d+|<unknown>)'?)?"
)


@dataclass(frozen=True, slots=True)
class LoggedXid:
    """An Xid line of the kernel log: the GPU's PCI address, the Xid, the
    process it names (None: unknown to the driver)."""

    bus: str
    xid: int
    pid: int | None


def parse(record: str) -> LoggedXid | None:
    """The Xid a kernel log record reports, if the kernel wrote it and it
    reports one (a process that writes to /dev/kmsg cannot name another's
    worker as the culprit of the next Xid)."""
    kernel = _RECORD.match(record)
    if kernel is None or int(kernel[1]) >= 8:
        return None
    found = _XID.match(kernel[2])
    if found is None:
        return None
    bus, xid, pid = found.groups()
    return LoggedXid(pci_bus(bus), int(xid), int(pid) if pid and pid.isdigit() else None)


class XidLog:
    """The Xid lines written to ``path`` (``/dev/kmsg``, one record a read;
    or a plain file, as tests write one) from now on."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._rest = b""  # a line not yet whole (a plain file)
        try:
            self._fd: int | None = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            os.lseek(self._fd, 0, os.SEEK_END)  # only what comes from now on
        except OSError as exc:
            self._fd = None
            self.problem = f"{path}: {exc.strerror or exc}"
        else:
            self.problem = ""

    def read(self) -> list[LoggedXid]:
        """The Xid lines written since the last read."""
        if self._fd is None:
            return []
        chunks = []
        for _ in range(READS_PER_SWEEP):
            try:
                chunk = os.read(self._fd, 16384)  # /dev/kmsg: one whole record
            except BlockingIOError:  # /dev/kmsg: nothing new
                break
            except BrokenPipeError:  # /dev/kmsg: records overwritten before read; go on
                continue
            except OSError:
                break
            if not chunk:  # a plain file: its end
                break
            chunks.append(chunk)
        lines = (self._rest + b"".join(chunks)).split(b"\n")
        self._rest = lines.pop()
        found = (parse(line.decode("utf-8", "replace")) for line in lines)
        return [logged for logged in found if logged is not None]

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class XidAttribution:
    """Gives NVML's Xid events the process the kernel log names: an event
    waits (at most :data:`ATTRIBUTION_S`) for its line."""

    def __init__(self, path: str | None, why_not: str = "") -> None:
        self._log = XidLog(path) if path else None
        if self._log is None:
            self.state = f"per GPU: {why_not or 'no kernel log is known'}"
        elif self._log.problem:
            self.state = f"per GPU: the driver's Xid lines cannot be read ({self._log.problem})"
            self._log = None
        else:
            self.state = f"per process (the driver's Xid lines in {path})"
        self._waiting: list[tuple[float, XidEvent]] = []
        self._lines: list[tuple[float, LoggedXid]] = []

    def resolve(
        self, events: list[XidEvent], buses: dict[int, str], now: float | None = None
    ) -> list[XidEvent]:
        """The events to act on now (``buses``: GPU index -> PCI address),
        each with the process its line names where there is one; an event
        whose line has not come yet waits, up to its time."""
        if self._log is None:
            return events
        now = time.monotonic() if now is None else now
        self._lines = [(t, line) for t, line in self._lines if now - t < LINE_KEEP_S]
        self._lines += [(now, line) for line in self._log.read()]
        del self._lines[:-LINES_KEPT]
        waiting, self._waiting, ready = self._waiting + [(now, e) for e in events], [], []
        for arrived, event in waiting:
            line = self._take(buses.get(event.gpu, ""), event.xid)
            if line is not None:
                ready.append(dataclasses.replace(event, pid=line.pid))
            elif now - arrived >= ATTRIBUTION_S or len(self._waiting) >= WAITING_MAX:
                ready.append(event)  # no line came (or a storm): every worker on its GPU
            else:
                self._waiting.append((arrived, event))
        return ready

    def _take(self, bus: str, xid: int) -> LoggedXid | None:
        for index, (_, line) in enumerate(self._lines):
            if line.xid == xid and line.bus == bus:
                del self._lines[index]
                return line
        return None

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
