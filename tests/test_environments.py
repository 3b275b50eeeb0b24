"""Plugins' own environments (plugwarden.environments): built by uv from
the package index, wheels only unless allowed, failures in the installer's
own words, the host's plugwarden provided."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from plugwarden.environments import EnvironmentStore, InstallPlan
from plugwarden.environments.runtime import PACKAGE, WORKER_REQUIRES
from plugwarden.environments.uvtool import Uv, uv_environment
from plugwarden.exceptions import InstallFailed
from plugwarden.plugin.discovery import discover
from tests.envkit import make_wheel, write_project


def said(phase: str, message: str) -> None:
    """Progress is not what these tests look at."""


@pytest.fixture
def store(tmp_path):
    return EnvironmentStore(tmp_path / "plugins")


def run_in(environment, code: str) -> str:
    done = subprocess.run(
        [environment.python, "-c", code], capture_output=True, text=True, check=True, cwd="/"
    )
    return done.stdout.strip()


def tiny_sdist(folder: Path) -> Path:
    """A source distribution of a one-module project (building it runs setuptools)."""
    project = write_project(folder / "tinysdist-1.0", "tinysdist", "VALUE = 42\n")
    (project / "PKG-INFO").write_text("Metadata-Version: 2.1\nName: tinysdist\nVersion: 1.0\n")
    archive = folder / "tinysdist-1.0.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(project, arcname=project.name)
    return archive


class TestBuild:
    def test_a_wheel_installs_with_its_pins_and_the_hosts_plugwarden(self, store, tmp_path):
        wheel = make_wheel(tmp_path, "pinned", requires=("six==1.16.0", "plugwarden>=99"))
        environment = store.build(InstallPlan.of((str(wheel),), False), said)
        packages = dict(environment.packages)
        assert packages["six"] == "1.16.0"
        # plugwarden is not on the index: the host's own, whatever the plugin asked.
        found = run_in(
            environment, "import plugwarden, os; print(os.path.realpath(plugwarden.__path__[0]))"
        )
        assert found == str(PACKAGE)
        assert {"pluggy", "wrapt"} == {line.split(">=")[0] for line in WORKER_REQUIRES}
        (plugin,) = discover(environment=environment).plugins.values()
        assert plugin.name == "pinned" and plugin.environment == environment

    def test_a_project_directory_is_built_only_if_allowed_with_what_it_asks(self, store, tmp_path):
        project = write_project(
            tmp_path / "project",
            "overridden",
            tail="""
            dependencies = ["six==1.16.0"]
            [project.entry-points."plugwarden.plugins"]
            overridden = "overridden"
            [project.optional-dependencies]
            more = ["iniconfig"]
            [tool.plugwarden.environment]
            extras = ["more"]
            requires = ["tomli-w"]
            overrides = ["six==1.17.0"]
            """,
        )
        with pytest.raises(InstallFailed) as refused:  # building runs its code on the server
            InstallPlan.of((str(project),), False)
        assert "allow_sdist = true" in refused.value.reason
        environment = store.build(InstallPlan.of((str(project),), True), said)
        packages = dict(environment.packages)
        assert packages["six"] == "1.17.0"  # the override won over its own pin
        assert {"iniconfig", "tomli_w"} <= {name.replace("-", "_") for name in packages}

    def test_a_built_project_with_extras_installs_as_a_requirement_line(self, store, tmp_path):
        wheel = make_wheel(tmp_path, "extrasy", requires=('six==1.16.0; extra == "more"',))
        line = f"extrasy[more] @ {wheel.as_uri()}"
        environment = store.build(InstallPlan.of((line,), False), said)
        assert dict(environment.packages)["six"] == "1.16.0"

    def test_an_sdist_is_refused_unless_the_operator_allows_it(self, store, tmp_path):
        sdist = tiny_sdist(tmp_path)
        with pytest.raises(InstallFailed) as refused:
            store.build(InstallPlan.of((str(sdist),), False), said)
        assert "Building source distributions is disabled" in refused.value.reason
        assert not any((tmp_path / "plugins" / "envs").iterdir())  # nothing left behind
        allowed = store.build(InstallPlan.of((str(sdist),), True), said)
        assert run_in(allowed, "import tinysdist; print(tinysdist.VALUE)") == "42"

    def test_an_unknown_package_is_answered_with_the_installers_reason(self, store):
        with pytest.raises(InstallFailed) as refused:
            store.build(InstallPlan.of(("plugwarden-no-such-package-zq",), False), said)
        assert "plugwarden-no-such-package-zq was not found in the package registry" in (
            refused.value.reason
        )

    def test_no_network_to_the_index_is_answered_with_the_installers_reason(self, tmp_path):
        closed = {**os.environ, "UV_INDEX_URL": "http://127.0.0.1:9/simple",
                  "UV_NO_CACHE": "1", "UV_HTTP_RETRIES": "0"}  # fmt: skip
        closed.pop("PIP_FIND_LINKS", None)
        closed.pop("UV_FIND_LINKS", None)
        store = EnvironmentStore(tmp_path / "plugins", Uv(environ=closed))
        with pytest.raises(InstallFailed) as refused:
            store.build(InstallPlan.of(("six==1.16.0",), False), said)
        assert "127.0.0.1:9" in refused.value.reason
        assert "Connection refused" in refused.value.reason

    @pytest.mark.parametrize(
        "spec",
        [
            "--index-url=http://127.0.0.1:9/",
            " -e .",
            "six\n--pre",
            "",
            "x" * 5000,
            "six ª=1",
            "a b",
        ],
    )
    def test_a_spec_that_is_not_one_requirement_is_refused(self, spec):
        with pytest.raises(InstallFailed):
            InstallPlan.of((spec,), False)

    @pytest.mark.parametrize("spec", ["six==1.16.0", "six[x]>=1; python_version>'3'", "./p.whl"])
    def test_a_requirement_or_a_path_is_taken(self, spec):
        assert InstallPlan.of((spec,), False).specs == (spec,)


class TestNaming:
    def test_commit_keeps_the_previous_and_removes_older_ones(self, store, tmp_path):
        built = [
            store.build(InstallPlan.of((str(make_wheel(tmp_path / v, "p", v)),), False), said)
            for v in ("1.0", "2.0", "3.0")
        ]
        for environment, version in zip(built, ("1.0", "2.0", "3.0"), strict=True):
            store.commit("p", environment.id, version, "upgraded")
        entry = store.index()["p"]
        assert (entry["current"], entry["previous"]) == (built[2].id, built[1].id)
        assert not Path(built[0].root).exists()
        store.swap("p", "2.0")
        assert store.current()["p"].id == built[1].id
        versions = [(v["version"], v["event"]) for v in store.current()["p"].versions]
        assert versions == [("1.0", "upgraded"), ("2.0", "upgraded"), ("3.0", "upgraded"),
                            ("2.0", "rolled back")]  # fmt: skip

    def test_sweep_removes_what_a_dead_install_left(self, store, tmp_path):
        orphan = tmp_path / "plugins" / "envs" / "123-abcdef"
        orphan.mkdir(parents=True)
        store.sweep()
        assert not orphan.exists()

    def test_an_edited_index_cannot_name_a_folder_outside(self, store, tmp_path):
        outside = tmp_path / "precious"
        outside.mkdir()
        (tmp_path / "plugins").mkdir()
        (tmp_path / "plugins" / "installed.json").write_text(
            json.dumps({"plugins": {"p": {"current": "../../precious", "previous": None}}})
        )
        assert store.current() == {}
        store.forget("p")
        assert outside.exists()

    def test_a_damaged_index_names_no_environment(self, store, tmp_path):
        kept = tmp_path / "plugins" / "envs" / "123-abcdef"
        kept.mkdir(parents=True)
        (tmp_path / "plugins" / "installed.json").write_text("{not json")
        assert store.current() == {}
        store.sweep()
        assert kept.exists()  # perhaps named in the index it cannot read: never removed
        (tmp_path / "plugins" / "installed.json").write_text(json.dumps({"plugins": {"p": {}}}))
        assert store.current() == {}


class TestPipSettings:
    def test_pips_config_and_variables_reach_uv(self, tmp_path):
        conf = tmp_path / "pip.conf"
        conf.write_text(
            "[global]\nindex-url = https://index.invalid/simple\n"
            "extra-index-url = file:///x/simple\n    file:///y/simple\n"
            "[install]\nfind-links = /w1\n    /w2\n"
        )
        env = uv_environment(
            {"PIP_CONFIG_FILE": str(conf), "PIP_FIND_LINKS": "/w3", "PLUGWARDEN_TOKEN": "s3cret"}
        )
        assert env["UV_INDEX_URL"] == "https://index.invalid/simple"
        assert env["UV_EXTRA_INDEX_URL"] == "file:///x/simple file:///y/simple"
        assert env["UV_FIND_LINKS"] == "/w3"  # pip's variable over its file, as pip reads them
        assert env["UV_INDEX_STRATEGY"] == "unsafe-best-match"  # pip's choice among indexes
        assert "PLUGWARDEN_TOKEN" not in env  # a source build runs a package's code

    def test_uvs_own_settings_win(self):
        env = uv_environment({"PIP_INDEX_URL": "https://a.invalid/", "UV_INDEX_URL": "https://b/"})
        assert env["UV_INDEX_URL"] == "https://b/"
