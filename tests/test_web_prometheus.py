"""/metrics: valid Prometheus exposition with the per-plugin series."""

from __future__ import annotations

import shutil
import subprocess

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ECHO, plugin_source


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
