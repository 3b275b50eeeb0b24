"""``GET /``: the status page a person reads at a glance.

Rendered on the server (it reads fine without JavaScript), then refreshed
every few seconds by a small inline script from ``/v1/plugins``. No external
assets: the page works on an air-gapped host.
"""

from __future__ import annotations

from html import escape

from plugwarden.core.registry import PluginStatus

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
.reason{color:#3d4654;max-width:38rem;overflow-wrap:anywhere}
.ready{color:#1f8a4c}.notready{color:#c53030}
.unhealthy{display:inline-block;margin-left:.3rem;padding:.1rem .4rem;border-radius:.8rem;
color:#c53030;border:1px solid #c53030;font-size:.75rem;font-weight:600}
"""

_SCRIPT = """
const esc = s => String(s ?? "").replace(/[&<>"']/g,
  c => ({"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;","'":"&#39;"}[c]));
const ms = v => v == null ? "\\u2014" : v.toFixed(1) + " ms";
const ago = iso => {
  if (!iso) return "never";
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  return s < 60 ? s + " s ago" : s < 3600 ? Math.round(s / 60) + " min ago"
    : Math.round(s / 3600) + " h ago";
};
async function refresh() {
  try {
    const plugins = await (await fetch("/v1/plugins", {cache: "no-store"})).json();
    const counts = {};
    document.getElementById("rows").innerHTML = plugins.map(p => {
      counts[p.state] = (counts[p.state] || 0) + 1;
      return `<tr data-plugin="${esc(p.name)}"><td>${esc(p.name)}</td>` +
        `<td><span class="state ${esc(p.state)}">${esc(p.state)}</span>` +
        (p.healthy === false ? `<span class="unhealthy" title="${esc(p.health?.error)}">` +
          `unhealthy</span>` : "") + `</td>` +
        `<td>${esc(p.version)}</td><td class="reason">${esc(p.reason)}</td>` +
        `<td class="num">${p.success_count}</td><td class="num">${p.error_count}</td>` +
        `<td class="num">${ms(p.last_execution_time_ms)}</td>` +
        `<td class="num">${ms(p.avg_execution_time_ms)}</td>` +
        `<td title="${esc(p.last_used ?? "")}">${esc(ago(p.last_used))}</td></tr>`;
    }).join("");
    document.getElementById("summary").innerHTML = Object.entries(counts)
      .map(([s, n]) => `<span class="${esc(s)}-text">${n} ${esc(s)}</span>`).join("");
    document.getElementById("updated").textContent = new Date().toLocaleTimeString();
  } catch (e) {
    document.getElementById("updated").textContent = "refresh failed: " + e;
  }
}
setInterval(refresh, __REFRESH_MS__);
""".replace("__REFRESH_MS__", str(REFRESH_MS))


def _ms(value: float | None) -> str:
    return "\u2014" if value is None else f"{value:.1f} ms"


def _row(status: PluginStatus) -> str:
    m = status.metrics
    state = escape(status.state.value)
    badge = ""
    if not status.healthy:
        last = escape(str((status.health or {}).get("error") or ""))
        badge = f'<span class="unhealthy" title="{last}">unhealthy</span>'
    return (
        f'<tr data-plugin="{escape(status.name)}"><td>{escape(status.name)}</td>'
        f'<td><span class="state {state}">{state}</span>{badge}</td>'
        f"<td>{escape(status.info.version)}</td>"
        f'<td class="reason">{escape(status.reason)}</td>'
        f'<td class="num">{m["success_count"]}</td><td class="num">{m["error_count"]}</td>'
        f'<td class="num">{_ms(m["last_execution_time_ms"])}</td>'
        f'<td class="num">{_ms(m["avg_execution_time_ms"])}</td>'
        f"<td>{escape(m['last_used'] or 'never')}</td></tr>"
    )


def render_page(statuses: list[PluginStatus], not_ready: list[str]) -> str:
    counts: dict[str, int] = {}
    for status in statuses:
        counts[status.state.value] = counts.get(status.state.value, 0) + 1
    summary = "".join(f"<span>{n} {escape(s)}</span>" for s, n in sorted(counts.items()))
    readiness = (
        '<span class="ready">ready</span>'
        if not not_ready
        else '<span class="notready">not ready: ' + escape("; ".join(not_ready)) + "</span>"
    )
    rows = "".join(_row(s) for s in sorted(statuses, key=lambda s: s.name))
    empty = (
        "" if statuses else "<p>No plugins installed (entry point group plugwarden.plugins).</p>"
    )
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
<table><thead><tr><th>plugin</th><th>state</th><th>version</th><th>reason</th>
<th>ok</th><th>errors</th><th>last</th><th>avg</th><th>last used</th></tr></thead>
<tbody id="rows">{rows}</tbody></table>
<script>{_SCRIPT}</script></body></html>
"""
