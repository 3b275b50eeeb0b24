"""What a hostile plugin reaches (docs/guides/isolation.md#what-a-plugin-may-reach): every
attack of ``tests/hostile.py``, run against a real host as root and as an
unprivileged user, at each containment level this machine offers. Each
host is its own process, so that the unprivileged one is really that user."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from plugwarden.isolation.process import containment as containment_level
from tests.hostile import TOKEN, VICTIM_SECRET

ROOT = Path(__file__).resolve().parent.parent
NOBODY = 65534
linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")


def _exposing(paths: list[str]) -> list[str]:
    """Shell lines that, in a private mount namespace, let any user walk to
    ``paths`` (CI clones into folders other users may not enter, and the
    interpreter may live under root's home): each folder on the way that
    others may not enter is covered with an open tmpfs holding just the
    entries on the way, bound from the real ones."""
    children: dict[Path, set[str]] = {}
    for path in paths:
        here = Path("/")
        for part in Path(path).resolve().parts[1:]:
            if not here.stat().st_mode & 0o001:
                children.setdefault(here, set()).add(part)
            here = here / part
    lines = ["set -e", "mount --make-rprivate /"]
    for number, (folder, names) in enumerate(
        sorted(children.items(), key=lambda kv: len(kv[0].parts))
    ):
        stash = f"/tmp/.plugwarden-stash-{os.getpid()}-{number}"
        lines += [f"mkdir -p {stash}", f"mount --bind {folder} {stash}",
                  f"mount -t tmpfs -o mode=755 tmpfs {folder}"]  # fmt: skip
        for name in sorted(names):
            make = "mkdir" if (folder / name).is_dir() else "touch"
            lines += [f"{make} {folder / name}", f"mount --bind {stash}/{name} {folder / name}"]
    return lines


def _attack(user: str, level: str, workdir: Path) -> dict[str, Any]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PLUGWARDEN_")}
    env |= {"HOME": str(workdir), "XDG_STATE_HOME": str(workdir / "state"),
            "PYTHONDONTWRITEBYTECODE": "1"}  # fmt: skip
    if level == "subreaper":
        env["PLUGWARDEN_CONTAINMENT"] = "subreaper"
    elif level == "no-landlock":  # as on a kernel without it: read-only mounts instead
        env["PLUGWARDEN_LANDLOCK"] = "off"
    command = [sys.executable, "-m", "tests.hostile", str(workdir)]
    if user == "nobody":
        os.chown(workdir, NOBODY, NOBODY)
        needed = [sys.base_prefix, sys.prefix, str(ROOT), *[p for p in sys.path if p]]
        script = _exposing([p for p in needed if os.path.exists(p)])
        drop = f"--reuid={NOBODY} --regid={NOBODY} --clear-groups --inh-caps=-all"
        script.append(f"exec setpriv {drop} " + " ".join(command))
        command = ["unshare", "--mount", "sh", "-c", "\n".join(script)]
    done = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


VARIANTS = [
    pytest.param(("root", "pid-namespace"), id="root"),
    pytest.param(("root", "subreaper"), id="root-subreaper"),
    pytest.param(("nobody", "pid-namespace"), id="nobody"),
    pytest.param(("nobody", "subreaper"), id="nobody-subreaper"),
    pytest.param(("root", "no-landlock"), id="root-no-landlock"),
    pytest.param(("nobody", "no-landlock"), id="nobody-no-landlock"),
]


@pytest.fixture(scope="module", params=VARIANTS)
def outcome(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    user, level = request.param
    if level == "no-landlock" and containment_level.probe() != "pid-namespace":
        pytest.skip("the fallback for a kernel without Landlock needs a mount namespace")
    if os.geteuid() != 0:
        pytest.skip("runs the host as root and as another user: needs root to set that up")
    if user == "nobody" and not (shutil.which("setpriv") and shutil.which("unshare")):
        pytest.skip("needs setpriv and unshare (util-linux) to run the host as nobody")
    workdir = Path(tempfile.mkdtemp(prefix="plugwarden-hostile-"))
    workdir.chmod(0o755)
    try:
        yield _attack(user, level, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _failed(result: dict[str, Any]) -> bool:
    return result["ok"] is False


@linux
class TestSecrets:
    def test_no_process_the_plugin_can_read_holds_the_token(self, outcome):
        assert outcome["own_environ"] == {"ok": True, "got": "None"}
        assert outcome["environ_token"] == {"ok": True, "got": "None"}

    def test_the_config_file_and_job_database_give_nothing_away(self, outcome):
        for attack in ("config_file", "job_db_read"):
            result = outcome[attack]
            assert _failed(result) or result["got"] in ("''", "b''"), (attack, result)
            assert TOKEN not in json.dumps(result)
        assert _failed(outcome["job_db_write"])


@linux
class TestOtherProcesses:
    def test_the_host_and_a_sibling_are_out_of_reach(self, outcome):
        for attack in ("host_environ", "host_memory", "sibling_memory"):
            assert _failed(outcome[attack]), (attack, outcome[attack])
        assert outcome["victim_after"] == VICTIM_SECRET  # the victim serves on

    def test_no_other_workers_shared_memory_is_in_reach(self, outcome):
        """The victim's binary argument waits in its segment (a memfd the host
        and the victim hold): neither's descriptors or mappings lead there."""
        found = outcome["sibling_segment"]
        assert _failed(found) or found["got"] == "[]", found

    def test_in_its_own_pid_namespace_it_sees_only_its_own_processes(self, outcome):
        seen = json.loads(outcome["processes_seen"]["got"])
        if outcome["protections"].get("own_proc") == "enforced":
            assert seen == [1, 2]  # its init and itself
        else:
            assert len(seen) > 2  # the machine's processes are listed, yet out of reach (above)

    def test_a_self_sent_sigterm_ends_the_call_naming_it(self, outcome):
        assert outcome["sigterm"]["error_type"] == "WorkerDied"
        assert "SIGTERM" in outcome["sigterm"]["error"]

    def test_orphans_of_the_plugin_are_reaped(self, outcome):
        assert outcome["orphans"] == {"ok": True, "got": "'reaped'"}


@linux
class TestFiles:
    def test_code_site_packages_and_system_files_are_read_only_or_hidden(self, outcome):
        for attack in ("sibling_module", "pth_in_site", "pth_in_venv", "oom_score_adj"):
            assert _failed(outcome[attack]), (attack, outcome[attack])
        if outcome["protections"]["filesystem"] == "enforced":  # Landlock: reads confined too
            assert _failed(outcome["etc_shadow"])
        else:  # read-only mounts confine writes only: /etc/shadow is as its mode says
            assert outcome["protections"]["filesystem"].startswith("enforced (read-only mounts")

    def test_its_own_state_and_tmp_are_writable(self, outcome):
        assert outcome["state_dir_write"]["ok"], outcome["state_dir_write"]
        assert outcome["tmp_write"]["ok"], outcome["tmp_write"]

    def test_its_dev_shm_is_its_own_and_goes_with_it(self, outcome):
        assert outcome["shm"]["ok"]
        if outcome["protections"].get("private_shm") == "enforced":
            assert outcome["host_shm_left"] is False


@linux
class TestPrivilegeAndNetwork:
    def test_no_mount_no_capabilities_no_new_privileges(self, outcome):
        assert _failed(outcome["mount"])
        status = eval(outcome["status"]["got"])  # a dict's repr, from our own plugin
        assert status["NoNewPrivs"] == "1" and int(status["CapEff"], 16) == 0

    def test_tcp_needs_a_grant(self, outcome):
        assert _failed(outcome["tcp_connect"])
        assert _failed(outcome["denied_connect"])
        assert outcome["granted_connect"]["ok"], outcome["granted_connect"]
        assert outcome["permissions"]["network"] == [int(outcome["granted_connect"]["got"])]

    def test_each_protection_says_whether_it_is_enforced(self, outcome):
        protections = outcome["protections"]
        for name in ("filesystem", "network", "no_new_privs", "capabilities", "seccomp",
                     "descriptors"):  # fmt: skip
            assert protections[name].startswith(("enforced", "not available here: ")), (
                name,
                protections[name],
            )


@linux
class TestBounds:
    def test_2000_threads_trip_the_task_guard(self, outcome):
        assert outcome["threads"]["error_type"] == "TaskLimitExceeded", outcome["threads"]
        assert "256 task limit" in outcome["threads"]["error"]

    def test_5000_descriptors_are_refused_past_the_limit(self, outcome):
        got = eval(outcome["descriptors"]["got"])  # a dict's repr, from our own plugin
        assert got["errno"] == 24 and got["opened"] < 1024  # EMFILE at RLIMIT_NOFILE

    def test_it_cannot_take_every_inotify_instance_of_the_user(self, outcome):
        taken = int(outcome["inotify"]["got"])
        if outcome["protections"].get("inotify", "").startswith("enforced"):
            assert taken == 32
        else:
            assert taken > 0

    def test_a_400_mb_memfd_under_200_mb_trips_the_memory_guard(self, outcome):
        assert outcome["memfd"]["error_type"] == "MemoryLimitExceeded", outcome["memfd"]


WHOAMI = """
import os
path = os.path.join(STATE, "mine")
with open(path, "w") as file:
    file.write("ok")
return {"uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups(), "wrote": path}
"""


@linux
@pytest.mark.skipif(os.geteuid() != 0, reason="worker_user is root's option")
class TestWorkerUser:
    def test_workers_run_as_the_worker_user(self, plugwarden_plugin, plugwarden_host):
        site = Path(tempfile.mkdtemp(prefix="plugwarden-worker-user-"))
        site.chmod(0o755)
        try:
            from plugwarden.testing import plugin_source, write_plugin

            write_plugin(site, "who", plugin_source(
                WHOAMI, prelude="STATE = ''", init_body="global STATE\nSTATE = config['state_dir']"
            ))  # fmt: skip
            from plugwarden import Host

            config = {"jobs": {"path": ":memory:"}, "plugins": {"who": {"worker_user": "nobody"}}}
            with Host(config, search_path=[str(site)]) as host:
                host.start()
                status = host.status("who")
                if status.state.value != "INITIALIZED":  # the interpreter may be root's alone
                    assert "worker_user 'nobody'" in status.reason, status.reason
                    pytest.skip(f"this interpreter is not readable by nobody: {status.reason}")
                result = host.call("who", "t", {})
                assert result.ok, result.error
                assert result.result["uid"] == NOBODY and result.result["groups"] == []
                assert status.info.protections["worker_user"] == "enforced (nobody)"
        finally:
            shutil.rmtree(site, ignore_errors=True)
            shutil.rmtree("/var/lib/plugwarden/plugins/who", ignore_errors=True)

    def test_a_plugin_the_worker_user_cannot_read_is_failed_saying_so(
        self, plugwarden_plugin, plugwarden_host
    ):
        plugwarden_plugin("hidden", "from plugwarden import hookimpl\n")  # under root's tmp
        status = plugwarden_host({"plugins": {"hidden": {"worker_user": "nobody"}}}).status(
            "hidden"
        )
        assert status.state.value == "FAILED"
        assert "worker_user 'nobody'" in status.reason and "chmod" in status.reason
