"""How one exchange with a worker ended, and why the host killed a worker:
typed names, as :class:`~plugwarden.ErrorType`'s are (an enum's member
costs ~0.2 us a lookup here, and a call makes several)."""

from __future__ import annotations

from typing import Final, Literal

__all__ = ["Fate", "FateName", "KillCause", "KillCauseName"]

FateName = Literal[
    "sent", "reply", "message", "timeout", "died", "oversize", "violation", "unsendable", "shed"
]
KillCauseName = Literal[
    "timeout", "memory", "tasks", "cancel", "close", "protocol", "gpu_memory", "gpu_fault"
]


class Fate:
    """How one send, or one wait for a frame, on a worker's connection ended."""

    SENT: Final = "sent"
    REPLY: Final = "reply"  # a whole frame arrived (its bytes, not yet checked)
    MESSAGE: Final = "message"  # a reply, checked: the one the request waits for
    TIMEOUT: Final = "timeout"  # the call's deadline passed first
    DIED: Final = "died"  # the worker's end closed
    OVERSIZE: Final = "oversize"  # a frame's head announced more than the cap
    VIOLATION: Final = "violation"  # anything else the wire does not allow
    UNSENDABLE: Final = "unsendable"  # the arguments would not pickle: nothing was sent
    SHED: Final = "shed"  # a long reply read and dropped: the host's result memory was full


class KillCause:
    """Why the host killed a worker (a guard's trip, or its own decision)."""

    TIMEOUT: Final = "timeout"
    MEMORY: Final = "memory"
    TASKS: Final = "tasks"  # the zygote's sweep counted more than max_tasks
    CANCEL: Final = "cancel"  # a job's cancel, forced after its grace
    CLOSE: Final = "close"  # the runner closed
    PROTOCOL: Final = "protocol"  # it broke the protocol
    GPU_MEMORY: Final = "gpu_memory"  # its tree's GPU memory (NVML) passed gpu_memory_mb
    GPU_FAULT: Final = "gpu_fault"  # an Xid on its GPU (or of its process)
