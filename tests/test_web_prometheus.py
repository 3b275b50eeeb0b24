"""/metrics: valid Prometheus exposition with the per-plugin series."""

from __future__ import annotations

import shutil
import subprocess

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ECHO, free_port, plugin_source, wait_for


@pytest.fixture
def scraped(plugwarden_plugin, plugwarden_server):
    plugwarden_plugin("good", ECHO)
    plugwarden_plugin("flaky", plugin_source("raise ValueError('x')"))
    plugwarden_plugin(
        "slow",
        plugin_source("import time\ntime.sleep(60)"),
        manifest={"guards": {"timeout_s": 0.5}},
    )
    server = plugwarden_server({"defaults": {"restart": "never"}})
    for _ in range(3):
        server.host.call("good", "t", {})
    server.host.call("flaky", "t", {})
    server.host.call("slow", "t", {})
    return httpx.get(server.url + "/metrics", timeout=30)


def samples(text):
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


class TestMetrics:
    def test_exposition_parses_back_with_the_plugin_series(self, scraped):
        assert scraped.status_code == 200
        assert scraped.headers["content-type"].startswith("text/plain")
        values = samples(scraped.text)
        assert (
            values[("plugwarden_plugin_calls_total", (("outcome", "success"), ("plugin", "good")))]
            == 3
        )
        assert (
            values[("plugwarden_plugin_calls_total", (("outcome", "error"), ("plugin", "flaky")))]
            == 1
        )
        assert (
            values[
                ("plugwarden_plugin_guard_trips_total", (("guard", "timeout"), ("plugin", "slow")))
            ]
            == 1
        )
        assert values[("plugwarden_plugin_state", (("plugin", "slow"), ("state", "FAILED")))] == 1
        assert (
            values[("plugwarden_plugin_state", (("plugin", "flaky"), ("state", "INITIALIZED")))]
            == 1
        )
        assert values[("plugwarden_plugin_healthy", (("plugin", "good"),))] == 1
        assert (
            values[("plugwarden_plugin_state", (("plugin", "good"), ("state", "INITIALIZED")))] == 1
        )
        assert values[("plugwarden_plugin_call_duration_seconds_count", (("plugin", "good"),))] == 3
        assert values[("plugwarden_plugin_worker_resident_bytes", (("plugin", "good"),))] > 0
        assert values[("plugwarden_plugins", (("state", "FAILED"),))] == 1
        assert all(name.startswith("plugwarden_") for name, _ in values)

    @pytest.mark.skipif(
        shutil.which("promtool") is None,
        reason="promtool not installed (Debian package 'prometheus'; .ci/run installs it)",
    )
    def test_promtool_accepts_the_exposition(self, scraped):
        check = subprocess.run(
            ["promtool", "check", "metrics"],
            input=scraped.text,
            capture_output=True,
            text=True,
            check=False,
        )
        assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.skipif(
    shutil.which("prometheus") is None,
    reason="prometheus not installed (Debian package 'prometheus'; .ci/run installs it)",
)
def test_a_real_prometheus_scrapes_the_series(plugwarden_plugin, plugwarden_server, tmp_path):
    """Debian's Prometheus server scrapes a live plugwarden on loopback; a
    plugwarden_ series is read back through its query API."""
    plugwarden_plugin("good", ECHO)
    server = plugwarden_server()
    for _ in range(2):
        server.host.call("good", "t", {})
    target = server.url.removeprefix("http://")
    (tmp_path / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\n"
        "scrape_configs:\n  - job_name: plugwarden\n    scrape_interval: 1s\n"
        f"    static_configs:\n      - targets: ['{target}']\n"
    )
    port = free_port()
    prometheus = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    api = f"http://127.0.0.1:{port}/api/v1/query"
    query = 'plugwarden_plugin_calls_total{plugin="good",outcome="success"}'

    def scraped() -> list:
        try:
            answer = httpx.get(api, params={"query": query}, timeout=5)
        except httpx.HTTPError:
            return []
        return answer.json().get("data", {}).get("result", []) if answer.status_code == 200 else []

    try:
        wait_for(scraped, 90, "Prometheus to scrape plugwarden")
        (series,) = scraped()
        assert series["metric"]["job"] == "plugwarden" and float(series["value"][1]) == 2
        up = httpx.get(api, params={"query": 'up{job="plugwarden"}'}, timeout=5).json()
        assert up["data"]["result"][0]["value"][1] == "1"
    finally:
        prometheus.terminate()
        prometheus.wait(30)
        prometheus.stderr.close()
