"""The host's link to a Ray cluster, for ``isolation = "ray"`` plugins.

Made on first use, so a host without Ray plugins never imports Ray. It
connects to ``[ray] address`` (a running cluster, or ``"auto"``) or starts a
local one with bounded resources, answers whether any node can place a
worker, describes the cluster for ``doctor``, and watches the actors: each
actor's ``watch`` call resolves when its plugin worker is lost or the actor
dies, and one thread hears of it within Ray's own detection time.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any

from plugwarden.config import RayConfig
from plugwarden.error_types import ErrorType
from plugwarden.exceptions import LoadError
from plugwarden.isolation.ray.agent import CONCURRENCY_GROUPS, Agent

__all__ = ["RAY_MISSING", "RayCluster", "death_reason", "shortfall"]

log = logging.getLogger("plugwarden.ray")

RAY_MISSING = (
    'isolation = "ray" needs Ray, which is not installed. Install with: '
    "pip install 'plugwarden[ray]'"
)
WATCH_POLL_S = 0.2  # the watcher's wait on its actors; new ones join on the next turn


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise LoadError(RAY_MISSING, ErrorType.BACKEND_UNAVAILABLE, unavailable=True) from None
    return ray


class RayCluster:
    """Thread-safe; :meth:`close` disconnects (and stops a cluster it started)."""

    def __init__(self, config: RayConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._ray: Any = None
        self._owner: threading.Thread | None = None  # called ray.init; shuts it down
        self.agent: Any = None  # the Agent class as a Ray actor class
        self._watched: dict[Any, Callable[[Any], None]] = {}
        self._watcher: threading.Thread | None = None
        self._stop = threading.Event()

    def connect(self) -> Any:
        """The ``ray`` module, connected; raises LoadError."""
        with self._lock:
            if self._ray is not None:
                return self._ray
            ray = _import_ray()
            if not ray.is_initialized():
                self._start_owner(ray)
            self.agent = ray.remote(concurrency_groups=CONCURRENCY_GROUPS)(Agent)
            self._ray = ray
            return ray

    def _start_owner(self, ray: Any) -> None:
        """``ray.init`` on a thread of its own that lives until :meth:`close`:
        Ray gives the processes of a local cluster PR_SET_PDEATHSIG, which
        fires when the *thread* that started them ends (a pipeline thread
        would take the cluster down with it)."""
        started: list[BaseException | None] = []
        ready = threading.Event()
        abandoned = threading.Event()  # connect() gave up waiting

        def own() -> None:
            try:
                ray.init(**self._options())
            except Exception as exc:  # noqa: BLE001 - Ray raises many kinds here
                started.append(exc)
                ready.set()
                return
            started.append(None)
            ready.set()
            while not (self._stop.wait(1.0) or abandoned.is_set()):
                pass
            ray.shutdown()

        self._owner = threading.Thread(target=own, name="plugwarden-ray", daemon=True)
        self._owner.start()
        budget = self.config.connect_timeout_s
        problem: object = None
        if not ready.wait(budget):
            abandoned.set()
            problem = f"no answer within connect_timeout_s ({budget:g}s)"
        elif started[0] is not None:
            problem = started[0]
        if problem is not None:
            self._owner = None
            where = self.config.address or "a new local cluster"
            raise LoadError(
                f"Cannot reach the Ray cluster at {where}: {problem}. Check [ray] address "
                "and that the cluster is up (ray status).",
                ErrorType.WORKER_START,
            )

    def _options(self) -> dict[str, Any]:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        options: dict[str, Any] = {
            "namespace": self.config.namespace,
            "log_to_driver": False,  # plugin output stays in Ray's worker logs
            "logging_level": logging.WARNING,
        }
        if self.config.address:
            return options | {"address": self.config.address}
        return options | {
            "address": "local",  # a new cluster, never one found on the machine
            "num_cpus": self.config.num_cpus,
            "num_gpus": self.config.num_gpus,
            "object_store_memory": int(self.config.object_store_mb * 2**20),
            "include_dashboard": False,
        }

    def nodes(self) -> list[dict[str, Any]]:
        """The live nodes: id, address and total resources."""
        return [
            {
                "node": node["NodeID"],
                "address": node["NodeManagerAddress"],
                "resources": dict(node.get("Resources") or {}),
            }
            for node in self.connect().nodes()
            if node.get("Alive")
        ]

    def describe(self) -> dict[str, Any]:
        """For ``doctor``: the address, each node, and what is free."""
        ray = self.connect()
        total, free = ray.cluster_resources(), ray.available_resources()
        return {
            "address": self.config.address or "local (started by plugwarden)",
            "nodes": self.nodes(),
            "cpus": total.get("CPU", 0.0),
            "cpus_free": free.get("CPU", 0.0),
            "gpus": total.get("GPU", 0.0),
            "gpus_free": free.get("GPU", 0.0),
        }

    # -- watching actors --------------------------------------------------------------

    def watch(self, ref: Any, callback: Callable[[Any], None]) -> None:
        """Call ``callback(value or RayError)`` once ``ref`` resolves."""
        with self._lock:
            self._watched[ref] = callback
            if self._watcher is None:
                self._watcher = threading.Thread(
                    target=self._watch, name="plugwarden-ray-watch", daemon=True
                )
                self._watcher.start()

    def unwatch(self, ref: Any) -> None:
        with self._lock:
            self._watched.pop(ref, None)

    def _watch(self) -> None:
        ray = self._ray
        while not self._stop.is_set():
            with self._lock:
                refs = list(self._watched)
            if not refs:
                self._stop.wait(WATCH_POLL_S)
                continue
            try:
                ready, _ = ray.wait(refs, num_returns=1, timeout=WATCH_POLL_S)
            except Exception:  # noqa: BLE001 - the cluster is going away
                self._stop.wait(WATCH_POLL_S)
                continue
            for ref in ready:
                with self._lock:
                    callback = self._watched.pop(ref, None)
                if callback is None:
                    continue
                try:
                    value = ray.get(ref, timeout=5)
                except Exception as exc:  # noqa: BLE001 - an actor's death, as a value
                    value = exc
                try:
                    callback(value)
                except Exception:
                    log.exception("a Ray actor's watcher failed")

    def close(self) -> None:
        self._stop.set()
        for thread in (self._watcher, self._owner):
            if thread is not None:
                thread.join(30)
        with self._lock:
            self._ray = None
            self._watched.clear()


def shortfall(
    nodes: list[dict[str, Any]], request: dict[str, float], gpu_needed: bool
) -> str | None:
    """None when some live node can hold one worker asking ``request``,
    else why not (an actor asking for more would wait forever)."""
    for node in nodes:
        if all(node["resources"].get(key, 0.0) >= amount for key, amount in request.items()):
            return None
    gpus = sum(node["resources"].get("GPU", 0.0) for node in nodes)
    if gpu_needed and gpus == 0:
        return (
            f"No GPU detected in the Ray cluster: none of its {len(nodes)} node(s) has one. "
            "Add a GPU node, or set requires_gpu = false (and num_gpus = 0) in [plugins.NAME] "
            "to run it on CPU."
        )
    wanted = ", ".join(f"{key} {_amount(key, value)}" for key, value in sorted(request.items()))
    largest = ", ".join(
        f"{key} {_amount(key, max((n['resources'].get(key, 0.0) for n in nodes), default=0))}"
        for key in sorted(request)
    )
    return (
        f"No node of the Ray cluster can hold one worker ({wanted}); the most any node has: "
        f"{largest or 'nothing'}. Lower num_cpus, num_gpus or memory_mb in [plugins.NAME], "
        "or add a bigger node."
    )


def _amount(key: str, value: float) -> str:
    return f"{value / 2**20:.0f} MB" if key == "memory" else f"{value:g}"


def death_reason(error: BaseException, address: str) -> tuple[str, str]:
    """Why an actor died, from the error Ray gave: (reason, cause), where
    cause is ``node``, ``oom`` (Ray's memory monitor), ``killed`` or ``died``."""
    text = str(error)
    lowered = text.lower()
    name = type(error).__name__
    if "node" in lowered and ("died" in lowered or "dead" in lowered) and "its node" in lowered:
        return (
            f"The Ray node {address} that ran the plugin's worker was lost. The restart "
            "policy asks Ray for a worker on another node.",
            "node",
        )
    if name == "OutOfMemoryError" or "memory monitor" in lowered or "out of memory" in lowered:
        return (
            f"Ray's memory monitor killed the plugin's worker on {address}: the node ran low on "
            "memory before plugwarden's memory_mb guard tripped. Lower memory_mb, or give the "
            "node more memory.",
            "oom",
        )
    if "ray.kill" in text:
        return (f"The plugin's Ray actor on {address} was killed with ray.kill.", "killed")
    detail = text.partition("Worker exit detail:")[2].strip().split(". ")[0]
    return (
        f"The plugin's Ray actor on {address} died"
        + (f" (Ray: {detail[:200]})" if detail else f" ({name})")
        + ". If it recurs, see the Ray worker logs on that node (ray logs).",
        "died",
    )
