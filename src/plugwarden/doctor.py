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

from plugwarden.config import HostConfig
from plugwarden.console import STATE_STYLES, all_well
from plugwarden.core.containment import LEVELS
from plugwarden.core.gpu import GpuProbe, decide, run_probe
from plugwarden.core.host import Host

__all__ = ["containment_level", "doctor", "gpu_lines"]


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
        devices = ", ".join(f"{d['name']} ({d['memory_mb']} MB)" for d in nvml.get("devices", []))
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


def containment_level() -> str:
    """The containment level a worker gets here, probed in a subprocess (the
    probe forks, which this process, with its threads, must not)."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "plugwarden.core.containment"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    level = done.stdout.strip()
    return level if level in LEVELS else "unknown"


def doctor(config: HostConfig, console: Console, *, as_json: bool = False) -> int:
    probe = run_probe(with_torch=True)
    problem = decide(probe)
    verdict = (
        {"ok": True, "state": None, "reason": "GPU plugins can run here."}
        if problem is None
        else {"ok": False, "state": problem.state.value, "reason": problem.reason}
    )
    level = containment_level()
    contained = {"level": level, "meaning": LEVELS.get(level, "could not be probed")}
    with Host(config) as host:
        statuses = host.statuses()
    well = all_well(statuses, config)
    if as_json:
        report: dict[str, Any] = {
            "python": {"version": platform.python_version(), "executable": sys.executable},
            "platform": platform.platform(),
            "config": config.source,
            "containment": contained,
            "gpu": {**probe.to_dict(), "verdict": verdict},
            "plugins": [s.to_dict() for s in statuses],
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
    colour = "green" if verdict["ok"] else ("red" if verdict["state"] == "FAILED" else "magenta")
    gpu.add_row("[bold]verdict[/bold]", f"[{colour}]{escape(str(verdict['reason']))}[/{colour}]")
    console.print(Panel(gpu, title="GPU, driver, CUDA", title_align="left"))
    colour = "green" if level == "pid-namespace" else "yellow"
    console.print(
        f"[bold]containment[/bold] [{colour}]{level}[/{colour}]: {escape(contained['meaning'])}",
        highlight=False,
    )
    if not statuses:
        console.print("No plugins installed (entry point group 'plugwarden.plugins').")
        return 0
    table = Table(title="Plugins", title_justify="left", show_lines=True)
    for column in ("plugin", "state", "reason and fix"):
        table.add_column(column, overflow="fold")
    for status in sorted(statuses, key=lambda s: s.name):
        style = STATE_STYLES.get(status.state, "")
        table.add_row(
            escape(status.name), f"[{style}]{status.state.value}[/{style}]", escape(status.reason)
        )
    console.print(table)
    if not well:
        console.print("[bold]Some plugins are not available; each reason above names the fix.")
    return 0 if well else 1
