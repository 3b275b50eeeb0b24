"""One plugin's whole record, printed for a person (``plugwarden health``):
what it is, its state and reason, health, metrics, guard trips, restarts,
worker memory, and its history as a timeline with relative times."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from plugwarden.console import STATE_STYLES, ago

__all__ = ["print_record"]


def _ms(value: object) -> str:
    return "-" if value is None else f"{value} ms"


def print_record(record: dict[str, Any], console: Console) -> None:
    state = str(record.get("state"))
    style = STATE_STYLES.get(state, "")
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column(overflow="fold")

    def row(what: str, value: object) -> None:
        facts.add_row(what, escape(str(value)))

    facts.add_row("state", f"[{style}]{escape(state)}[/{style}]")
    row("reason", record.get("reason", ""))
    row("description", record.get("description") or "-")
    row("version", f"{record.get('version', '')} ({record.get('distribution', '')})")
    row("isolation", record.get("isolation", ""))
    row("tools", ", ".join(record.get("tools") or []) or "any")
    health = record.get("health") or {}
    healthy = record.get("healthy", True)
    if not health:
        row("health", "not checked yet")
    else:
        verdict = "healthy" if healthy else "UNHEALTHY"
        report = health.get("report")
        # The plugin's report as JSON (as the API gives it), not a Python repr.
        shown = json.dumps(report, sort_keys=True) if report is not None else "no report"
        detail = shown if health.get("ok") else health.get("error")
        row("health", f"{verdict}; last check {ago(health.get('checked_at'))}: {detail}")
    row(
        "calls",
        f"{record.get('success_count', 0)} ok, {record.get('error_count', 0)} failed, "
        f"{record.get('in_flight', 0)} in flight; last {_ms(record.get('last_execution_time_ms'))}"
        f", avg {_ms(record.get('avg_execution_time_ms'))}; used {ago(record.get('last_used'))}",
    )
    trips = record.get("guard_trips") or {}
    row("guard trips", ", ".join(f"{k} {v}" for k, v in trips.items()) or "-")
    causes = record.get("restarts_by_cause") or {}
    row(
        "restarts",
        f"{record.get('restarts', 0)}"
        + (f" ({', '.join(f'{k} {v}' for k, v in causes.items())})" if causes else ""),
    )
    row("uptime", f"{record.get('uptime_seconds', 0)} s")
    memory = record.get("worker_resident_bytes")
    if memory is not None:
        row("worker memory", f"{memory / 2**20:.1f} MB resident")
    granted = record.get("permissions") or {}
    if granted:
        network = granted.get("network")
        ports = ", ".join(map(str, network)) if isinstance(network, list) else network
        row(
            "grants",
            f"network {str(ports).lower()}; read {', '.join(granted.get('read') or []) or '-'}; "
            f"write {', '.join(granted.get('write') or []) or '-'}",
        )
    protections = record.get("protections") or {}
    if protections:
        lacking = {
            k: v for k, v in protections.items() if not v.startswith(("enforced", "granted"))
        }
        enforced = [k for k in protections if k not in lacking]
        row("protections", "enforced: " + (", ".join(enforced) or "none"))
        for name, why in lacking.items():
            row(f"  {name}", why)
    nodes = [node for node in record.get("worker_nodes") or [] if node != "local"]
    if nodes:
        row("nodes", ", ".join(map(str, nodes)))
    console.print(facts, highlight=False)
    history = record.get("history") or []
    if history:
        timeline = Table(
            title=f"History of {escape(str(record.get('name')))}", title_justify="left"
        )
        for column in ("when", "state", "reason"):
            timeline.add_column(column, overflow="fold")
        for entry in history:
            entry_style = STATE_STYLES.get(str(entry.get("state")), "")
            timeline.add_row(
                f"{ago(entry.get('at'))}",
                f"[{entry_style}]{escape(str(entry.get('state')))}[/{entry_style}]",
                escape(str(entry.get("reason", ""))),
            )
        console.print(timeline)
