"""The install routes (plugwarden.web.installroutes) on a live server, and
the CLI's install, upgrade, rollback and uninstall against it."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from tests.envkit import PINNED, make_wheel, write_project
from tests.test_cli import TOKEN, cli  # noqa: F401 - the cli fixture

AUTH = {"Authorization": f"Bearer {TOKEN}"}
PINNED_SOURCE = PINNED.format(version="1.0", valid=True, crash_on=0)


@pytest.fixture
def served(plugwarden_server, tmp_path):
    return plugwarden_server(
        {"server": {"token": TOKEN, "plugins_dir": str(tmp_path / "plugins"), "probation_s": 0.2}}
    )


@pytest.fixture
def wheel(tmp_path):
    return lambda name, version="1.0", **options: str(
        make_wheel(tmp_path / "wheels" / version, name, version, ("six==1.16.0",), **options)
    )


def ended(url: str, location: str) -> dict:
    deadline = time.monotonic() + 180
    while True:
        job = httpx.get(url + location, headers=AUTH, timeout=10).json()
        if job["state"] not in ("queued", "running"):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.1)


class TestRoutes:
    def test_install_upgrade_rollback_uninstall_are_jobs(self, served, wheel):
        url = served.url
        answer = httpx.post(f"{url}/v1/plugins", json={"spec": wheel("viahttp")}, headers=AUTH)
        assert answer.status_code == 202, answer.text
        assert answer.headers["Location"] == f"/v1/jobs/{answer.json()['id']}"
        job = ended(url, answer.headers["Location"])
        assert job["state"] == "succeeded", job
        assert job["progress"]["message"].startswith(("starting", "checking"))
        run = httpx.post(f"{url}/v1/plugins/viahttp/run", json={"tool": "which"}, headers=AUTH)
        assert run.json()["result"]["version"] == "1.0"
        record = httpx.get(f"{url}/v1/plugins/viahttp").json()
        assert record["environment"]["packages"]["six"] == "1.16.0"
        upgrade = httpx.post(
            f"{url}/v1/plugins/viahttp/upgrade", json={"spec": [wheel("viahttp", "2.0")]},
            headers=AUTH,
        )  # fmt: skip
        assert ended(url, upgrade.headers["Location"])["state"] == "succeeded"
        run = httpx.post(f"{url}/v1/plugins/viahttp/run", json={"tool": "which"}, headers=AUTH)
        assert run.json()["result"]["version"] == "2.0"
        back = httpx.post(f"{url}/v1/plugins/viahttp/rollback", headers=AUTH)
        assert ended(url, back.headers["Location"])["state"] == "succeeded"
        run = httpx.post(f"{url}/v1/plugins/viahttp/run", json={"tool": "which"}, headers=AUTH)
        assert run.json()["result"]["version"] == "1.0"
        gone = httpx.delete(f"{url}/v1/plugins/viahttp", headers=AUTH)
        assert ended(url, gone.headers["Location"])["state"] == "succeeded"
        assert httpx.get(f"{url}/v1/plugins/viahttp").status_code == 404

    @pytest.mark.parametrize(
        ("body", "status"),
        [
            ({}, 422),
            ({"spec": []}, 422),
            ({"spec": 3}, 422),
            ({"spec": "--index-url=http://127.0.0.1:9/"}, 422),
            ({"spec": "x", "extra": 1}, 422),
            ({"spec": "yª8"}, 422),
            ([1], 422),
        ],
    )
    def test_a_malformed_install_is_refused_before_any_job(self, served, body, status):
        answer = httpx.post(f"{served.url}/v1/plugins", json=body, headers=AUTH)
        assert answer.status_code == status, answer.text
        assert answer.json()["error_type"] == "InvalidRequest"
        assert served.host.live_jobs() == []

    def test_every_install_route_needs_the_token(self, served):
        url = served.url
        for method, path in [
            ("POST", "/v1/plugins"),
            ("POST", "/v1/plugins/x/upgrade"),
            ("POST", "/v1/plugins/x/rollback"),
            ("DELETE", "/v1/plugins/x"),
        ]:
            answer = httpx.request(method, url + path, json={"spec": "six"})
            assert answer.status_code == 401, (method, path, answer.text)

    def test_an_unknown_plugin_is_404(self, served):
        answer = httpx.post(f"{served.url}/v1/plugins/nope/rollback", headers=AUTH)
        assert answer.status_code == 404
        assert answer.json()["error_type"] == "UnknownPlugin"

    def test_a_failed_install_says_why_in_its_job(self, served):
        answer = httpx.post(
            f"{served.url}/v1/plugins", json={"spec": "plugwarden-no-such-package-zq"},
            headers=AUTH,
        )  # fmt: skip
        job = ended(served.url, answer.headers["Location"])
        assert job["state"] == "failed"
        assert job["record"]["error_type"] == "InstallFailed"
        assert "not found in the package registry" in job["record"]["error"]


class TestCommands:
    def test_install_and_uninstall_from_the_command_line(self, cli, served, wheel):  # noqa: F811
        done = cli("install", wheel("viacli"), "--token", TOKEN, url=served.url)
        assert done.returncode == 0, done.stderr
        assert "succeeded" in done.stdout
        listed = json.loads(cli("list", "--json", url=served.url).stdout)
        assert "viacli" in {record["name"] for record in listed}
        doctor = json.loads(cli("doctor", "--json", url=served.url).stdout)
        (record,) = [r for r in doctor["plugins"] if r["name"] == "viacli"]
        assert record["environment"]["path"].startswith(str(served.host.config.server.plugins_dir))
        shown = cli("doctor", url=served.url).stdout
        assert "own:" in shown
        done = cli("uninstall", "viacli", "--token", TOKEN, "--json", url=served.url)
        assert done.returncode == 0 and json.loads(done.stdout)["state"] == "succeeded"

    def test_a_project_directory_is_built_by_the_command_not_the_server(
        self,
        cli,  # noqa: F811
        served,
        tmp_path,
    ):
        project = write_project(
            tmp_path / "project",
            "fromdir",
            PINNED_SOURCE,
            tail="""
            dependencies = ["six==1.16.0"]
            [project.entry-points."plugwarden.plugins"]
            fromdir = "fromdir"
            [tool.plugwarden.environment]
            overrides = ["six==1.17.0"]
            """,
        )
        done = cli("install", str(project), "--token", TOKEN, "--json", url=served.url)
        assert done.returncode == 0, done.stderr
        job = json.loads(done.stdout)
        assert job["args"]["overrides"] == ["six==1.17.0"]
        assert job["args"]["spec"][0].endswith(".whl")  # the server got a wheel
        result = served.host.call("fromdir", "which", {})
        assert result.result["six"] == "1.17.0"  # the project's override won
        # Over HTTP the server itself builds nothing from source unless allowed.
        answer = httpx.post(f"{served.url}/v1/plugins", json={"spec": str(project)}, headers=AUTH)
        refused = ended(served.url, answer.headers["Location"])
        assert refused["state"] == "failed" and "allow_sdist" in refused["record"]["error"]

    def test_a_failed_install_exits_one_with_the_installers_reason(self, cli, served):  # noqa: F811
        done = cli("install", "plugwarden-no-such-package-zq", "--token", TOKEN, url=served.url)
        assert done.returncode == 1
        assert "InstallFailed" in done.stdout and "package registry" in done.stdout

    def test_local_installs_need_no_server_and_persist(self, cli, wheel, tmp_path):  # noqa: F811
        config = f'[server]\nplugins_dir = "{tmp_path / "local-plugins"}"\n'
        done = cli("install", wheel("offline"), "--local", "--json", config=config)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["state"] == "succeeded"
        listed = cli("list", "--local", "--json", config=config)  # a new host finds it
        (record,) = [r for r in json.loads(listed.stdout) if r["name"] == "offline"]
        assert record["state"] == "INITIALIZED" and record["environment"] is not None
