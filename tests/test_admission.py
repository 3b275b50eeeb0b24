"""Admission: one decision for the Python API, ``/run`` and ``/jobs``, and
one deadline for a call's whole wait (plugwarden.host.admission)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from plugwarden import ErrorType, Host, JobRefused
from plugwarden.host.admission import Admission, Deadline
from plugwarden.host.record import PluginRecord
from plugwarden.plugin.discovery import discover
from plugwarden.plugin.manifest import Manifest
from tests.conftest import ECHO, plugin_source

TOKEN = "admission-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def server(plugwarden_plugin, plugwarden_server):
    plugwarden_plugin("tooled", ECHO, manifest={"tools": {"echo": "echoes"}})
    return plugwarden_server({"server": {"token": TOKEN}})


def over_http(server, route: str, body: dict) -> httpx.Response:
    return httpx.post(
        f"{server.url}/v1/plugins/tooled/{route}", json=body, headers=AUTH, timeout=30
    )


class TestOneAdmission:
    @pytest.mark.parametrize(
        ("tool", "args", "error_type"),
        [
            ("nope", {}, ErrorType.UNKNOWN_TOOL),
            ("echo", [1, 2], ErrorType.INVALID_ARGUMENTS),
            ("", {}, ErrorType.INVALID_ARGUMENTS),
            (7, {}, ErrorType.INVALID_ARGUMENTS),
        ],
    )
    def test_a_refused_call_is_the_same_4xx_and_error_type_from_python_run_and_jobs(
        self, server, tool, args, error_type
    ):
        """The same mistake gets the same error_type from Python, and the
        same status on /run as on /jobs."""
        assert server.host.call("tooled", tool, args).error_type == error_type
        with pytest.raises(JobRefused) as refused:
            server.host.submit("tooled", tool, args)
        assert refused.value.error_type == error_type
        run = over_http(server, "run", {"tool": tool, "args": args})
        job = over_http(server, "jobs", {"tool": tool, "args": args})
        assert run.status_code == job.status_code == 422
        assert run.json()["error_type"] == job.json()["error_type"] == error_type
        assert set(run.json()) == set(job.json()) == {"error", "error_type"}

    def test_an_unknown_plugin_is_404_on_run_and_jobs(self, server):
        for route in ("run", "jobs"):
            answer = httpx.post(
                f"{server.url}/v1/plugins/ghost/{route}", json={"tool": "t"}, headers=AUTH
            )
            assert answer.status_code == 404, route
            assert answer.json()["error_type"] == ErrorType.UNKNOWN_PLUGIN
        assert server.host.call("ghost", "t", {}).error_type == ErrorType.UNKNOWN_PLUGIN

    def test_a_draining_host_refuses_with_503_and_retry_after(self, server):
        server.host._admission.refusing = ErrorType.SHUTTING_DOWN
        try:
            for route in ("run", "jobs"):
                answer = over_http(server, route, {"tool": "echo"})
                assert answer.status_code == 503, route
                assert answer.json()["error_type"] == ErrorType.SHUTTING_DOWN
                assert answer.headers["retry-after"]
        finally:
            server.host._admission.refusing = None


class TestAPluginStillStarting:
    def test_a_call_before_its_first_state_is_not_available_not_a_registry_timeout(
        self, plugwarden_plugin, plugwarden_site
    ):
        """A plugin the host found but whose bring-up has not said a word
        yet is PluginNotAvailable ("starting"), not a RegistryTimeout."""
        plugwarden_plugin("early", ECHO)
        source = discover([str(plugwarden_site)]).plugins["early"]
        with Host({}, search_path=[str(plugwarden_site)]) as host:
            host._registry.add(PluginRecord("late", source))
            result = host.call("late", "t", {})
        assert result.error_type == ErrorType.PLUGIN_NOT_AVAILABLE
        assert "starting" in result.error


class TestOneDeadline:
    def test_forty_http_callers_of_a_busy_worker_all_answer_within_the_timeout(
        self, plugwarden_plugin, plugwarden_server
    ):
        """One worker kept busy for far longer than the timeout (each call
        takes 0.25 s, 40 callers): every caller's wait for an HTTP thread
        and for the worker comes out of one deadline, so each has its answer
        (the result, or Busy) within timeout_s plus one second. Before,
        the wait for a thread and the wait for a worker were each up to the
        timeout."""
        timeout_s = 4
        plugwarden_plugin(
            "slow",
            plugin_source("import time\ntime.sleep(0.25)\nreturn 'done'"),
            manifest={"guards": {"workers": 1, "timeout_s": timeout_s}},
        )
        server = plugwarden_server({"server": {"token": TOKEN}})
        clients = [httpx.Client(base_url=server.url, headers=AUTH, timeout=60) for _ in range(40)]
        start = threading.Barrier(40)

        def call(client: httpx.Client) -> tuple[float, int, dict]:
            client.get("/healthz")  # connected before the clock starts
            start.wait(timeout=30)
            began = time.monotonic()
            answer = client.post("/v1/plugins/slow/run", json={"tool": "t"})
            return time.monotonic() - began, answer.status_code, answer.json()

        try:
            with ThreadPoolExecutor(40) as pool:
                answers = list(pool.map(call, clients))
        finally:
            for client in clients:
                client.close()
        slowest = max(took for took, _, _ in answers)
        assert slowest <= timeout_s + 1, sorted(round(took, 2) for took, _, _ in answers)
        for _, status, body in answers:
            assert (status, body.get("error_type")) in ((200, None), (429, ErrorType.BUSY)), body
            assert status == 200 or set(body) == {"error", "error_type"}
        assert any(status == 200 for _, status, _ in answers)
        assert any(status == 429 for _, status, _ in answers)


class TestAdmissionRules:
    def admission(self, tools=("echo",)) -> Admission:
        record = PluginRecord("p", None)
        record.manifest = Manifest(tools=dict.fromkeys(tools, "a tool"))
        return Admission({"p": record}, lambda: ["p"])

    def test_a_known_call_is_admitted(self):
        assert self.admission().refusal("p", "echo", {"a": 1}) is None
        assert self.admission(tools=()).refusal("p", "anything", None) is None

    @pytest.mark.parametrize("timeout_s", [0, -1, "1", True, float("nan"), float("inf")])
    def test_a_job_timeout_must_be_a_positive_number(self, timeout_s):
        refused = self.admission().refusal("p", "echo", {}, timeout_s)
        assert refused is not None and refused.error_type == ErrorType.INVALID_ARGUMENTS

    def test_a_deadline_counts_down_and_stops_at_zero(self):
        deadline = Deadline.after(60)
        assert 59 < deadline.left() <= 60
        assert Deadline(time.monotonic() - 1, 1).left() == 0.0
