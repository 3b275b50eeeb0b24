"""The host config: TOML file, dict or defaults; errors name the key."""

from __future__ import annotations

import pytest

from plugwarden import ConfigError, HostConfig
from plugwarden.plugin.limits import Limits
from plugwarden.plugin.manifest import GuardSettings, Manifest
from plugwarden.plugin.policy import RestartPolicy
from plugwarden.sections import JobsConfig, RayConfig, ServerConfig
from plugwarden.settings import resolve


def _numeric_fields(cls: type, section: str) -> list[str]:
    return [
        f"{section}.{name}"
        for name, spec in cls.__dataclass_fields__.items()
        if spec.type in ("int", "float", "int | None", "float | None")
    ]


NUMERIC_KEYS = sorted(
    {
        *_numeric_fields(Limits, "defaults"),
        *_numeric_fields(RestartPolicy, "defaults"),
        *_numeric_fields(ServerConfig, "server"),
        *_numeric_fields(JobsConfig, "jobs"),
        *_numeric_fields(RayConfig, "ray"),
        *_numeric_fields(HostConfig, "defaults"),
        *_numeric_fields(Limits, "plugins.p"),
        "plugins.p.num_cpus",
        "plugins.p.num_gpus",
    }
)


class TestHostConfig:
    def test_defaults_without_any_file(self, tmp_path, monkeypatch):
        monkeypatch.chdir(tmp_path)
        monkeypatch.delenv("PLUGWARDEN_TOKEN", raising=False)
        config = HostConfig.load()
        assert config.defaults.timeout_s == 60 and config.defaults.memory_mb == 1024
        assert config.defaults.isolation == "process"
        assert (config.server.host, config.server.token) == ("127.0.0.1", None)

    def test_file_in_working_directory_is_read(self, tmp_path, monkeypatch):
        monkeypatch.chdir(tmp_path)
        (tmp_path / "plugwarden.toml").write_text(
            "[defaults]\ntimeout_s = 5\n[plugins.vision]\nmemory_mb = 4096\nthreshold = 0.5\n"
            "[server]\nport = 9000\n"
        )
        config = HostConfig.load()
        assert config.defaults.timeout_s == 5
        assert config.plugin("vision").guards.memory_mb == 4096
        assert config.plugin("vision").settings == {"threshold": 0.5}
        assert config.server.port == 9000

    def test_operator_wins_over_manifest_over_defaults(self):
        config = HostConfig.from_dict(
            {"defaults": {"timeout_s": 10, "memory_mb": 100}, "plugins": {"p": {"timeout_s": 99}}}
        )
        limits = resolve(
            "p", Manifest(guards=GuardSettings(timeout_s=20, memory_mb=60)), config
        ).limits
        # Over the defaults, the manifest only lowers (test_settings: the ceiling).
        assert (limits.timeout_s, limits.memory_mb) == (99, 60)
        assert resolve("other", Manifest(guards=GuardSettings()), config).limits.timeout_s == 10

    def test_token_from_the_environment(self, monkeypatch, tmp_path):
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("PLUGWARDEN_TOKEN", "s3cret")
        assert HostConfig.load().server.token == "s3cret"

    @pytest.mark.parametrize(
        ("data", "key"),
        [
            ({"defaults": {"timeout_s": "fast"}}, "defaults.timeout_s"),
            ({"defaults": {"isolation": "thread"}}, "defaults.isolation"),
            ({"defaults": {"timeout": 5}}, "defaults.timeout"),
            ({"server": {"port": 70000}}, "server.port"),
            ({"server": {"hots": "0.0.0.0"}}, "server.hots"),
            ({"plugins": {"p": {"enabled": "no"}}}, "plugins.p.enabled"),
            ({"plugins": {"p": 3}}, "plugins.p"),
            ({"plugin": {}}, "plugin"),
            ({"jobs": {"paht": "x"}}, "jobs.paht"),
            ({"jobs": {"path": ""}}, "jobs.path"),
            ({"jobs": {"keep_max": 0}}, "jobs.keep_max"),
            ({"jobs": {"keep_s": -1}}, "jobs.keep_s"),
            ({"jobs": {"max_queued_jobs": 1.5}}, "jobs.max_queued_jobs"),
            ({"ray": {"adress": "auto"}}, "ray.adress"),
            ({"ray": {"address": 1}}, "ray.address"),
            ({"ray": {"object_store_mb": 0}}, "ray.object_store_mb"),
            ({"plugins": {"p": {"num_gpus": -1}}}, "plugins.p.num_gpus"),
            ({"plugins": {"p": {"num_cpus": True}}}, "plugins.p.num_cpus"),
            ({"defaults": {"isolation": "cluster"}}, "defaults.isolation"),
            ({"jobs": {"cancel_grace_s": "5"}}, "jobs.cancel_grace_s"),
            ({"plugins": {"p": {"job_timeout_s": 0}}}, "plugins.p.job_timeout_s"),
        ],
    )
    def test_malformed_config_names_the_key(self, data, key):
        with pytest.raises(ConfigError) as info:
            HostConfig.from_dict(data)
        assert info.value.key == key

    @pytest.mark.parametrize("key", NUMERIC_KEYS)
    def test_every_number_out_of_range_is_an_error_naming_its_key(self, key):
        """A huge value fails at startup, never as an overflow later."""
        *path, leaf = key.split(".")
        data: dict = {}
        table = data
        for part in path:
            table = table.setdefault(part, {})
        table[leaf] = 99999999999999999999
        with pytest.raises(ConfigError) as info:
            HostConfig.from_dict(data)
        assert info.value.key == key

    def test_malformed_toml_file_is_an_error_not_a_default(self, tmp_path):
        path = tmp_path / "bad.toml"
        path.write_text("[defaults\n")
        with pytest.raises(ConfigError, match="not valid TOML"):
            HostConfig.load(path)

    def test_a_config_nested_past_the_parser_is_an_error(self, tmp_path):
        path = tmp_path / "deep.toml"
        path.write_text("x = " + "[" * 5000 + "]" * 5000 + "\n")
        with pytest.raises(ConfigError, match="nests too deeply"):
            HostConfig.load(path)

    def test_missing_explicit_file_is_an_error(self, tmp_path):
        with pytest.raises(ConfigError, match="cannot be read"):
            HostConfig.load(tmp_path / "absent.toml")


class TestRayConfig:
    def test_ray_table_and_per_plugin_resources(self):
        config = HostConfig.from_dict(
            {
                "defaults": {"isolation": "ray"},
                "ray": {"address": " auto ", "num_cpus": 4, "object_store_mb": 100},
                "plugins": {"p": {"num_cpus": 0.5, "num_gpus": 1, "workers": 2, "x": 1}},
            }
        )
        assert config.ray.address == "auto"
        assert config.ray.num_cpus == 4.0
        assert config.ray.object_store_mb == 100.0
        assert config.ray.namespace == "plugwarden"
        plugin = config.plugin("p")
        assert (plugin.num_cpus, plugin.num_gpus) == (0.5, 1.0)
        assert plugin.settings == {"x": 1}  # resources are not passed to init
        assert resolve("p", Manifest(guards=GuardSettings()), config).limits.isolation == "ray"

    def test_without_a_ray_table_a_local_cluster_is_bounded(self):
        config = HostConfig.from_dict({})
        assert config.ray.address == ""
        assert config.ray.object_store_mb == 256.0
        assert config.plugin("p").num_gpus is None


class TestJobsConfig:
    def test_jobs_table_and_job_timeout(self):
        config = HostConfig.from_dict(
            {
                "jobs": {"path": ":memory:", "keep_s": 60, "keep_max": 5, "max_queued_jobs": 2,
                         "cancel_grace_s": 0.5},
                "plugins": {"p": {"job_timeout_s": 7200}},
            }
        )  # fmt: skip
        jobs = config.jobs
        assert (jobs.database(), jobs.keep_s, jobs.keep_max) == (":memory:", 60, 5)
        assert (jobs.max_queued_jobs, jobs.cancel_grace_s) == (2, 0.5)
        assert resolve("p", Manifest(guards=GuardSettings()), config).limits.job_timeout_s == 7200
        assert resolve("q", Manifest(guards=GuardSettings()), config).limits.job_timeout_s == 3600

    def test_the_default_database_is_under_the_users_state_directory(self, monkeypatch, tmp_path):
        monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
        assert HostConfig().jobs.database() == str(tmp_path / "plugwarden" / "jobs.sqlite3")
        monkeypatch.delenv("XDG_STATE_HOME")
        monkeypatch.setenv("HOME", str(tmp_path))
        assert HostConfig().jobs.database().endswith(".local/state/plugwarden/jobs.sqlite3")
