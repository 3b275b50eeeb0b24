"""The guard values in force for one plugin (docs/guides/isolation.md), every layer
merged: host defaults, the manifest, the operator's config.

A module of its own, apart from the guards that enforce them, so that
reading a config does not import wrapt (start time; docs/benchmarks.md).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Limits"]


@dataclass(frozen=True, slots=True)
class Limits:
    """The guard values in force for one plugin, every layer merged."""

    timeout_s: float = 60.0
    load_timeout_s: float = 120.0
    memory_mb: float = 1024.0
    isolation: str = "process"
    workers: int = 1
    max_result_bytes: int = 64 * 2**20  # a result (or health report) past it: ResultTooLarge
    job_timeout_s: float = 3600.0  # a job's run, like timeout_s for a synchronous call
    max_tasks: int = 512  # threads plus processes of a worker's tree; past it: TaskLimitExceeded
    sandbox: bool = True  # the operator's: false runs its workers unconfined
    worker_user: str = ""  # the operator's: as root, the user its workers run as ("": the host's)
    gpu_memory_mb: float = 0.0  # its workers' GPU memory (NVML) past it: killed (0: no budget)
