"""``GET /``: the status page an operator keeps open.

Rendered on the server (it reads fine without JavaScript), then refreshed
every few seconds by a small inline script from ``/v1/plugins`` and
``/readyz``: the header says what ``/readyz`` says, rows keep their order
(by name), times are relative, and each plugin's history opens on demand.
No external assets: the page works on an air-gapped host.
"""

from __future__ import annotations

import time
from html import escape
from typing import Any

from plugwarden.console import ago
from plugwarden.host.status import PluginStatus
from plugwarden.jobs.job import Job, JobState

__all__ = ["render_page"]

REFRESH_MS = 3000

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5rem;color:#1d2430;background:#f6f7f9}
h1{font-size:1.3rem;margin:0 0 .2rem} .sub{color:#5b6472;margin-bottom:1rem}
.summary span{display:inline-block;margin-right:1rem;font-weight:600}
table{border-collapse:collapse;width:100%;background:#fff;box-shadow:0 1px 2px #0002}
th,td{padding:.45rem .6rem;border-bottom:1px solid #e3e6ea;text-align:left;vertical-align:top}
th{background:#eef0f3;font-size:.8rem;text-transform:uppercase;letter-spacing:.03em}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.state{display:inline-block;padding:.1rem .5rem;border-radius:.8rem;color:#fff;font-weight:600;
font-size:.8rem}
.INITIALIZED{background:#1f8a4c}.RUNNING{background:#1769aa}.LOADED{background:#b7791f}
.FAILED{background:#c53030}.UNAVAILABLE{background:#6b46c1}
.reason{color:#3d4654;max-width:34rem;overflow-wrap:anywhere}.small{color:#5b6472;font-size:.8rem}
#ready.ready{color:#1f8a4c;font-weight:600}#ready.notready{color:#c53030;font-weight:600}
.unhealthy{display:inline-block;margin-left:.3rem;padding:.1rem .4rem;border-radius:.8rem;
color:#c53030;border:1px solid #c53030;font-size:.75rem;font-weight:600}
details ol{margin:.3rem 0 0 1rem;padding:0} details li{font-size:.8rem}
h2{font-size:1.05rem;margin:1.5rem 0 .4rem} progress{width:12rem;vertical-align:middle}
"""

_SCRIPT = """
const esc = s => String(s ?? "").replace(/[&<>"']/g,
  c => ({"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;","'":"&#39;"}[c]));
const ms = v => v == null ? "\\u2014" : v.toFixed(1) + " ms";
const mb = v => v == null ? "\\u2014" : (v / 1048576).toFixed(1) + " MB";
const ago = iso => {
  if (!iso) return "never";
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  return s < 60 ? s + " s ago" : s < 3600 ? Math.floor(s / 60) + " min ago"
    : s < 86400 ? Math.floor(s / 3600) + " h ago" : Math.floor(s / 86400) + " d ago";
};
const span = s => s < 60 ? Math.round(s) + " s" : s < 3600 ? Math.floor(s / 60) + " min"
  : Math.floor(s / 3600) + " h";
const trips = t => Object.entries(t || {}).filter(([, n]) => n).map(([g, n]) => g + " " + n)
  .join(", ") || "none";
function health(p) {
  if (!p.health) return "not checked";
  const bad = p.healthy === false;
  return (bad ? `<span class="unhealthy" title="${esc(p.health.error)}">unhealthy</span>`
    : "healthy") + ` <span class="small">${esc(ago(p.health.checked_at))}</span>`;
}
function cells(p) {
  return {
    state: `<span class="state ${esc(p.state)}">${esc(p.state)}</span>`,
    reason: esc(p.reason),
    tools: esc((p.tools || []).join(", ") || "any"),
    health: health(p),
    calls: `${p.success_count} ok / ${p.error_count} err` +
      `<div class="small">${p.in_flight} in flight</div>`,
    time: `${ms(p.last_execution_time_ms)}<div class="small">avg ` +
      `${ms(p.avg_execution_time_ms)}</div>`,
    trips: esc(trips(p.guard_trips)) + `<div class="small">${p.restarts} restarts</div>`,
    memory: mb(p.worker_resident_bytes),
    uptime: p.uptime_seconds ? span(p.uptime_seconds) : "\\u2014",
    used: `<span title="${esc(p.last_used ?? "")}">${esc(ago(p.last_used))}</span>`,
  };
}
async function history(details) {
  if (!details.open) return;
  const name = details.closest("tr").dataset.plugin;
  const record = await (await fetch("/v1/plugins/" + encodeURIComponent(name))).json();
  const g = record.permissions || {}, guarded = record.protections || {};
  const lacking = Object.entries(guarded).filter(
    ([, v]) => !v.startsWith("enforced") && v !== "granted");
  const reach = record.permissions ? `<li class="small" data-field="grants"><b>grants</b> ` +
    `network ${esc(JSON.stringify(g.network))}, read ${esc((g.read || []).join(", ") || "-")}, ` +
    `write ${esc((g.write || []).join(", ") || "-")}; <b>protections</b> ` +
    esc(Object.keys(guarded).filter(k => !lacking.some(([n]) => n === k)).join(", ") || "none") +
    lacking.map(([k, v]) => `; <b>${esc(k)}</b> ${esc(v)}`).join("") + `</li>` : "";
  const e = record.environment;
  const env = e ? `<li class="small" data-field="environment"><b>environment</b> ` +
    `${esc(e.path)} (Python ${esc(e.python)}); <b>versions</b> ` +
    esc((e.versions || []).map(v => `${v.version} ${v.event} ${ago(v.at)}`).join(", ") || "-") +
    `</li>` : "";
  details.querySelector("ol").innerHTML = reach + env + (record.history || []).map(h =>
    `<li><b>${esc(h.state)}</b> ${esc(ago(h.at))}: ${esc(h.reason)}</li>`).join("");
}
function jobRow(j) {
  const p = j.progress || {};
  const bar = p.fraction == null ? "<progress></progress>"
    : `<progress max="1" value="${p.fraction}"></progress>`;
  const done = p.done == null ? "" : p.total == null ? p.done : `${p.done} / ${p.total}`;
  return `<tr data-job="${esc(j.id)}"><td>${esc(j.plugin)}</td><td>${esc(j.tool)}</td>` +
    `<td>${bar} <span class="small">${esc(done)} ${esc(p.message)}</span></td>` +
    `<td class="small">${esc(ago(j.started_at))}</td><td class="small">${esc(j.id)}</td></tr>`;
}
async function refresh() {
  try {
    const [plugins, ready, jobs] = await Promise.all([
      fetch("/v1/plugins", {cache: "no-store"}).then(r => r.json()),
      fetch("/readyz", {cache: "no-store"}).then(r => r.json()),
      // Job reads need the token: without it, the rows as the page was served.
      fetch("/v1/jobs?state=running&limit=50", {cache: "no-store"})
        .then(r => r.ok ? r.json() : null)]);
    if (jobs) document.getElementById("jobs").innerHTML = jobs.map(jobRow).join("") || NO_JOBS;
    const header = document.getElementById("ready");
    header.className = ready.ready ? "ready" : "notready";
    header.textContent = ready.ready ? "ready" : "not ready: " + ready.reasons.join("; ");
    const counts = {};
    const rows = document.getElementById("rows");
    plugins.sort((a, b) => a.name < b.name ? -1 : 1).forEach(p => {
      counts[p.state] = (counts[p.state] || 0) + 1;
      let row = [...rows.children].find(r => r.dataset.plugin === p.name);
      if (!row) {
        row = document.createElement("tr");
        row.dataset.plugin = p.name;
        row.innerHTML = ROW_TEMPLATE;
        row.querySelector(".name").textContent = p.name;
        rows.appendChild(row);
      }
      for (const [field, value] of Object.entries(cells(p))) {
        row.querySelector(`[data-field="${field}"]`).innerHTML = value;
      }
      rows.appendChild(row);  // keeps rows in name order
    });
    document.getElementById("summary").innerHTML = Object.entries(counts).sort()
      .map(([s, n]) => `<span>${n} ${esc(s)}</span>`).join("");
    document.getElementById("updated").textContent = new Date().toLocaleTimeString();
    document.body.dataset.refreshed = "ok";
  } catch (e) {
    document.getElementById("updated").textContent = "refresh failed: " + e;
    document.body.dataset.refreshed = "failed";
  }
}
const ROW_TEMPLATE = document.getElementById("row-template").innerHTML;
const NO_JOBS = '<tr><td colspan="5" class="small">No job is running.</td></tr>';
document.addEventListener("toggle", e => history(e.target), true);
// #history=NAME opens that plugin's history (a link an operator can share).
const wanted = decodeURIComponent(location.hash.slice(1));
refresh().then(() => {
  if (!wanted.startsWith("history=")) return;
  const row = [...document.getElementById("rows").children]
    .find(r => r.dataset.plugin === wanted.slice(8));
  if (row) row.querySelector("details").open = true;
});
setInterval(refresh, __REFRESH_MS__);
""".replace("__REFRESH_MS__", str(REFRESH_MS))

_FIELDS = (
    "state",
    "reason",
    "tools",
    "health",
    "calls",
    "time",
    "trips",
    "memory",
    "uptime",
    "used",
)
_HEADINGS = (
    "plugin", "state", "reason", "tools", "health", "calls", "last / avg", "guard trips",
    "memory", "uptime", "last used",
)  # fmt: skip


def _ms(value: float | None) -> str:
    return "\u2014" if value is None else f"{value:.1f} ms"


def _cells(status: PluginStatus, memory: int | None) -> dict[str, str]:
    m = status.metrics
    state = escape(status.state.value)
    health = "not checked"
    if status.health:
        checked = escape(ago(status.health.get("checked_at")))
        verdict = "healthy"
        if not status.healthy:
            last = escape(str(status.health.get("error") or ""))
            verdict = f'<span class="unhealthy" title="{last}">unhealthy</span>'
        health = f'{verdict} <span class="small">{checked}</span>'
    trips = ", ".join(f"{g} {n}" for g, n in m["guard_trips"].items() if n) or "none"
    uptime = m["uptime_seconds"]
    return {
        "state": f'<span class="state {state}">{state}</span>',
        "reason": escape(status.reason),
        "tools": escape(", ".join(status.info.tools) or "any"),
        "health": health,
        "calls": f"{m['success_count']} ok / {m['error_count']} err"
        f'<div class="small">{status.in_flight} in flight</div>',
        "time": f"{_ms(m['last_execution_time_ms'])}"
        f'<div class="small">avg {_ms(m["avg_execution_time_ms"])}</div>',
        "trips": f'{escape(trips)}<div class="small">{m["restarts"]} restarts</div>',
        "memory": "\u2014" if memory is None else f"{memory / 2**20:.1f} MB",
        "uptime": f"{uptime:.0f} s" if uptime else "\u2014",
        "used": escape(ago(m["last_used"], time.time())),
    }


def _row(name: str, cells: dict[str, str]) -> str:
    first = (
        f'<td data-field="name"><span class="name">{escape(name)}</span><details>'
        '<summary class="small">history</summary><ol></ol></details></td>'
    )
    rest = "".join(f'<td data-field="{field}">{cells.get(field, "")}</td>' for field in _FIELDS)
    return f'<tr data-plugin="{escape(name)}">{first}{rest}</tr>'


def _job_row(job: Job) -> str:
    progress = job.progress
    bar, done = "<progress></progress>", ""
    if progress is not None:
        if progress.fraction is not None:
            bar = f'<progress max="1" value="{progress.fraction}"></progress>'
        total = "" if progress.total is None else f" / {progress.total:g}"
        done = escape(f"{progress.done:g}{total} {progress.message}")
    started = escape(ago(None if job.started_at is None else job.to_dict()["started_at"]))
    return (
        f'<tr data-job="{job.id}"><td>{escape(job.plugin)}</td><td>{escape(job.tool)}</td>'
        f'<td>{bar} <span class="small">{done}</span></td><td class="small">{started}</td>'
        f'<td class="small">{job.id}</td></tr>'
    )


def _gpu_section(gpus: list[dict[str, Any]]) -> str:
    """One line per GPU: memory, utilisation, ECC, health, Xids (none: nothing)."""
    if not gpus:
        return ""
    rows = []
    for gpu in gpus:
        health = "healthy" if gpu["healthy"] else f"unhealthy: {gpu['reason']}"
        if gpu["stranded_bytes"]:
            pids = ", ".join(map(str, gpu["stranded_pids"]))
            health += (
                f"; {gpu['stranded_bytes'] / 2**20:.0f} MB still held by pid {pids} "
                "of a lost worker"
            )
        xids = ", ".join(f"Xid {x} &times;{n}" for x, n in gpu["xids"].items()) or "no Xid"
        counts = (("ecc_uncorrected", "uncorrected"), ("retired_pages", "retired pages"),
                  ("remapped_rows", "remapped rows"))  # fmt: skip
        ecc = ", ".join(f"{gpu[key]} {what}" for key, what in counts if gpu[key] is not None)
        rows.append(
            f"<tr><td>{gpu['index']}</td><td>{escape(gpu['name'])}</td>"
            f"<td>{gpu['memory_used_bytes'] / 2**20:.0f} / {gpu['memory_total_bytes'] / 2**20:.0f}"
            f" MB</td><td>{'-' if gpu['utilization'] is None else str(gpu['utilization']) + '%'}"
            f"</td><td>{escape(health)}</td><td>{ecc or '-'}</td><td>{xids}</td></tr>"
        )
    attribution = gpus[0]["xid_attribution"]
    return (
        "<h2>GPUs</h2><table><thead><tr><th>gpu</th><th>name</th><th>memory</th>"
        "<th>utilisation</th><th>health</th><th>ECC</th><th>Xids</th></tr></thead><tbody>"
        f"{''.join(rows)}"
        f'</tbody></table><p class="small">Xids recycle workers {escape(attribution)}.</p>'
    )


def render_page(
    statuses: list[PluginStatus],
    not_ready: list[str],
    memory: dict[str, Any] | None = None,
    jobs: list[Job] | None = None,
    gpus: list[dict[str, Any]] | None = None,
) -> str:
    """The page; ``jobs``: the jobs running now (a progress bar each);
    ``gpus``: each GPU as the host's GPU watch last read it."""
    memory = memory or {}
    running = [job for job in jobs or [] if job.state == JobState.RUNNING]
    job_rows = "".join(_job_row(job) for job in running) or (
        '<tr><td colspan="5" class="small">No job is running.</td></tr>'
    )
    counts: dict[str, int] = {}
    for status in statuses:
        counts[status.state.value] = counts.get(status.state.value, 0) + 1
    summary = "".join(f"<span>{n} {escape(s)}</span>" for s, n in sorted(counts.items()))
    readiness = (
        '<span id="ready" class="ready">ready</span>'
        if not not_ready
        else '<span id="ready" class="notready">not ready: '
        + escape("; ".join(not_ready))
        + "</span>"
    )
    rows = "".join(
        _row(s.name, _cells(s, memory.get(s.name))) for s in sorted(statuses, key=lambda s: s.name)
    )
    empty = (
        "" if statuses else "<p>No plugins installed (entry point group plugwarden.plugins).</p>"
    )
    headings = "".join(f"<th>{heading}</th>" for heading in _HEADINGS)
    template = _row("", {})
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<noscript><meta http-equiv="refresh" content="{REFRESH_MS // 1000}"></noscript>
<title>plugwarden status</title><style>{_STYLE}</style></head>
<body><h1>plugwarden</h1>
<div class="sub">{len(statuses)} plugins &middot; {readiness} &middot; updated
<span id="updated">now</span> &middot; <a href="/metrics">metrics</a> &middot;
<a href="/v1/plugins">JSON</a></div>
<div class="summary" id="summary">{summary}</div>{empty}
<table><thead><tr>{headings}</tr></thead>
<tbody id="rows">{rows}</tbody></table>
{_gpu_section(gpus or [])}<h2>Running jobs</h2>
<table><thead><tr><th>plugin</th><th>tool</th><th>progress</th><th>started</th><th>job</th>
</tr></thead><tbody id="jobs">{job_rows}</tbody></table>
<template id="row-template">{template[template.index(">") + 1 : -len("</tr>")]}</template>
<script>{_SCRIPT}</script></body></html>
"""
