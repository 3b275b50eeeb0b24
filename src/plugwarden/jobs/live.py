"""A job in motion as the queue holds it (:class:`Live`), and the lane of
jobs it waits in (:class:`Lane`): one per plugin, one for the host's own."""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from plugwarden.isolation.reporting import CallControl
from plugwarden.jobs.job import Job
from plugwarden.result import CallResult

__all__ = ["HOST_LANE", "HostWork", "Lane", "Live", "Watcher"]

Watcher = Callable[[], None]


# A job of the host's own (an install...): its work, given the job's control.
HostWork = Callable[[CallControl], CallResult]
HOST_LANE = "\0host"  # the lane of the host's own jobs: one at a time


@dataclass(slots=True, eq=False)
class Live:
    job: Job
    control: CallControl
    watchers: list[Watcher] = field(default_factory=list)
    lane: str = ""  # its lane's key: the plugin's name, or HOST_LANE
    work: HostWork | None = None  # None: a call of the plugin's tool
    # The call's args with their binary values, until it runs (the job's own
    # args, stored, only describe them)
    payload: dict[str, Any] | None = None


@dataclass(slots=True)
class Lane:
    """One plugin's queue, how many threads run its jobs, and how to wake
    an idle one (a condition on the queue's lock)."""

    wake: threading.Condition
    queued: collections.deque[Live] = field(default_factory=collections.deque)
    active: int = 0
