"""Installs on a running host (plugwarden.host.installs and .versions):
plugins in environments of their own built by uv, installed, upgraded,
rolled back and uninstalled while calls go on, none of them failing."""

from __future__ import annotations

import importlib.util
import json
import os
import threading
import time
from pathlib import Path

import psutil
import pytest

from plugwarden import ErrorType, State, UnknownPlugin
from tests.conftest import plugin_source, wait_for
from tests.envkit import PINNED as PINNED_SOURCE
from tests.envkit import calling, make_wheel

SIX_OLD, SIX_NEW = "six==1.16.0", "six==1.17.0"
# Healthy for its smoke check, sick at the next health check.
SICKENS = """
CHECKS = [0]


@hookimpl
def health():
    CHECKS[0] += 1
    if CHECKS[0] > 1:
        raise RuntimeError("sick")
    return {"fine": True}
"""


def six_file(host, name: str) -> str:
    return host.call(name, "which", {}).result["six_file"]


def processes_of(root: str) -> list[int]:
    """Processes running a Python of the environment at ``root``."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        command = process.info["cmdline"] or []
        if command and command[0].startswith(root + os.sep):
            found.append(process.pid)
    return found


def finished(host, job, timeout_s: float = 180.0):
    """``job`` once it has ended (waiting on its changes, with a deadline)."""
    changed = threading.Event()
    unwatch = host.watch_job(job.id, changed.set)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            current = host.job(job.id)
            if current.finished:
                return current
            assert time.monotonic() < deadline, f"job still {current.state}: {current.progress}"
            changed.wait(0.5)
            changed.clear()
    finally:
        unwatch()


@pytest.fixture
def installing(plugwarden_host, tmp_path):
    """``make(probation_s=60) -> Host`` with plugins_dir in ``tmp_path``."""

    def make(probation_s: float = 60.0, plugins=None, defaults=None, **server):
        folder = tmp_path / "plugins"
        config = {
            "server": {"plugins_dir": str(folder), "probation_s": probation_s, **server},
            "plugins": plugins or {},
            "defaults": defaults or {},
        }
        return plugwarden_host(config)

    return make


@pytest.fixture
def wheels(tmp_path):
    return lambda *args, **options: make_wheel(tmp_path / "wheels", *args, **options)


def installed(host, *specs):
    job = finished(host, host.install([str(spec) for spec in specs]))
    assert job.state == "succeeded", job.outcome
    return job


class TestOwnEnvironments:
    def test_two_plugins_pinning_different_versions_each_import_their_own(self, installing, wheels):
        host = installing()
        installed(host, wheels("oldsix", requires=(SIX_OLD,)))
        installed(host, wheels("newsix", requires=(SIX_NEW,)))
        old = host.call("oldsix", "which", {})
        new = host.call("newsix", "which", {})
        assert old.ok and new.ok, (old, new)
        assert (old.result["six"], new.result["six"]) == ("1.16.0", "1.17.0")
        roots = [host.status(n).to_dict()["environment"]["path"] for n in ("oldsix", "newsix")]
        assert roots[0] != roots[1]
        assert old.result["six_file"].startswith(roots[0] + os.sep)
        assert new.result["six_file"].startswith(roots[1] + os.sep)
        assert importlib.util.find_spec("six") is None  # the host's environment has neither

    def test_an_array_reaches_a_plugin_without_numpy_as_a_blob(self, installing, wheels):
        """Its environment has no numpy: the array arrives as a Blob (dtype,
        shape, bytes), and one it returns comes back as a Blob too."""
        import numpy as np

        source = (
            "from plugwarden import hookimpl\n\n@hookimpl\ndef validate():\n    return True\n\n"
            "@hookimpl\ndef run(tool, args):\n    blob = args['a']\n"
            "    return {'type': type(blob).__name__, 'dtype': blob.dtype, "
            "'shape': list(blob.shape), 'back': blob}\n"
        )
        host = installing()
        installed(host, wheels("nonumpy", source=source))
        array = np.arange(6, dtype="<i4").reshape(2, 3)
        result = host.call("nonumpy", "t", {"a": array})
        assert result.ok, result.error
        assert {k: result.result[k] for k in ("type", "dtype", "shape")} == {
            "type": "Blob", "dtype": "<i4", "shape": [2, 3]}  # fmt: skip
        np.testing.assert_array_equal(np.asarray(result.result["back"]), array)

    def test_the_record_shows_the_environment_and_its_packages(self, installing, wheels):
        host = installing()
        installed(host, wheels("oldsix", requires=(SIX_OLD,)))
        environment = host.status("oldsix").to_dict()["environment"]
        assert environment["packages"]["six"] == "1.16.0"
        assert Path(environment["python"]).name == "python"
        # The worker side in it: the host's plugwarden, pluggy and wrapt, nothing else.
        assert set(environment["packages"]) == {"oldsix", "six", "plugwarden", "pluggy", "wrapt"}

    def test_no_code_of_the_environment_runs_in_its_zygote(self, installing, wheels, tmp_path):
        """A .pth file runs when the interpreter starts: the environment's
        zygote starts without site-packages, its workers read them."""
        marker = tmp_path / "pth-ran"
        line = (
            f"import sys, os; open({str(marker)!r}, 'a').write("
            "str('plugwarden.isolation.loader' in sys.modules) + f':{os.getpid()}' + chr(10))\n"
        )
        host = installing()
        installed(host, wheels("pth", requires=(SIX_OLD,), extra={"pth_hook.pth": line}))
        assert host.call("pth", "which", {}).ok
        ran = marker.read_text().split()
        assert ran and all(line.startswith("True:") for line in ran), ran  # in workers only

    def test_its_workers_are_sandboxed_and_see_nothing_of_the_hosts_environment(
        self, installing, wheels
    ):
        host = installing()
        installed(host, wheels("boxed", requires=(SIX_OLD,)))
        protections = host.status("boxed").to_dict()["protections"]
        if not protections.get("filesystem", "").startswith("enforced"):
            pytest.skip(f"no Landlock here: {protections.get('filesystem')}")
        hosts_own = importlib.util.find_spec("starlette").origin  # a package of the host's
        refused = host.call("boxed", "read", {"path": hosts_own})
        assert not refused.ok and refused.error_type == "PermissionError", refused
        # The job database is hidden (an empty file in its place) or refused, as for any plugin.
        database = host.call("boxed", "read", {"path": host.config.jobs.database()})
        assert not database.ok or database.result == "", database
        assert host.call("boxed", "read", {"path": six_file(host, "boxed")}).ok

    def test_its_zygote_preloads_from_its_own_environment(self, installing, wheels, tmp_path):
        log = tmp_path / "imports.log"
        probe = f"import os\nwith open({str(log)!r}, 'a') as out:\n    out.write('x\\n')\n"
        manifest = 'preload = ["six", "warm_probe"]\n'
        host = installing(plugins={"warm": {"preload": True}})
        extra = {"warm_probe.py": probe, "warm/manifest.toml": manifest}
        installed(host, wheels("warm", requires=(SIX_OLD,), extra=extra))
        (pid,) = host.worker_pids("warm")
        os.kill(pid, 9)
        wait_for(lambda: host.worker_pids("warm") not in ([], [pid]), 60)
        assert host.call("warm", "which", {}).result["six"] == "1.16.0"
        assert log.read_text().split() == ["x"]  # once, by the zygote, for both workers

    def test_a_restarted_host_finds_the_installed_plugins(self, installing, wheels):
        host = installing()
        installed(host, wheels("oldsix", requires=(SIX_OLD,)))
        host.close()
        again = installing()
        assert again.status("oldsix").state is State.INITIALIZED
        assert again.call("oldsix", "which", {}).result["six"] == "1.16.0"


class TestLiveInstall:
    def test_an_install_into_a_running_host_fails_no_call(self, installing, wheels):
        host = installing()
        installed(host, wheels("steady", requires=(SIX_OLD,)))
        with calling(lambda: host.call("steady", "which", {})) as failures:
            job = installed(host, wheels("newcomer", requires=(SIX_NEW,)))
        assert failures == []
        assert host.status("newcomer").state is State.INITIALIZED
        phases = job.progress.message
        assert phases.startswith("starting") or phases.startswith("checking"), phases

    def test_an_operator_isolation_other_than_process_is_refused_with_the_reason(
        self, installing, wheels
    ):
        host = installing(plugins={"inhost": {"isolation": "inline"}})
        job = finished(host, host.install([str(wheels("inhost", requires=(SIX_OLD,)))]))
        assert job.state == "failed"
        assert "is not available to a plugin in an environment of its own" in job.outcome["error"]

    def test_a_name_already_installed_is_refused_and_nothing_changes(self, installing, wheels):
        host = installing()
        installed(host, wheels("steady", requires=(SIX_OLD,)))
        again = finished(host, host.install([str(wheels("steady", "2.0", (SIX_NEW,)))]))
        assert again.state == "failed"
        assert again.outcome["error_type"] == ErrorType.INSTALL_FAILED
        assert "already installed" in again.outcome["error"]
        assert "plugwarden upgrade steady" in again.outcome["error"]
        assert host.call("steady", "which", {}).result["version"] == "1.0"

    def test_a_plugin_that_fails_its_checks_is_not_left_installed(
        self, installing, wheels, tmp_path
    ):
        host = installing()
        job = finished(
            host, host.install([str(wheels("broken", requires=(SIX_OLD,), valid="not today"))])
        )
        assert job.state == "failed" and "not today" in job.outcome["error"]
        with pytest.raises(UnknownPlugin):
            host.status("broken")
        assert not any((tmp_path / "plugins" / "envs").iterdir())


class TestUpgrade:
    def test_an_upgrade_whose_validate_fails_keeps_the_old_version(
        self, installing, wheels, tmp_path
    ):
        host = installing()
        installed(host, wheels("steady", requires=(SIX_OLD,)))
        broken = wheels("steady", "2.0", (SIX_NEW,), valid="refuses to start")
        with calling(lambda: host.call("steady", "which", {})) as failures:
            job = finished(host, host.upgrade("steady", [str(broken)]))
        assert failures == []
        assert job.state == "failed" and job.outcome["error_type"] == ErrorType.INSTALL_FAILED
        assert "refuses to start" in job.outcome["error"]
        assert host.call("steady", "which", {}).result["version"] == "1.0"
        history = [t.reason for t in host.status("steady").history]
        assert any("Upgrade to steady 2.0 refused" in reason for reason in history), history
        # The refused version's zygote is gone with it: only the serving one's remains.
        serving = host.status("steady").to_dict()["environment"]["path"]
        envs = str(Path(serving).parent)
        wait_for(lambda: processes_of(envs) == processes_of(serving), 30)

    def test_an_upgrade_that_crashes_in_probation_is_rolled_back_with_no_failed_call(
        self, installing, wheels
    ):
        host = installing(probation_s=120)
        installed(host, wheels("steady", requires=(SIX_OLD,)))
        crashing = wheels("steady", "2.0", (SIX_NEW,), crash_on=2)
        with calling(lambda: host.call("steady", "which", {})) as failures:
            job = finished(host, host.upgrade("steady", [str(crashing)]))
        assert failures == []
        assert job.state == "failed" and job.outcome["error_type"] == ErrorType.ROLLED_BACK
        assert "rolled back to 1.0" in job.outcome["error"]
        status = host.status("steady")
        assert status.state is State.INITIALIZED
        assert host.call("steady", "which", {}).result["version"] == "1.0"
        assert any(t.reason.startswith("Rolled back to 1.0") for t in status.history)
        versions = status.to_dict()["environment"]["versions"]
        assert [(v["version"], v["event"]) for v in versions] == [
            ("1.0", "installed"),
            ("2.0", "rolled back"),
        ]

    def test_an_upgrade_that_turns_unhealthy_in_probation_is_rolled_back(self, installing, wheels):
        # Two workers: the caller holds one at a time, the health checks find the other
        # (a health check skips a plugin whose workers are all busy).
        host = installing(
            probation_s=120,
            defaults={"health_interval_s": 0.1},
            plugins={"steady": {"workers": 2}},
        )
        host.start_health_checks()
        installed(host, wheels("steady", requires=(SIX_OLD,)))
        sick = PINNED_SOURCE.format(version="2.0", valid=True, crash_on=0) + SICKENS
        upgrade = wheels("steady", "2.0", (SIX_NEW,), source=sick)
        with calling(lambda: host.call("steady", "which", {})) as failures:
            job = finished(host, host.upgrade("steady", [str(upgrade)]))
        assert failures == []
        assert job.outcome["error_type"] == ErrorType.ROLLED_BACK
        assert "health check failed" in job.outcome["error"] and "sick" in job.outcome["error"]
        assert host.call("steady", "which", {}).result["version"] == "1.0"

    def test_a_version_that_answers_a_tool_it_lacks_is_refused(self, installing, wheels):
        """The smoke check: PW008, an unknown tool must be a per-call error."""
        host = installing()
        installed(host, wheels("steady", requires=(SIX_OLD,)))
        lax = wheels("steady", "2.0", source=plugin_source("return 'anything goes'"))
        job = finished(host, host.upgrade("steady", [str(lax)]))
        assert job.state == "failed" and "PW008" in job.outcome["error"], job.outcome
        assert host.call("steady", "which", {}).result["version"] == "1.0"

    def test_a_version_failing_its_manifests_example_is_refused(self, installing, wheels):
        """The smoke check: PW007, each tool answers the example its manifest gives."""
        host = installing()
        installed(host, wheels("steady", requires=(SIX_OLD,)))
        manifest = '[tools.which]\ndescription = "w"\nexample = {sleep = "soon"}\n'
        broken = wheels("steady", "2.0", (SIX_NEW,), extra={"steady/manifest.toml": manifest})
        job = finished(host, host.upgrade("steady", [str(broken)]))
        assert job.state == "failed" and "its example of which failed" in job.outcome["error"]
        assert "PW007" in job.outcome["error"], job.outcome
        assert host.call("steady", "which", {}).result["version"] == "1.0"

    def test_a_running_job_stays_on_the_version_it_started_on(self, installing, wheels):
        host = installing(probation_s=0.2)
        installed(host, wheels("steady", requires=(SIX_OLD,)))
        job = host.submit("steady", "which", {"sleep": 3})
        wait_for(lambda: host.job(job.id).state == "running", 30)
        upgrade = host.upgrade("steady", [str(wheels("steady", "2.0", (SIX_NEW,)))])
        assert finished(host, upgrade).state == "succeeded"
        assert host.call("steady", "which", {}).result["version"] == "2.0"
        done = finished(host, job)
        assert done.state == "succeeded", done.outcome
        assert json.loads(done.result_json)["version"] == "1.0"

    def test_upgrade_rollback_and_uninstall(self, installing, wheels, tmp_path):
        host = installing(probation_s=0.5)
        installed(host, wheels("steady", requires=(SIX_OLD,)))
        first = host.status("steady").to_dict()["environment"]["path"]
        assert processes_of(first)  # its zygote
        job = finished(host, host.upgrade("steady", [str(wheels("steady", "2.0", (SIX_NEW,)))]))
        assert job.state == "succeeded", job.outcome
        wait_for(lambda: not processes_of(first), 30)  # the old version's zygote stopped too
        assert host.call("steady", "which", {}).result == {
            "six": "1.17.0", "six_file": host.call("steady", "which", {}).result["six_file"],
            "version": "2.0",
        }  # fmt: skip
        assert finished(host, host.rollback("steady")).state == "succeeded"
        assert host.call("steady", "which", {}).result["version"] == "1.0"
        # Rolled back, the newer version is the previous one: forward again.
        assert finished(host, host.rollback("steady")).state == "succeeded"
        assert host.call("steady", "which", {}).result["version"] == "2.0"
        gone = finished(host, host.uninstall("steady"))
        assert gone.state == "succeeded", gone.outcome
        with pytest.raises(UnknownPlugin):
            host.status("steady")
        assert list((tmp_path / "plugins" / "envs").iterdir()) == []

    def test_a_plugin_installed_with_pip_is_left_to_pip(self, installing, plugwarden_plugin):
        plugwarden_plugin("shared", plugin_source("return 1"))
        host = installing()
        job = finished(host, host.upgrade("shared"))
        assert job.state == "failed" and "with pip" in job.outcome["error"]
        assert host.status("shared").state is State.INITIALIZED
