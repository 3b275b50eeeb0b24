"""The plugwarden command, run as a real process against real plugins."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from plugwarden.testing import FakeNvml, fake_gpu
from tests.conftest import ECHO, free_port, plugin_source, wait_for
from tests.test_segment import BINARY

TOKEN = "cli-test-token-0123456789"


@pytest.fixture
def cli(plugwarden_plugin, plugwarden_site, tmp_path):
    plugwarden_plugin("good", ECHO, manifest={"tools": {"echo": "echo"}, "version": "1.2.3"})
    plugwarden_plugin("bad", "raise RuntimeError('weights missing [see docs]')\n")

    def run(
        *args: str, config: str | None = None, url: str | None = None, columns: int = 200
    ) -> subprocess.CompletedProcess[str]:
        if config is not None:
            (tmp_path / "plugwarden.toml").write_text(config)
        # Never the machine's own server: nothing listens at a port just freed.
        env = {
            **os.environ,
            "PYTHONPATH": str(plugwarden_site),
            "COLUMNS": str(columns),
            "PLUGWARDEN_URL": url or f"http://127.0.0.1:{free_port()}",
        }
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
        done = cli("list", "--local")
        assert done.returncode == 1  # a plugin is FAILED: not all is well
        assert "good" in done.stdout and "INITIALIZED" in done.stdout
        assert "bad" in done.stdout and "FAILED" in done.stdout
        assert "RuntimeError: weights missing [see docs]" in done.stdout

    def test_at_80_columns_no_word_is_broken(self, cli, plugwarden_plugin):
        """A reason's first sentence in the table, the whole reason below it,
        wrapped at spaces: an install command can be copied as it is."""
        plugwarden_plugin("needy", ECHO, requires=["no-such-dist-for-pw-cli>=1.2"])
        done = cli("list", "--local", columns=80)
        lines = done.stdout.splitlines()
        assert all(len(line) <= 80 for line in lines), done.stdout
        reason = next(line for line in lines if line.startswith("needy:"))
        tail = done.stdout[done.stdout.index(reason) :]
        assert "'no-such-dist-for-pw-cli>=1.2'" in tail, done.stdout
        assert "weights missing [see docs]" in done.stdout

    def test_json(self, cli):
        done = cli("list", "--json", "--local")
        plugins = {p["name"]: p for p in json.loads(done.stdout)}
        assert plugins["good"]["state"] == "INITIALIZED"
        assert plugins["good"]["version"] == "1.2.3"
        assert plugins["bad"]["state"] == "FAILED"

    def test_all_well_exits_zero(self, cli):
        # Off too: the venv's own contrib videotracker (no GPU, no ML stack here).
        off = "[plugins.bad]\nenabled = false\n[plugins.videotracker]\nenabled = false\n"
        done = cli("list", "--local", config=off)
        assert done.returncode == 0, done.stdout


class TestOneShotCommands:
    def test_run_prints_the_result(self, cli):
        done = cli("run", "good", "echo", "--args", '{"n": 1}', "--json", "--local")
        assert done.returncode == 0
        assert json.loads(done.stdout)["result"] == {"tool": "echo", "args": {"n": 1}}

    def test_run_of_failed_plugin_exits_one_with_the_reason(self, cli):
        done = cli("run", "bad", "x", "--local")
        assert done.returncode == 1
        assert "PluginNotAvailable" in done.stdout and "weights missing" in done.stdout

    def test_health_and_restart(self, cli):
        health = cli("health", "good", "--json", "--local")
        assert health.returncode == 0
        assert json.loads(health.stdout)["state"] == "INITIALIZED"
        restart = cli("restart", "bad", "--json", "--local")
        assert restart.returncode == 1
        assert json.loads(restart.stdout)["state"] == "FAILED"

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (("health", "ghost", "--local"), "Unknown plugin 'ghost'"),
            (("run", "good", "echo", "--args", "{bad"), "--args is not valid JSON"),
            (("run", "good", "echo", "--args", "[1]"), "--args must be a JSON object"),
            (("run", "good", "echo", "--args", "[" * 5000), "--args nests too deeply"),
        ],
    )
    def test_usage_errors_exit_two_with_a_message(self, cli, args, message):
        done = cli(*args)
        assert done.returncode == 2
        assert message in done.stderr
        assert "Traceback" not in done.stderr

    def test_malformed_config_names_the_key(self, cli):
        done = cli("list", "--local", config="[defaults]\ntimeout_s = 'soon'\n")
        assert done.returncode == 2
        assert "defaults.timeout_s" in done.stderr

    def test_serve_refuses_a_number_out_of_range_naming_its_key(self, cli):
        """It passed validation, then serve died with an OverflowError traceback."""
        done = cli("serve", config="[jobs]\nkeep_max = 99999999999999999999\n")
        assert done.returncode == 2
        assert "jobs.keep_max" in done.stderr and "Traceback" not in done.stderr


class TestRemote:
    """The commands talk to the running server (a real uvicorn on loopback)."""

    @pytest.fixture
    def served(self, cli, plugwarden_server):
        return plugwarden_server({"server": {"token": TOKEN}})

    def test_list_shows_what_happened_inside_the_server(self, cli, served):
        for _ in range(3):
            served.host.call("good", "echo", {})
        done = cli("list", "--json", url=served.url)
        records = {r["name"]: r for r in json.loads(done.stdout)}
        assert records["good"]["success_count"] == 3  # a fresh host would say 0
        assert done.returncode == 1  # 'bad' is FAILED

    def test_restart_restarts_the_servers_plugin(self, cli, served):
        before = served.host.status("good")
        done = cli("restart", "good", "--json", "--token", TOKEN, url=served.url)
        assert done.returncode == 0, done.stderr
        after = served.host.status("good")
        assert after.generation == before.generation + 1
        loaded = [t for t in after.history if t.reason.startswith("imported from")]
        assert len(loaded) == 2  # the start, and the restart the CLI asked for
        assert json.loads(done.stdout)["state"] == "INITIALIZED"
        # It leaves a trace: a note in the history, and a count of its own.
        assert any("Restarted by request" in t.reason for t in after.history)
        assert after.metrics["restarts_by_cause"] == {"manual": 1}
        shown = cli("health", "good", url=served.url)
        assert "manual 1" in shown.stdout

    def test_run_over_http_and_a_missing_token_is_a_clear_error(self, cli, served):
        done = cli("run", "good", "echo", "--args", '{"n": 2}', "--token", TOKEN, url=served.url)
        assert done.returncode == 0 and '"n": 2' in done.stdout
        refused = cli("run", "good", "echo", url=served.url)
        assert refused.returncode == 2 and "Missing token" in refused.stderr
        assert "--token" in refused.stderr and "PLUGWARDEN_TOKEN" in refused.stderr
        wrong = cli("run", "good", "echo", "--token", "nope", url=served.url)
        assert wrong.returncode == 2 and "Wrong token" in wrong.stderr

    @pytest.mark.parametrize("where", ["server", "local"])
    def test_run_sends_files_as_binary_arguments(
        self, cli, plugwarden_server, plugwarden_plugin, tmp_path, where
    ):
        """--file NAME=PATH: the file's bytes as argument NAME, or as the
        array an --args reference with dtype and shape makes of them."""
        plugwarden_plugin("binary", BINARY)
        served = plugwarden_server({"server": {"token": TOKEN}})
        (tmp_path / "data.bin").write_bytes(b"\x00\x01" * 600)
        (tmp_path / "frame.raw").write_bytes(bytes(range(24)))
        ref = '{"frame": {"$blob": "raw", "dtype": "|u1", "shape": [2, 3, 4]}}'
        files = ["--file", "data=data.bin", "--file", "raw=frame.raw"]
        where_args = ["--local"] if where == "local" else ["--token", TOKEN]
        done = cli("run", "binary", "kinds", "--args", ref, *files, "--json", *where_args,
                   url=served.url)  # fmt: skip
        assert done.returncode == 0, done.stderr + done.stdout
        assert json.loads(done.stdout)["result"] == {
            "data": ["bytes", "", []], "frame": ["ndarray", "uint8", [2, 3, 4]]}  # fmt: skip
        echoed = cli("run", "binary", "echo", "--args", '{"value": {"$blob": "data"}}', *files[:2],
                     *where_args, url=served.url)  # fmt: skip
        assert echoed.returncode == 0, echoed.stderr
        assert '"<1200 bytes>"' in echoed.stdout  # said, not printed as base64
        missing = cli("run", "binary", "echo", "--file", "x=nope.bin", *where_args,
                      url=served.url)  # fmt: skip
        assert missing.returncode == 2 and "cannot read nope.bin" in missing.stderr

    def test_an_unknown_plugin_names_the_known_ones_and_how_new_ones_are_found(self, cli, served):
        done = cli("restart", "newcomer", "--token", TOKEN, url=served.url)
        assert done.returncode == 2 and "Unknown plugin 'newcomer'" in done.stderr
        assert "Known plugins: bad, good" in done.stderr
        assert "after a restart of the server" in done.stderr
        assert "plugwarden install SPEC" in done.stderr

    def test_health_shows_the_whole_record_with_its_history(self, cli, served):
        served.host.call("good", "echo", {})
        done = cli("health", "good", url=served.url)
        assert done.returncode == 0
        for part in ("state", "tools", "echo", "guard trips", "calls", "1 ok", "History of good"):
            assert part in done.stdout, part
        assert "worker memory" in done.stdout and "MB resident" in done.stdout
        assert "s ago" in done.stdout and "INITIALIZED" in done.stdout
        # What it may reach: nothing granted, and what this machine enforces.
        assert "grants" in done.stdout and "network false; read " in done.stdout
        assert "protections" in done.stdout and "enforced:" in done.stdout

    def test_health_prints_the_plugins_report_as_json(
        self, cli, plugwarden_plugin, plugwarden_server
    ):
        plugwarden_plugin(
            "reporting",
            ECHO + "\n@hookimpl\ndef health():\n    return {'queue': 3, 'warm': True}\n",
        )
        server = plugwarden_server()
        server.host.check_health("reporting")
        shown = cli("health", "reporting", url=server.url).stdout
        assert '{"queue": 3, "warm": true}' in shown
        assert "'queue'" not in shown  # not a Python repr

    def test_no_server_is_a_clear_message_and_a_non_zero_exit(self, cli):
        done = cli("list")
        assert done.returncode == 2
        assert "No plugwarden server answers at http://127.0.0.1:" in done.stderr
        assert "--local" in done.stderr and "Traceback" not in done.stderr

    def test_version(self, cli):
        from plugwarden import __version__

        done = cli("--version")
        assert done.returncode == 0 and done.stdout.strip() == f"plugwarden {__version__}"


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
        assert set(report) == {
            "python",
            "platform",
            "config",
            "containment",
            "protections",
            "ray",
            "gpu",
            "host_gpus",
            "plugin_gpus",
            "plugins_from",
            "plugins",
        }
        assert report["ray"] is None  # the config uses no Ray
        assert set(report["protections"]) >= {"filesystem", "network", "seccomp", "tasks"}
        assert all(
            line.startswith(("enforced", "not available here: "))
            for line in report["protections"].values()
        )
        assert report["plugins_from"].startswith("a one-shot host here (no server answers")
        assert report["containment"]["level"] in ("pid-namespace", "subreaper")
        assert {"pci_devices", "nvml", "torch", "verdict"} <= set(report["gpu"])
        assert {p["name"] for p in report["plugins"]} >= {"good", "bad"}


class TestDoctorAlarms:
    def test_no_gpu_alarms_only_when_a_plugin_needs_one(self, cli, plugwarden_plugin):
        # The venv's own contrib videotracker needs a GPU: off for this test.
        off = "[plugins.videotracker]\nenabled = false\n"
        calm = json.loads(cli("doctor", "--json", config=off).stdout)["gpu"]
        if calm["verdict"]["ok"]:
            pytest.skip("this machine has a usable GPU")
        assert calm["needed_by"] == [] and "no plugin needs a GPU" in calm["verdict"]["reason"]
        plugwarden_plugin("vision", ECHO, manifest={"requires_gpu": True})
        alarmed = json.loads(cli("doctor", "--json").stdout)["gpu"]
        assert alarmed["needed_by"] == ["vision"]
        assert "no plugin needs a GPU" not in alarmed["verdict"]["reason"]

    def test_doctor_reports_the_running_servers_plugins(self, cli, plugwarden_server):
        served = plugwarden_server()
        served.host.call("good", "echo", {})
        report = json.loads(cli("doctor", "--json", url=served.url).stdout)
        assert report["plugins_from"] == f"the server at {served.url}"
        assert {p["name"]: p for p in report["plugins"]}["good"]["success_count"] == 1

    def test_doctor_shows_the_gpus_as_the_server_sees_them(
        self, cli, plugwarden_plugin, plugwarden_server, tmp_path
    ):
        """Health, Xids and whose workers use each GPU come from the running
        host's GPU watch (GET /v1/gpus), not from a probe of its own."""
        sees = plugin_source("import os\nreturn os.environ.get('CUDA_VISIBLE_DEVICES')")
        with FakeNvml(tmp_path / "nvml.json", (16384, 16384)) as fake, fake_gpu("present"):
            plugwarden_plugin("seer", sees, manifest={"requires_gpu": True})
            settings = {"workers": 2, "restart_backoff_s": 0.05}
            served = plugwarden_server({"plugins": {"seer": settings}})
            fake.xid(1, 79)
            wait_for(lambda: [g["index"] for g in served.host.worker_gpus("seer")] == [0], 30)
            shown = cli("doctor", url=served.url).stdout
            report = json.loads(cli("doctor", "--json", url=served.url).stdout)
        assert f"GPUs, as the server at {served.url} sees them" in shown
        assert "Fake GPU 0: 0 of 16384 MB used; healthy; no Xid; workers of seer" in shown
        assert (
            "Fake GPU 1: 0 of 16384 MB used; unhealthy: Xid 79 (GPU has fallen off the bus): "
            "it needs a reset (nvidia-smi -r, or a reboot); Xid 79 x1; workers of no plugin"
        ) in " ".join(shown.split())  # as one line, however the panel wraps it
        assert [gpu["healthy"] for gpu in report["host_gpus"]] == [True, False]
        assert [g["index"] for g in report["plugin_gpus"]["seer"]["worker_gpus"]] == [0]


class TestJobs:
    """run --job, jobs and cancel against a real server, and --local."""

    @pytest.fixture
    def served(self, cli, plugwarden_plugin, plugwarden_server):
        from tests.test_jobs import STEPS

        plugwarden_plugin("steps", plugin_source(STEPS))
        return plugwarden_server({"server": {"token": TOKEN}})

    def test_run_job_without_a_terminal_prints_plain_progress_lines(self, cli, served):
        """For a log or a pipe: a line when progress changes (at most one a
        second), the last always, instead of a bar nobody sees."""
        args = '{"n": 20, "dt": 0.05}'
        done = cli("run", "steps", "count", "--args", args, "--job", "--token", TOKEN,
                   url=served.url)  # fmt: skip
        assert done.returncode == 0, done.stderr
        lines = [line for line in done.stdout.splitlines() if line.startswith("steps count:")]
        assert len(lines) >= 2 and "20/20" in lines[-1], done.stdout

    def test_jobs_watch_follows_a_job_again_to_its_end(self, cli, served):
        """After a Ctrl-C left it running: 'jobs watch ID' (or its start)."""
        job = served.host.submit("steps", "count", {"n": 20, "dt": 0.05})
        done = cli("jobs", "watch", job.id[:12], "--token", TOKEN, url=served.url)
        assert done.returncode == 0, done.stderr
        assert f"job {job.id} is" in done.stdout and "succeeded" in done.stdout
        assert '"done": 20' in done.stdout
        wrong = cli("jobs", "look", job.id, "--token", TOKEN, url=served.url)
        assert wrong.returncode == 2 and "jobs takes 'watch ID'" in wrong.stderr

    def test_run_job_follows_it_to_its_result(self, cli, served):
        args = '{"n": 10, "dt": 0.05}'
        done = cli(
            "run", "steps", "count", "--args", args, "--job", "--token", TOKEN, url=served.url
        )
        assert done.returncode == 0, done.stderr
        assert "submitted" in done.stdout and "succeeded" in done.stdout
        assert '"done": 10' in done.stdout
        as_json = cli(
            "run", "steps", "count", "--args", args, "--job", "--json", "--token", TOKEN,
            url=served.url,
        )  # fmt: skip
        job = json.loads(as_json.stdout)
        assert job["state"] == "succeeded" and job["progress"]["done"] == 10

    def test_a_failed_job_exits_one_with_its_error(self, cli, served):
        done = cli(
            "run",
            "steps",
            "count",
            "--args",
            '{"n": "x"}',
            "--job",
            "--token",
            TOKEN,
            url=served.url,
        )
        assert done.returncode == 1 and "failed" in done.stdout and "TypeError" in done.stdout

    def test_jobs_lists_and_filters(self, cli, served):
        job = served.host.submit("steps", "count", {"n": 1, "dt": 0})
        wait_for(lambda: served.host.job(job.id).finished)
        token = ("--token", TOKEN)
        listed = json.loads(cli("jobs", "--json", *token, url=served.url).stdout)
        assert [j["id"] for j in listed] == [job.id]
        table = cli("jobs", "--plugin", "steps", *token, url=served.url)
        assert table.returncode == 0 and job.id[:12] in table.stdout
        assert "succeeded" in table.stdout
        failed = cli("jobs", "--state", "failed", "--json", *token, url=served.url)
        assert json.loads(failed.stdout) == []
        refused = cli("jobs", url=served.url)
        assert refused.returncode == 2 and "Missing token" in refused.stderr

    def test_at_80_columns_a_job_is_one_line_with_the_start_of_its_id(self, cli, served):
        job = served.host.submit("steps", "count", {"n": 1, "dt": 0})
        wait_for(lambda: served.host.job(job.id).finished)
        table = cli("jobs", "--token", TOKEN, url=served.url, columns=80)
        (row,) = [line for line in table.stdout.splitlines() if job.id[:12] in line]
        assert "steps" in row and "succeeded" in row and job.id not in table.stdout
        assert all(len(line) <= 80 for line in table.stdout.splitlines())
        cancelled = cli("cancel", job.id[:12], "--token", TOKEN, url=served.url)
        assert cancelled.returncode == 0, cancelled.stderr  # the start shown is enough

    def test_the_jobs_table_keeps_every_word_whole_at_80_columns(self):
        """Long plugin and tool names, an old job: each job one line, a name
        too long cut with an ellipsis, never a word broken over two lines."""
        import io

        from rich.console import Console

        from plugwarden.cli.jobcommands import jobs_table

        rows = [
            {"id": "9700da076121427ebffabd696324489b", "plugin": name, "tool": tool,
             "state": state, "progress": {"fraction": 0.75}, "duration_s": 2.3,
             "submitted_at": "2026-01-06T19:49:50.567Z"}
            for name, tool, state in (("plugwarden", "install", "succeeded"),
                                      ("videotracker", "track_frames", "cancelled"),
                                      ("a-plugin-named-at-great-length", "count", "failed"))
        ]  # fmt: skip
        out = io.StringIO()
        Console(file=out, width=80).print(jobs_table(rows))
        lines = out.getvalue().splitlines()
        assert all(len(line) <= 80 for line in lines)
        body = [line for line in lines if "9700da076121" in line]
        assert len(body) == 3
        for line, state in zip(body, ("succeeded", "cancelled", "failed"), strict=True):
            assert state in line and "01-06 19:49" in line and "2.3 s" in line
        assert "plugwarden" in body[0] and "videotracker" in body[1]

    def test_cancel_cancels_a_running_job_and_an_unknown_id_is_a_usage_error(self, cli, served):
        job = served.host.submit("steps", "count", {"n": 100000, "dt": 0.01})
        wait_for(lambda: served.host.job(job.id).progress is not None, 30, "progress")
        done = cli("cancel", job.id, "--token", TOKEN, url=served.url)
        assert done.returncode == 0 and f"job {job.id}: " in done.stdout, done.stderr
        # Still live when the server answered, or already cancelled (the plugin saw it at once).
        assert "(cancel requested)" in done.stdout or ": cancelled" in done.stdout, done.stdout
        wait_for(lambda: served.host.job(job.id).state == "cancelled", 10, "the cancel")
        unknown = cli("cancel", "f" * 32, "--token", TOKEN, url=served.url)
        assert unknown.returncode == 2 and "Unknown job" in unknown.stderr

    def test_cancel_takes_the_start_of_an_id_naming_one_job(self, cli, served):
        """As a terminal shows ids cut: a prefix of one job's id is enough;
        one of several jobs' ids is refused naming them."""
        jobs = [served.host.submit("steps", "count", {"n": 100000, "dt": 0.01}) for _ in range(2)]
        first = jobs[0].id
        unique = next(first[:n] for n in range(1, 33) if not jobs[1].id.startswith(first[:n]))
        done = cli("cancel", unique, "--token", TOKEN, url=served.url)
        assert done.returncode == 0 and first in done.stdout, done.stderr
        wait_for(lambda: served.host.job(first).state == "cancelled", 10, "the cancel")
        several = cli("cancel", "", "--token", TOKEN, url=served.url)  # the start of every id
        assert several.returncode == 2 and "is the start of 2 jobs" in several.stderr
        served.host.cancel(jobs[1].id)
        assert cli("cancel", "zz", "--token", TOKEN, url=served.url).returncode == 2

    # plugwarden as started at a terminal, where Ctrl-C interrupts: a test
    # run that was itself started in the background inherits SIGINT ignored
    # (a shell's asynchronous commands do), and so would the command.
    AT_A_TERMINAL = (
        "import runpy, signal, sys\n"
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})\n"
        "sys.argv[0] = 'plugwarden'\n"
        "runpy.run_module('plugwarden', run_name='__main__', alter_sys=True)"
    )

    def test_ctrl_c_leaves_the_job_running_and_says_how_to_cancel_it(
        self, cli, served, plugwarden_site, tmp_path
    ):
        env = {**os.environ, "PYTHONPATH": str(plugwarden_site), "PLUGWARDEN_URL": served.url}
        follower = subprocess.Popen(
            [sys.executable, "-X", "faulthandler", "-c", self.AT_A_TERMINAL, "run", "steps",
             "count", "--args", '{"n": 100000, "dt": 0.01}', "--job", "--token", TOKEN],
            cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            line = follower.stdout.readline()
            job_id = line.split()[1]
            wait_for(lambda: served.host.job(job_id).progress is not None, 30, "progress")
            follower.send_signal(signal.SIGINT)
            try:
                out, err = follower.communicate(timeout=30)
            except subprocess.TimeoutExpired:  # say where it hangs: its threads' stacks
                follower.send_signal(signal.SIGABRT)
                out, err = follower.communicate(timeout=30)
                raise AssertionError(f"the follower did not end on SIGINT: {err}") from None
        finally:
            follower.kill()
            follower.wait()
            follower.stdout.close()  # a hung follower must not leak its pipes into other tests
            follower.stderr.close()
        assert follower.returncode == 130, (out, err)
        assert f"plugwarden cancel {job_id}" in out and f"plugwarden jobs watch {job_id}" in out
        assert served.host.job(job_id).state == "running"
        served.host.cancel(job_id)

    def test_run_job_local(self, cli, plugwarden_plugin):
        from tests.test_jobs import STEPS

        plugwarden_plugin("steps", plugin_source(STEPS))
        done = cli("run", "steps", "count", "--args", '{"n": 3, "dt": 0}', "--job", "--local")
        assert done.returncode == 0, done.stderr
        assert "succeeded" in done.stdout and '"done": 3' in done.stdout
