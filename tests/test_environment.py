"""What a plugin's processes find in their environment (plugwarden.plugin.environment):
no secret of the host, only the allowlist and the plugin's own ``env`` table."""

from __future__ import annotations

import os

import psutil
import pytest

from plugwarden import ConfigError, HostConfig
from plugwarden.plugin.environment import base_environment
from tests.conftest import plugin_source

ENVIRON = "import os\nreturn dict(os.environ)"


def zygote_of(worker: int) -> psutil.Process:
    """The zygote that forked ``worker``: its ancestor that is a child of this process."""
    return next(p for p in psutil.Process(worker).parents() if p.ppid() == os.getpid())


def environ_of(process: psutil.Process) -> dict[str, str]:
    with open(f"/proc/{process.pid}/environ", "rb") as file:
        raw = file.read()
    pairs = (entry.split(b"=", 1) for entry in raw.split(b"\0") if b"=" in entry)
    return {key.decode(): value.decode() for key, value in pairs}


class TestNoSecretReachesAPlugin:
    def test_the_token_and_other_secrets_reach_neither_worker_nor_zygote(
        self, plugwarden_plugin, plugwarden_host, monkeypatch
    ):
        """The host's PLUGWARDEN_TOKEN and any variable off the allowlist
        are in neither the worker's os.environ nor the zygote's (read from
        /proc, as a plugin would); PATH and the locale are."""
        monkeypatch.setenv("PLUGWARDEN_TOKEN", "host-secret-token")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret")
        monkeypatch.setenv("LC_ALL", "C.UTF-8")
        plugwarden_plugin("nosy", plugin_source(ENVIRON))
        host = plugwarden_host()
        seen = host.call("nosy", "t", {}).result
        zygote = environ_of(zygote_of(host.worker_pids("nosy")[0]))
        for environ in (seen, zygote):
            assert "PLUGWARDEN_TOKEN" not in environ
            assert "AWS_SECRET_ACCESS_KEY" not in environ
            assert "host-secret-token" not in "".join(environ.values())
            assert environ["PATH"] == os.environ["PATH"] and environ["LC_ALL"] == "C.UTF-8"

    def test_a_plugins_env_table_reaches_its_own_workers_only(
        self, plugwarden_plugin, plugwarden_host
    ):
        plugwarden_plugin("granted", plugin_source(ENVIRON))
        plugwarden_plugin("other", plugin_source(ENVIRON))
        host = plugwarden_host({"plugins": {"granted": {"env": {"API_KEY": "k-123"}}}})
        assert host.call("granted", "t", {}).result["API_KEY"] == "k-123"
        assert "API_KEY" not in host.call("other", "t", {}).result

    def test_the_env_table_is_not_a_setting_passed_to_init(
        self, plugwarden_plugin, plugwarden_host
    ):
        """init(config) gets the operator's free-form settings, not the
        variables (they are the environment's)."""
        source = plugin_source(
            "return CONFIG", prelude="CONFIG = {}", init_body="CONFIG.update(config)"
        )
        plugwarden_plugin("p", source)
        host = plugwarden_host({"plugins": {"p": {"env": {"A": "1"}, "threshold": 2}}})
        config = host.call("p", "t", {}).result
        assert config["threshold"] == 2 and "env" not in config


class TestTheEnvTable:
    @pytest.mark.parametrize(
        ("env", "names"),
        [
            ({"PLUGWARDEN_TOKEN": "x"}, "PLUGWARDEN_TOKEN is the host's own"),
            ({"API_KEY": 3}, "API_KEY: expected a string"),
            ({"NOT A NAME": "x"}, "is not an environment variable name"),
            ("API_KEY=x", "expected a table"),
        ],
    )
    def test_a_bad_env_table_is_a_config_error_naming_the_key(self, env, names):
        with pytest.raises(ConfigError) as refused:
            HostConfig.from_dict({"plugins": {"p": {"env": env}}})
        assert "plugins.p.env" in str(refused.value) and names in str(refused.value)

    def test_the_allowlist_keeps_what_programs_need_and_drops_the_rest(self):
        kept = base_environment(
            {
                "PATH": "/bin",
                "HOME": "/root",
                "LC_CTYPE": "C",
                "CUDA_VISIBLE_DEVICES": "0",
                "PLUGWARDEN_URL": "http://x",
                "HTTPS_PROXY": "http://proxy",
                "GITHUB_TOKEN": "t",
            }
        )
        assert kept == {
            "PATH": "/bin",
            "HOME": "/root",
            "LC_CTYPE": "C",
            "CUDA_VISIBLE_DEVICES": "0",
        }
