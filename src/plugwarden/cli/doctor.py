"""``plugwarden doctor``: what a person reads when something is wrong.

Python and platform; the GPU, driver, CUDA and torch as probed (in a
subprocess: this process never imports torch), with the verdict a GPU plugin
would get and why; then every plugin with its state and reason, which
names the fix.
"""

from __future__ import annotations

import contextlib
import json
import platform
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from plugwarden.cli.remote import RemoteHost, ServerError, ServerUnreachable, server_url
from plugwarden.config import HostConfig
from plugwarden.console import STATE_STYLES, all_well
from plugwarden.exceptions import LoadError
from plugwarden.host.host import Host
from plugwarden.isolation.process.containment import LEVELS
from plugwarden.isolation.process.sandbox import PROTECTIONS, machine_support
from plugwarden.isolation.ray.cluster import RayCluster
from plugwarden.plugin.manifest import RAY_ISOLATIONS
from plugwarden.preflight.gpu import GpuProbe, decide, run_probe

__all__ = ["containment_level", "doctor", "gpu_lines", "ray_cluster"]


def gpu_lines(probe: GpuProbe) -> list[tuple[str, str]]:
    """(what, finding) pairs explaining the probe, in plain words."""
    if probe.error:
        return [("probe", probe.error)]
    nvml, torch = probe.nvml, probe.torch
    hardware = (
        f"{len(probe.pci_devices)} NVIDIA PCI device(s), {len(probe.dev_nodes)} /dev/nvidia node(s)"
        if probe.pci_devices or probe.dev_nodes
        else "none found (PCI bus and /dev/nvidia* scanned)"
    )
    if nvml.get("loaded"):
        devices = ", ".join(_device(d) for d in nvml.get("devices", []))
        driver = f"{nvml.get('driver')} via {nvml.get('source', 'NVML')}: {devices or 'no devices'}"
    else:
        driver = f"not usable: {nvml.get('error', 'unknown')}"
    if torch.get("skipped"):
        torch_line = "not checked"
    elif not torch.get("installed"):
        torch_line = "not installed"
    elif torch.get("error"):
        torch_line = f"import failed: {torch['error']}"
    else:
        cuda = torch.get("cuda_build") or "none (CPU-only build)"
        usable = "usable" if torch.get("cuda_available") else "not usable"
        torch_line = f"{torch.get('version')}, CUDA build {cuda}, GPU {usable}"
        if torch.get("cuda_error"):
            torch_line += f" ({torch['cuda_error']})"
    return [("hardware", hardware), ("driver", driver), ("torch", torch_line)]


def _device(device: dict[str, Any]) -> str:
    """One GPU as the probe saw it: its name, memory used of total, ECC."""
    memory = device.get("memory_mb")
    used = device.get("used_mb")
    shown = f"{used} of {memory} MB used" if used is not None else f"{memory} MB"
    errors, rows, fault = (device.get(k) for k in ("ecc_uncorrected", "remapped_rows",
                                                   "memory_fault"))  # fmt: skip
    ecc = f", {errors} uncorrected ECC errors" if errors else ""
    ecc += f", {rows} memory rows remapped" if rows else ""
    ecc += f"; {fault}" if fault else ""
    return (
        f"{device.get('name', '?')} ({shown}{ecc})"
        if memory is not None
        else device.get("name", "?")
    )


def containment_level() -> str:
    """The containment level a worker gets here, probed in a subprocess (the
    probe forks, which this process, with its threads, must not)."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "plugwarden.isolation.process.containment"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    level = done.stdout.strip()
    return level if level in LEVELS else "unknown"


def uses_ray(config: HostConfig) -> bool:
    return bool(config.ray.address) or any(
        isolation in RAY_ISOLATIONS
        for isolation in (
            config.defaults.isolation,
            *(p.guards.isolation for p in config.plugins.values()),
        )
    )


def ray_cluster(config: HostConfig) -> dict[str, Any] | None:
    """The Ray cluster's address, nodes and free CPUs/GPUs when the config
    uses Ray; ``error`` when it cannot be reached. A local cluster is only
    described: plugwarden starts it when a ``ray`` plugin loads."""
    if not uses_ray(config):
        return None
    if not config.ray.address:
        cpus = "all CPUs" if config.ray.num_cpus is None else f"{config.ray.num_cpus:g} CPUs"
        return {
            "address": "local",
            "note": f"started by plugwarden when a ray plugin loads ({cpus}, object store "
            f"{config.ray.object_store_mb:g} MB)",
        }
    cluster = RayCluster(config.ray)
    try:
        return cluster.describe()
    except LoadError as exc:
        return {"address": config.ray.address, "error": exc.reason}
    finally:
        cluster.close()


def ray_lines(cluster: dict[str, Any]) -> list[tuple[str, str]]:
    lines = [("address", str(cluster["address"]))]
    if "error" in cluster or "note" in cluster:
        return [*lines, ("status", str(cluster.get("error") or cluster.get("note")))]
    lines.append(
        ("free", f"CPU {cluster['cpus_free']:g} of {cluster['cpus']:g}, "
                 f"GPU {cluster['gpus_free']:g} of {cluster['gpus']:g}")
    )  # fmt: skip
    for node in cluster["nodes"]:
        resources = node["resources"]
        lines.append(
            (f"node {node['address']}",
             f"{node['node'][:12]}: CPU {resources.get('CPU', 0):g}, "
             f"GPU {resources.get('GPU', 0):g}")
        )  # fmt: skip
    return lines


@dataclass
class Seen:
    """What the running server (else a one-shot host) shows: its plugins,
    the GPUs as its GPU watch reads them, and each GPU plugin's workers'
    GPUs and GPU memory (``worker_gpus``, ``worker_gpu_bytes``)."""

    records: list[dict[str, Any]]
    source: str
    gpus: list[dict[str, Any]] = field(default_factory=list)
    on_gpus: dict[str, dict[str, Any]] = field(default_factory=dict)


def plugin_records(config: HostConfig) -> Seen:
    """The running server's plugins if one answers, else a one-shot host's,
    with its GPUs, and where they came from."""
    url = server_url(config)
    try:
        with RemoteHost(url, config.server.token, timeout_s=10) as server:
            seen = Seen(server.records(), f"the server at {url}")
            with contextlib.suppress(ServerError):  # reads may need the token
                seen.gpus = server.gpus()
                for name in _gpu_plugins(seen.records):
                    seen.on_gpus[name] = server.record(name)
            return seen
    except (ServerUnreachable, ServerError):
        pass
    with Host(config) as host:
        seen = Seen(
            [status.to_dict() for status in host.statuses()],
            f"a one-shot host here (no server answers at {url})",
        )
        on_gpus = _gpu_plugins(seen.records)
        if on_gpus:
            seen.gpus = host.gpus()
        for name in on_gpus:
            seen.on_gpus[name] = {
                "worker_gpus": host.worker_gpus(name), "worker_gpu_bytes": host.gpu_bytes(name),
            }  # fmt: skip
    return seen


def _gpu_plugins(records: list[dict[str, Any]]) -> list[str]:
    return [str(r["name"]) for r in records if r.get("requires_gpu")]


def host_gpu_lines(seen: Seen) -> list[tuple[str, str]]:
    """(what, finding) pairs: each GPU as the host's GPU watch sees it
    (memory, utilisation, health, Xids, whose workers use it), each
    plugin's GPU memory, and how an Xid is traced to a worker."""
    users: dict[int, list[str]] = {}
    for name, record in sorted(seen.on_gpus.items()):
        for gpu in record.get("worker_gpus") or []:
            users.setdefault(gpu["index"], []).append(name)
    lines = []
    for gpu in seen.gpus:
        index = gpu["index"]
        health = "healthy" if gpu["healthy"] else f"unhealthy: {gpu['reason']}"
        busy = "" if gpu["utilization"] is None else f", {gpu['utilization']}% busy"
        xids = ", ".join(f"Xid {x} x{n}" for x, n in gpu["xids"].items()) or "no Xid"
        lines.append((f"GPU {index}", (
            f"{gpu['name']}: {gpu['memory_used_bytes'] // 2**20} of "
            f"{gpu['memory_total_bytes'] // 2**20} MB used{busy}; {health}; {xids}; "
            f"workers of {', '.join(users.get(index, [])) or 'no plugin'}"
        )))  # fmt: skip
    for name, record in sorted(seen.on_gpus.items()):
        held = record.get("worker_gpu_bytes")
        if held is not None:
            lines.append((name, f"{held // 2**20} MB of GPU memory (its workers, NVML)"))
    if seen.gpus:
        lines.append(("Xids", f"recycle workers {seen.gpus[0]['xid_attribution']}"))
    return lines


def doctor(config: HostConfig, console: Console, *, as_json: bool = False) -> int:
    probe = run_probe(with_torch=True)
    problem = decide(probe)
    level = containment_level()
    contained = {"level": level, "meaning": LEVELS.get(level, "could not be probed")}
    protections = machine_support(level)
    cluster = ray_cluster(config)
    seen = plugin_records(config)
    records, source = seen.records, seen.source
    needs_gpu = _gpu_plugins(records)
    verdict = (
        {"ok": True, "state": None, "reason": "GPU plugins can run here."}
        if problem is None
        else {"ok": False, "state": problem.state.value, "reason": problem.reason}
    )
    if problem is not None and not needs_gpu:
        verdict["reason"] = f"{problem.reason.split('. ')[0]}: fine, no plugin needs a GPU."
    well = all_well(records)
    if as_json:
        report: dict[str, Any] = {
            "python": {"version": platform.python_version(), "executable": sys.executable},
            "platform": platform.platform(),
            "config": config.source,
            "containment": contained,
            "protections": protections,
            "ray": cluster,
            "gpu": {**probe.to_dict(), "verdict": verdict, "needed_by": needs_gpu},
            "host_gpus": seen.gpus,
            "plugin_gpus": seen.on_gpus,
            "plugins_from": source,
            "plugins": records,
        }
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
        return 0 if well else 1
    console.print(
        f"[bold]plugwarden doctor[/bold]  Python {platform.python_version()} "
        f"({escape(sys.executable)}) on {platform.platform()}; config: {escape(config.source)}",
        highlight=False,
    )
    gpu = Table.grid(padding=(0, 2))
    for what, finding in gpu_lines(probe):
        gpu.add_row(f"[bold]{what}[/bold]", escape(finding))
    if verdict["ok"]:
        colour = "green"
    elif not needs_gpu:
        colour = "dim"
    else:
        colour = "red" if verdict["state"] == "FAILED" else "magenta"
    gpu.add_row("[bold]verdict[/bold]", f"[{colour}]{escape(str(verdict['reason']))}[/{colour}]")
    if needs_gpu:
        gpu.add_row("[bold]needed by[/bold]", escape(", ".join(needs_gpu)))
    console.print(Panel(gpu, title="GPU, driver, CUDA", title_align="left"))
    watched = host_gpu_lines(seen)
    if watched:
        grid = Table.grid(padding=(0, 2))
        for what, finding in watched:
            grid.add_row(f"[bold]{escape(what)}[/bold]", escape(finding))
        console.print(Panel(grid, title=f"GPUs, as {escape(source)} sees them",
                            title_align="left"))  # fmt: skip
    colour = "green" if level == "pid-namespace" else "yellow"
    console.print(
        f"[bold]containment[/bold] [{colour}]{level}[/{colour}]: {escape(contained['meaning'])}",
        highlight=False,
    )
    guarded = Table(title="What a plugin may reach", title_justify="left", show_lines=False)
    for column in ("protection", "stops", "here"):
        guarded.add_column(column, overflow="fold")
    for name, enforced in protections.items():
        colour = "green" if enforced.startswith("enforced") else "yellow"
        guarded.add_row(name, escape(PROTECTIONS[name]), f"[{colour}]{escape(enforced)}[/{colour}]")
    console.print(guarded)
    if cluster is not None:
        grid = Table.grid(padding=(0, 2))
        for what, finding in ray_lines(cluster):
            grid.add_row(f"[bold]{escape(what)}[/bold]", escape(finding))
        console.print(Panel(grid, title="Ray cluster", title_align="left"))
    if not records:
        console.print("No plugins installed (entry point group 'plugwarden.plugins').")
        return 0
    table = Table(title=f"Plugins of {escape(source)}", title_justify="left", show_lines=True)
    for column in ("plugin", "state", "environment", "reason and fix"):
        table.add_column(column, overflow="fold")
    for record in sorted(records, key=lambda r: str(r.get("name"))):
        style = STATE_STYLES.get(str(record.get("state")), "")
        own = record.get("environment")
        table.add_row(
            escape(str(record.get("name"))),
            f"[{style}]{escape(str(record.get('state')))}[/{style}]",
            escape(f"own: {own.get('path')}" if isinstance(own, dict) else "shared (the host's)"),
            escape(str(record.get("reason", ""))),
        )
    console.print(table)
    if not well:
        console.print("[bold]Some plugins are not available; each reason above names the fix.")
    return 0 if well else 1
