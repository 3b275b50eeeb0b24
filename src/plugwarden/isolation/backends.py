"""The runner factory: one place that makes a plugin's runner for its
isolation mode and owns the services runners share.

Process runners share the zygote (it forks the workers and reads their
memory between calls) and the output pump (workers' stdout and stderr into
the log); inline runners share an elastic executor and the host memory
watch; Ray runners share the host's link to the Ray cluster (Ray is
imported only then). Each
service starts its thread or process only when first used, and
:meth:`Backends.close` closes all of them: a closed host leaves no thread,
fd or process behind.
"""

from __future__ import annotations

import importlib
import sys
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from plugwarden.config import RayConfig
from plugwarden.error_types import ErrorType
from plugwarden.exceptions import LoadError
from plugwarden.isolation.executor import ElasticExecutor
from plugwarden.isolation.gpu import GpuWatch
from plugwarden.isolation.process.frames import ResultMemory
from plugwarden.isolation.process.output import OutputPump
from plugwarden.isolation.process.runner import ProcessRunner, ProcessServices
from plugwarden.isolation.process.sandbox import Sandbox
from plugwarden.isolation.process.zygote import Zygote
from plugwarden.isolation.runner import LossHandler, Runner
from plugwarden.plugin.discovery import PluginSource
from plugwarden.plugin.limits import Limits
from plugwarden.plugin.manifest import RAY_ISOLATIONS
from plugwarden.plugin.venv import PluginEnvironment
from plugwarden.settings import Placement

if TYPE_CHECKING:
    from plugwarden.isolation.inline import HostMemoryWatch
    from plugwarden.isolation.ray.cluster import RayCluster

__all__ = ["RAY_BACKEND", "Backends"]

# The optional Ray backend is found by name, as a plugin is: it stands above
# process isolation (its agent runs process workers on a node), not beneath
# the supervisor, and Ray is imported only when a plugin asks for it.
RAY_BACKEND = "plugwarden.isolation.ray.runner"


class Backends:
    """``zygote``: one already booting (``plugwarden serve`` starts it before
    importing the host), used for the process runners; closed with them."""

    def __init__(
        self,
        ray: RayConfig | None = None,
        zygote: Zygote | None = None,
        result_bytes: int = 512 * 2**20,
        blob_bytes: int = 64 * 2**20,
        gpu_release_timeout_s: float = 30.0,
    ) -> None:
        self._ray_config = ray or RayConfig()
        self._blob_bytes = blob_bytes  # each worker's room for binary arguments
        self._gpu_release_s = gpu_release_timeout_s
        self._result_bytes = result_bytes  # long replies held at once (server.result_memory_mb)
        self._zygote = zygote
        self._ray: RayCluster | None = None
        self._lock = threading.Lock()
        self._process: ProcessServices | None = None
        # The zygotes of plugins' own environments, and of plugins that preload.
        self._own: dict[tuple[str, tuple[str, ...], tuple[str, ...]], ProcessServices] = {}
        self._inline: tuple[ElasticExecutor, HostMemoryWatch] | None = None
        self._runners: weakref.WeakSet[Runner] = weakref.WeakSet()
        self._closed = False

    def make(
        self,
        source: PluginSource,
        limits: Limits,
        on_loss: LossHandler,
        placement: Placement | None = None,
        sandbox: Sandbox | None = None,
        preload: tuple[str, ...] = (),
    ) -> Runner:
        """A runner for ``source``; it reports each lost worker to ``on_loss``.
        ``sandbox``: its workers' confinement and environment (process
        isolation; an inline plugin shares the host's, outside all of it).
        A plugin in its own environment, or one that ``preload``s modules,
        gets a zygote of its own (its environment's Python, those modules
        imported)."""
        with self._lock:
            if self._closed:
                raise LoadError("The host is closing: no new workers.", ErrorType.CLOSED)
            runner: Runner
            # The inline and Ray runners are imported on first use: their guards
            # need wrapt, which a host of process plugins never imports.
            if limits.isolation == "inline":
                from plugwarden.isolation.inline import HostMemoryWatch, InlineRunner

                if self._inline is None:
                    self._inline = (ElasticExecutor(), HostMemoryWatch())
                executor, watch = self._inline
                runner = InlineRunner(source, limits, executor, watch, on_loss)
            elif limits.isolation in RAY_ISOLATIONS:
                ray = importlib.import_module(RAY_BACKEND)
                if self._ray is None:
                    self._ray = ray.RayCluster(self._ray_config)
                runner = ray.RayRunner(
                    source, limits, placement or Placement(), self._ray, on_loss, sandbox
                )
            else:
                services = self._services_for(source, preload)
                runner = ProcessRunner(
                    source, limits, services, on_loss, sandbox=sandbox, placement=placement
                )
            self._runners.add(runner)
            return runner

    def _process_services(self) -> ProcessServices:
        if self._process is None:
            self._process = ProcessServices(
                self._zygote or Zygote(),
                OutputPump(),
                ResultMemory(self._result_bytes),
                self._blob_bytes,
                GpuWatch(release_timeout_s=self._gpu_release_s),
            )
        return self._process

    def _services_for(self, source: PluginSource, preload: tuple[str, ...]) -> ProcessServices:
        shared = self._process_services()
        environment = source.environment
        if environment is None and not preload:
            return shared
        if environment is not None:  # the host's worker side alone (runtime.py)
            python, path = environment.python, [environment.runtime]
        else:
            python, path = sys.executable, [*sys.path, *source.search_path]
        key = (python, tuple(path), preload)
        services = self._own.get(key)
        if services is None:
            zygote = Zygote(
                python,
                path,
                preload,
                isolated=environment is not None,
                sites=environment.site_packages if environment is not None else (),
            )
            services = self._own[key] = ProcessServices(
                zygote, shared.pump, shared.results, shared.blob_bytes, shared.gpu
            )
        return services

    def retire(self, environment: PluginEnvironment) -> None:
        """Stop the zygotes of ``environment`` that no open runner uses (it
        was upgraded away from, or uninstalled; a new version on trial from
        the same environment keeps its own)."""
        with self._lock:
            runners = [r for r in self._runners if isinstance(r, ProcessRunner)]
            retired = [
                key
                for key, services in self._own.items()
                if key[0] == environment.python
                and not any(runner.uses(services.zygote) for runner in runners)
            ]
            zygotes = [self._own.pop(key).zygote for key in retired]
        for zygote in zygotes:
            zygote.close()

    def prestart_zygote(self) -> None:
        """Start the zygote now, so that its interpreter boots while the
        host discovers and checks plugins; a failure to start it
        is left for the first worker's spawn to report."""
        with self._lock:
            if self._closed:
                return
            zygote = self._process_services().zygote
        zygote.prestart()

    def refuse_new(self) -> None:
        """From now on :meth:`make` raises: the host is closing."""
        with self._lock:
            self._closed = True

    def gpus(self) -> list[dict[str, Any]]:
        """Each GPU as the GPU watch last read it (empty: none read)."""
        process = self._process
        return process.gpu.status() if process is not None else []

    def close_runners(self, why: str) -> None:
        """Close every runner made here (calls in flight end with ``why``)."""
        with self._lock:
            runners = list(self._runners)
        if runners:
            with ThreadPoolExecutor(min(32, len(runners))) as pool:
                list(pool.map(lambda runner: runner.close(why), runners))

    def close(self) -> None:
        """Close every runner, then every shared service."""
        self.refuse_new()
        self.close_runners(ErrorType.CLOSED)
        with self._lock:
            process, self._process = self._process, None
            inline, self._inline = self._inline, None
            ray, self._ray = self._ray, None
        # The services' zygote, or the one given and never used.
        zygote = process.zygote if process is not None else self._zygote
        if zygote is not None:
            zygote.close()
        with self._lock:
            own, self._own = list(self._own.values()), {}
        for services in own:
            services.zygote.close()
        if process is not None:
            process.pump.close()
            process.gpu.close()
        if inline is not None:
            inline[0].close()
            inline[1].close()
        if ray is not None:
            ray.close()
