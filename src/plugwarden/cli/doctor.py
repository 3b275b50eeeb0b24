"""``plugwarden doctor``: what a person reads when something is wrong.

Python and platform; the GPU, driver, CUDA and torch as probed (in a
subprocess: this process never imports torch), with the verdict a GPU plugin
would get and why; then every plugin with its state and reason, which
names the fix.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
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


def plugin_records(config: HostConfig) -> tuple[list[dict[str, Any]], str]:
    """The running server's plugins if one answers, else a one-shot host's;
    and where they came from."""
    url = server_url(config)
    try:
        with RemoteHost(url, config.server.token, timeout_s=10) as server:
            return server.records(), f"the server at {url}"
    except (ServerUnreachable, ServerError):
        pass
    with Host(config) as host:
        records = [status.to_dict() for status in host.statuses()]
    return records, f"a one-shot host here (no server answers at {url})"


def doctor(config: HostConfig, console: Console, *, as_json: bool = False) -> int:
    probe = run_probe(with_torch=True)
    problem = decide(probe)
    level = containment_level()
    contained = {"level": level, "meaning": LEVELS.get(level, "could not be probed")}
    protections = machine_support(level)
    cluster = ray_cluster(config)
    records, source = plugin_records(config)
    needs_gpu = [str(r["name"]) for r in records if r.get("requires_gpu")]
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
