"""Fault injection for plugin tests: make a plugin's Nth call crash, hang,
blow its memory limit, raise... in the real worker (see
:mod:`plugwarden.isolation.injection`), and fake the GPU the pre-flight sees.

The plan is a file named by ``PLUGWARDEN_FAULTS`` in the environment the
host's workers start with: make the :class:`FaultPlan` (or use the
``plugwarden_faults`` fixture) *before* the host starts.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from plugwarden.isolation.injection import FAULTS_ENV, KINDS
from plugwarden.isolation.nvml import FAKE_NVML_ENV
from plugwarden.preflight.gpu import FAKE_GPU_ENV, FAKE_GPUS

__all__ = ["KINDS", "FakeNvml", "FaultPlan", "fake_gpu"]


class FaultPlan:
    """The faults to inject, in a plan file; :meth:`activate` points
    ``PLUGWARDEN_FAULTS`` at it (restored by :meth:`deactivate`)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._faults: list[dict[str, Any]] = []
        self._previous: str | None = None
        self._write()

    def activate(self) -> FaultPlan:
        self._previous = os.environ.get(FAULTS_ENV)
        os.environ[FAULTS_ENV] = str(self.path)
        return self

    def deactivate(self) -> None:
        if self._previous is None:
            os.environ.pop(FAULTS_ENV, None)
        else:
            os.environ[FAULTS_ENV] = self._previous

    def inject(
        self,
        plugin: str,
        kind: str,
        *,
        hook: str = "run",
        call: int = 1,
        every: bool = False,
        once: bool | None = None,
        **params: Any,
    ) -> None:
        """From now on, ``plugin``'s ``call``-th call of ``hook`` (0: every
        call) does ``kind``, in the first worker to make that call only: a
        replacement worker is not faulted again. ``every=True``: in every
        worker, replacements included (a crash loop). (``once``, older: the
        same as ``not every``.)

        - ``crash`` (SIGSEGV), ``exit`` (``code``, default 3), ``signal``
          (``signal``, default SIGKILL): the worker dies;
        - ``hang``: never returns; ``slow``: sleeps ``seconds`` (1) first;
        - ``memory``: allocates until the memory guard kills the worker;
        - ``raise``: RuntimeError(``message``); ``unserialisable``: returns
          an object that is not JSON;
        - ``flood``: prints ``lines`` (100000) lines first; ``child``:
          leaves a detached child process behind, then answers."""
        if kind not in KINDS:
            raise ValueError(f"Unknown fault {kind!r}; one of {', '.join(KINDS)}")
        if isinstance(call, bool) or not isinstance(call, int) or call < 0:
            raise ValueError(f"call must be a whole number >= 0 (0: every call), got {call!r}")
        once = not every if once is None else once
        fault = {"plugin": plugin, "kind": kind, "hook": hook, "call": call, "once": once}
        self._faults.append(fault | params)
        self._write()

    @contextmanager
    def injected(self, plugin: str, kind: str, **options: Any) -> Iterator[None]:
        """:meth:`inject` for the ``with`` block only."""
        self.inject(plugin, kind, **options)
        try:
            yield
        finally:
            self._faults.pop()
            self._write()

    def clear(self) -> None:
        self._faults.clear()
        self._write()

    def _write(self) -> None:
        # Written aside then renamed: a worker never reads half a plan.
        temporary = self.path.with_name(self.path.name + ".tmp")
        temporary.write_text(json.dumps(self._faults), encoding="utf-8")
        os.replace(temporary, self.path)


@contextmanager
def fake_gpu(kind: str) -> Iterator[None]:
    """Make the GPU pre-flight of hosts started in the block see ``kind``:
    ``none`` (no GPU: UNAVAILABLE), ``present`` (a working CUDA GPU),
    ``broken-driver`` (FAILED) or ``no-cuda`` (UNAVAILABLE). Only the
    pre-flight is fooled: a plugin's own CUDA calls still see this machine."""
    if kind not in FAKE_GPUS:
        raise ValueError(f"Unknown fake GPU {kind!r}; one of {', '.join(FAKE_GPUS)}")
    previous = os.environ.get(FAKE_GPU_ENV)
    os.environ[FAKE_GPU_ENV] = kind
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(FAKE_GPU_ENV, None)
        else:
            os.environ[FAKE_GPU_ENV] = previous


class FakeNvml:
    """What NVML shows hosts started in a ``with`` block
    (docs/guides/gpu.md): GPUs of ``gpus_mb`` MiB each, the GPU memory used
    per process as the test sets it (a process id as the host sees it:
    ``host.worker_pids(name)``), Xid events and memory repairs, written to
    ``path``; and the driver's Xid lines in a kernel log beside it (none
    readable when ``kernel_log`` is false). Only the host's GPU guard and
    placement are fooled; a plugin's own CUDA calls see this machine."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        gpus_mb: tuple[float, ...] = (81920,),
        kernel_log: bool = True,
    ):
        self.path = Path(path)
        self.kernel_log_path = self.path.with_suffix(".kmsg")
        self.gpus: list[dict[str, Any]] = [
            {
                "name": f"Fake GPU {index}", "bus": f"0000:{index + 1:02x}:00",
                "uuid": f"GPU-{index:08x}-fake-4000-8000-000000000000",
                "total": int(mb * 2**20), "used": 0, "processes": {},
            }
            for index, mb in enumerate(gpus_mb)
        ]  # fmt: skip
        self.events: list[dict[str, Any]] = []
        self._logs = kernel_log
        self._sequence = 0
        self._previous: str | None = None

    def use(self, pid: int, mb: float, gpu: int = 0) -> None:
        """Show process ``pid`` using ``mb`` MiB of GPU ``gpu`` (0: none)."""
        processes = self.gpus[gpu]["processes"]
        if mb:
            processes[str(pid)] = int(mb * 2**20)
        else:
            processes.pop(str(pid), None)
        self._write()

    def others(self, gpu: int, mb: float) -> None:
        """Show ``mb`` MiB of GPU ``gpu`` used by processes of no worker."""
        self.gpus[gpu]["used"] = int(mb * 2**20)
        self._write()

    def xid(self, gpu: int, xid: int, pid: int | None = None) -> None:
        """Report Xid ``xid`` on GPU ``gpu`` as the driver does: a kernel log
        line naming process ``pid`` (None: ``pid='<unknown>'``), then an NVML
        event (which names no process)."""
        self._sequence += 1
        named = "'<unknown>', name=<unknown>" if pid is None else f"{pid}, name=python3"
        line = (
            f"4,{self._sequence},{self._sequence * 1000},-;NVRM: Xid "
            f"(PCI:{self.gpus[gpu]['bus']}): {xid}, pid={named}, Ch 00000008\n"
        )
        with self.kernel_log_path.open("a", encoding="utf-8") as log:
            log.write(line)
        self.events.append({"gpu": gpu, "xid": xid})
        self._write()

    def repairs(
        self, gpu: int, remapped_rows: int = 0, pending: bool = False, failed: bool = False
    ) -> None:
        """Show GPU ``gpu``'s memory repairs: rows remapped, a remapping that
        waits for a reset (``pending``), one that failed."""
        self.gpus[gpu].update(
            remapped_rows=remapped_rows, remap_pending=pending, remap_failed=failed
        )
        self._write()

    def _write(self) -> None:
        temporary = self.path.with_suffix(".tmp")
        state: dict[str, Any] = {"gpus": self.gpus, "events": self.events}
        # A log the host cannot read: a path with nothing there.
        readable = self.kernel_log_path if self._logs else self.path.with_suffix(".unreadable")
        state["kernel_log"] = str(readable)
        temporary.write_text(json.dumps(state), encoding="utf-8")
        temporary.replace(self.path)  # a sweep reads it whole or not at all

    def __enter__(self) -> FakeNvml:
        self.kernel_log_path.touch()
        self._write()
        self._previous = os.environ.get(FAKE_NVML_ENV)
        os.environ[FAKE_NVML_ENV] = str(self.path)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is None:
            os.environ.pop(FAKE_NVML_ENV, None)
        else:
            os.environ[FAKE_NVML_ENV] = self._previous
