"""The plugwarden command, run as a real process against real plugins."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ECHO


@pytest.fixture
def cli(plugwarden_plugin, plugwarden_site, tmp_path):
    plugwarden_plugin("good", ECHO, manifest={"tools": {"echo": "echo"}, "version": "1.2.3"})
    plugwarden_plugin("bad", "raise RuntimeError('weights missing [see docs]')\n")

    def run(*args: str, config: str | None = None) -> subprocess.CompletedProcess[str]:
        if config is not None:
            (tmp_path / "plugwarden.toml").write_text(config)
        env = {**os.environ, "PYTHONPATH": str(plugwarden_site), "COLUMNS": "200"}
        return subprocess.run(
            [sys.executable, "-m", "plugwarden", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    return run


class TestList:
    def test_text_lists_every_plugin_with_state_and_reason(self, cli):
        done = cli("list")
        assert done.returncode == 1  # a plugin is FAILED: not all is well
        assert "good" in done.stdout and "INITIALIZED" in done.stdout
        assert "bad" in done.stdout and "FAILED" in done.stdout
        assert "RuntimeError: weights missing [see docs]" in done.stdout

    def test_json(self, cli):
        done = cli("list", "--json")
        plugins = {p["name"]: p for p in json.loads(done.stdout)}
        assert plugins["good"]["state"] == "INITIALIZED"
        assert plugins["good"]["version"] == "1.2.3"
        assert plugins["bad"]["state"] == "FAILED"

    def test_all_well_exits_zero(self, cli):
        done = cli("list", config="[plugins.bad]\nenabled = false\n")
        assert done.returncode == 0, done.stdout


class TestOneShotCommands:
    def test_run_prints_the_result(self, cli):
        done = cli("run", "good", "echo", "--args", '{"n": 1}', "--json")
        assert done.returncode == 0
        assert json.loads(done.stdout)["result"] == {"tool": "echo", "args": {"n": 1}}

    def test_run_of_failed_plugin_exits_one_with_the_reason(self, cli):
        done = cli("run", "bad", "x")
        assert done.returncode == 1
        assert "PluginNotAvailable" in done.stdout and "weights missing" in done.stdout

    def test_health_and_restart(self, cli):
        health = cli("health", "good", "--json")
        assert health.returncode == 0
        assert json.loads(health.stdout)["state"] == "INITIALIZED"
        restart = cli("restart", "bad", "--json")
        assert restart.returncode == 1
        assert json.loads(restart.stdout)["state"] == "FAILED"

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (("health", "ghost"), "Unknown plugin 'ghost'"),
            (("run", "good", "echo", "--args", "{bad"), "--args is not valid JSON"),
            (("run", "good", "echo", "--args", "[1]"), "--args must be a JSON object"),
        ],
    )
    def test_usage_errors_exit_two_with_a_message(self, cli, args, message):
        done = cli(*args)
        assert done.returncode == 2
        assert message in done.stderr
        assert "Traceback" not in done.stderr

    def test_malformed_config_names_the_key(self, cli):
        done = cli("list", config="[defaults]\ntimeout_s = 'soon'\n")
        assert done.returncode == 2
        assert "defaults.timeout_s" in done.stderr


class TestDoctor:
    def test_text_explains_gpu_and_every_plugin(self, cli):
        done = cli("doctor")
        assert done.returncode == 1
        assert "GPU, driver, CUDA" in done.stdout
        for what in ("hardware", "driver", "torch", "verdict"):
            assert what in done.stdout
        assert "bad" in done.stdout and "weights missing [see docs]" in done.stdout

    def test_json(self, cli):
        report = json.loads(cli("doctor", "--json").stdout)
        assert set(report) == {"python", "platform", "config", "containment", "gpu", "plugins"}
        assert report["containment"]["level"] in ("pid-namespace", "subreaper")
        assert {"pci_devices", "nvml", "torch", "verdict"} <= set(report["gpu"])
        assert {p["name"] for p in report["plugins"]} >= {"good", "bad"}
