"""The HTTP app against a real uvicorn server on loopback."""

from __future__ import annotations

import threading
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plugwarden import State
from tests.conftest import ECHO, plugin_source, wait_for

REQUIRED_FIELDS = {
    "name",
    "state",
    "description",
    "version",
    "reason",
    "uptime_seconds",
    "last_used",
    "success_count",
    "error_count",
    "last_execution_time_ms",
    "avg_execution_time_ms",
}
TOKEN = "test-token-123"


def waits_for_file(path, then: str = "return 'done'") -> str:
    """Plugin code that blocks until ``path`` exists (the test's release)."""
    return (
        f"import os, time\nwhile not os.path.exists({str(path)!r}):\n    time.sleep(0.01)\n{then}"
    )


@pytest.fixture
def zoo(plugwarden_plugin, tmp_path):
    """Plugins in every steady state, and one that can be held RUNNING."""
    release = tmp_path / "release"
    plugwarden_plugin("ready", ECHO, manifest={"description": "echoes", "tools": {"echo": "e"}})
    plugwarden_plugin("broken", "raise ImportError('no luck')\n")
    plugwarden_plugin("missing", ECHO, requires=["not-installed-anywhere-xyz"])
    plugwarden_plugin("busy", plugin_source(waits_for_file(release)))
    return release


def get(server, path, **kwargs):
    return httpx.get(server.url + path, timeout=30, **kwargs)


def post(server, path, **kwargs):
    return httpx.post(server.url + path, timeout=30, **kwargs)


class TestReadRoutes:
    def test_plugins_is_a_flat_list_with_every_field_in_every_state(self, zoo, plugwarden_server):
        server = plugwarden_server({"server": {"token": TOKEN}})
        runner = threading.Thread(target=lambda: server.host.call("busy", "t", {}))
        runner.start()
        try:
            wait_for(lambda: server.host.status("busy").state is State.RUNNING, what="RUNNING")
            response = get(server, "/v1/plugins")
            assert response.status_code == 200
            items = response.json()
            assert isinstance(items, list)
            states = {item["name"]: item["state"] for item in items}
            assert states == {
                "ready": "INITIALIZED",
                "broken": "FAILED",
                "missing": "UNAVAILABLE",
                "busy": "RUNNING",
            }
            for item in items:
                assert set(item) >= REQUIRED_FIELDS, item["name"]
            for name, state in states.items():
                for path in (f"/v1/plugins/{name}", f"/v1/plugins/{name}/health"):
                    answer = get(server, path)
                    assert answer.status_code == 200
                    assert answer.json()["state"] == state
                    assert "history" in answer.json()
        finally:
            zoo.touch()
            runner.join(30)

    def test_loaded_state_is_served_while_init_runs(
        self, plugwarden_plugin, plugwarden_server, tmp_path
    ):
        release = tmp_path / "release-init"
        plugwarden_plugin(
            "slow", plugin_source("return 1", init_body=waits_for_file(release, then="pass"))
        )
        server = plugwarden_server(wait=False)
        try:
            wait_for(lambda: get(server, "/v1/plugins").json(), what="the plugin to be listed")
            assert get(server, "/v1/plugins/slow/health").json()["state"] == "LOADED"
            assert get(server, "/readyz").status_code == 503
        finally:
            release.touch()
        server.wait_started()
        assert get(server, "/v1/plugins/slow").json()["state"] == "INITIALIZED"

    def test_unknown_plugin_is_404_with_a_json_error(self, zoo, plugwarden_server):
        server = plugwarden_server()
        for path in ("/v1/plugins/ghost", "/v1/plugins/ghost/health"):
            response = get(server, path)
            assert response.status_code == 404
            assert response.json()["error_type"] == "UnknownPlugin"
            assert "ghost" in response.json()["error"]

    def test_unknown_route_and_method_are_json_4xx(self, zoo, plugwarden_server):
        server = plugwarden_server()
        assert get(server, "/nope").status_code == 404
        assert get(server, "/nope").json()["error_type"] == "NotFound"
        response = httpx.delete(server.url + "/v1/plugins", timeout=30)
        assert response.status_code == 405
        assert response.json()["error_type"] == "MethodNotAllowed"

    def test_lock_timeout_is_503_with_retry_after(self, zoo, plugwarden_server):
        server = plugwarden_server({"defaults": {"lock_timeout_s": 0.2}})
        # stale: the records change under the lock, so no cached body answers.
        with server.host._registry.hold_write_lock(stale=True):
            response = get(server, "/v1/plugins")
            health = get(server, "/v1/plugins/ready/health")
            alive = get(server, "/healthz")
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        assert response.json()["error_type"] == "RegistryTimeout"
        assert health.status_code == 503
        assert alive.status_code == 200

    def test_hung_health_hook_and_busy_run_do_not_block_reads(
        self, plugwarden_plugin, plugwarden_server, tmp_path
    ):
        """While one plugin's run and another's health hook hang, reads answer."""
        release = tmp_path / "release"
        plugwarden_plugin("busy", plugin_source(waits_for_file(release)))
        hung = (
            ECHO
            + "\n@hookimpl\ndef health():\n"
            + "\n".join("    " + line for line in waits_for_file(release, "return {}").splitlines())
            + "\n"
        )
        plugwarden_plugin("hung", hung)
        server = plugwarden_server(
            {"defaults": {"health_interval_s": 0.05, "health_timeout_s": 30}}
        )
        runner = threading.Thread(target=lambda: server.host.call("busy", "t", {}))
        runner.start()
        try:
            wait_for(lambda: server.host.status("busy").in_flight == 1, what="the busy call")
            server.host.start_health_checks()
            for _ in range(20):
                assert get(server, "/v1/plugins").status_code == 200
                assert get(server, "/v1/plugins/hung/health").status_code == 200
                assert get(server, "/metrics").status_code == 200
        finally:
            release.touch()
            runner.join(30)
        wait_for(
            lambda: (server.host.status("hung").health or {}).get("ok"),
            what="the health report once released",
        )


class TestHealthReports:
    def test_health_report_is_merged_into_the_record(self, plugwarden_plugin, plugwarden_server):
        plugwarden_plugin("p", ECHO + "\n@hookimpl\ndef health():\n    return {'queue': 3}\n")
        server = plugwarden_server()
        server.host.check_health("p")
        health = get(server, "/v1/plugins/p/health").json()["health"]
        assert health["ok"] is True
        assert health["report"] == {"queue": 3}

    def test_hung_health_hook_past_its_budget_fails_the_plugin(
        self, plugwarden_plugin, plugwarden_server
    ):
        plugwarden_plugin(
            "p", ECHO + "\n@hookimpl\ndef health():\n    import time\n    time.sleep(600)\n"
        )
        server = plugwarden_server({"defaults": {"health_timeout_s": 0.5, "restart": "never"}})
        server.host.check_health("p")  # or the background check, whichever holds the worker
        wait_for(lambda: get(server, "/v1/plugins/p/health").json()["state"] == "FAILED", 30)
        reason = get(server, "/v1/plugins/p/health").json()["reason"]
        assert reason.startswith("Plugin health timed out after 0.5s (stuck in health at ")
        assert reason.endswith(". Increase health_timeout_s if needed.")
        assert server.host.worker_pids("p") == []

    def test_failing_health_hook_is_reported_not_hidden(self, plugwarden_plugin, plugwarden_server):
        plugwarden_plugin("p", ECHO + "\n@hookimpl\ndef health():\n    raise OSError('disk')\n")
        server = plugwarden_server()
        server.host.check_health("p")
        health = get(server, "/v1/plugins/p/health").json()["health"]
        assert health["ok"] is False
        assert "OSError: disk" in health["error"]

    def test_a_required_unhealthy_plugin_makes_readyz_503(
        self, plugwarden_plugin, plugwarden_server
    ):
        """health_failures failed checks in a row: healthy false in the
        record, a badge on the page, readyz 503 naming it; the plugin itself
        stays INITIALIZED and keeps serving runs."""
        plugwarden_plugin("p", ECHO + "\n@hookimpl\ndef health():\n    raise OSError('disk')\n")
        server = plugwarden_server(
            {"defaults": {"health_failures": 3}, "plugins": {"p": {"required": True}}}
        )
        # The server's own first round of health checks runs at start.
        wait_for(lambda: server.host.status("p").health is not None, what="the first check")
        server.host.check_health("p")
        assert get(server, "/readyz").status_code == 200
        server.host.check_health("p")
        record = get(server, "/v1/plugins/p").json()
        assert record["healthy"] is False and record["state"] == "INITIALIZED"
        ready = get(server, "/readyz")
        assert ready.status_code == 503
        assert ready.json()["reasons"] == [
            "required plugin 'p' is unhealthy: its health check failed OSError: disk"
        ]
        assert 'class="unhealthy"' in get(server, "/").text
        listed = {p["name"]: p for p in get(server, "/v1/plugins").json()}
        assert listed["p"]["healthy"] is False


class TestNoStarvation:
    def test_a_flooded_slow_plugin_does_not_delay_another_plugins_run_or_restart(
        self, plugwarden_plugin, plugwarden_server, tmp_path
    ):
        """40 concurrent callers on a plugin whose run blocks: another
        plugin's run and restart answer while all 40 are still held."""
        release = tmp_path / "release"
        plugwarden_plugin("slow", plugin_source(waits_for_file(release)))
        plugwarden_plugin("fast", ECHO)
        server = plugwarden_server({"server": {"token": TOKEN}})
        auth = {"Authorization": f"Bearer {TOKEN}"}
        answers = []

        def slow_call():
            body = {"tool": "t", "args": {}}
            answers.append(post(server, "/v1/plugins/slow/run", json=body, headers=auth))

        callers = [threading.Thread(target=slow_call) for _ in range(40)]
        for caller in callers:
            caller.start()
        try:
            wait_for(lambda: server.host.status("slow").in_flight >= 1, what="slow to be busy")
            run = post(server, "/v1/plugins/fast/run", json={"tool": "t"}, headers=auth)
            restart = post(server, "/v1/plugins/fast/restart", headers=auth)
            assert run.status_code == 200 and run.json()["ok"] is True
            assert restart.status_code == 200 and restart.json()["state"] == "INITIALIZED"
            assert not answers  # every slow caller is still held: nothing waited on them
        finally:
            release.write_text("1")
            for caller in callers:
                caller.join(60)
        assert len(answers) == 40
        assert all(a.status_code == 200 and a.json()["ok"] for a in answers)


class TestMutatingRoutes:
    def test_run_and_restart_are_off_without_a_token(self, zoo, plugwarden_server, monkeypatch):
        monkeypatch.delenv("PLUGWARDEN_TOKEN", raising=False)
        server = plugwarden_server()
        for path in ("/v1/plugins/ready/run", "/v1/plugins/ready/restart"):
            response = post(server, path, json={"tool": "echo"})
            assert response.status_code == 403
            assert response.json()["error_type"] == "MutationsDisabled"

    def test_token_rules(self, zoo, plugwarden_server):
        server = plugwarden_server({"server": {"token": TOKEN}})
        body = {"tool": "echo", "args": {"a": 1}}
        assert post(server, "/v1/plugins/ready/run", json=body).status_code == 401
        wrong = post(
            server, "/v1/plugins/ready/run", json=body, headers={"Authorization": "Bearer nope"}
        )
        assert wrong.status_code == 403
        right = post(
            server, "/v1/plugins/ready/run", json=body, headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert right.status_code == 200
        assert right.json()["ok"] is True
        assert right.json()["result"] == {"tool": "echo", "args": {"a": 1}}

    def test_closed_reads_need_the_token_but_probes_never_do(self, zoo, plugwarden_server):
        """public_reads = false: records, metrics and the page need the token."""
        server = plugwarden_server({"server": {"token": TOKEN, "public_reads": False}})
        auth = {"Authorization": f"Bearer {TOKEN}"}
        for path in (
            "/v1/plugins",
            "/v1/plugins/ready",
            "/v1/plugins/ready/health",
            "/v1/gpus",
            "/metrics",
            "/",
        ):
            assert httpx.get(server.url + path).status_code == 401, path
            assert httpx.get(server.url + path, headers=auth).status_code == 200, path
        for path in ("/healthz", "/readyz"):
            assert httpx.get(server.url + path).status_code == 200, path

    def test_run_on_failed_plugin_is_200_with_ok_false(self, zoo, plugwarden_server):
        server = plugwarden_server({"server": {"token": TOKEN}})
        response = post(
            server,
            "/v1/plugins/broken/run",
            json={"tool": "t"},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert response.status_code == 200
        assert response.json()["ok"] is False
        assert "FAILED" in response.json()["error"]

    @pytest.mark.parametrize(
        ("content", "status", "error_type"),
        [
            (b"{not json", 400, "InvalidJSON"),
            (b"", 400, "InvalidJSON"),
            (b"[1, 2]", 422, "InvalidRequest"),
            (b'{"args": {}}', 422, "InvalidArguments"),
            (b'{"tool": "echo", "args": [1]}', 422, "InvalidArguments"),
            (b'{"tool": "echo", "extra": 1}', 422, "InvalidRequest"),
            (b"x" * 2_000_000, 413, "PayloadTooLarge"),
        ],
    )
    def test_bad_bodies_get_4xx_naming_the_problem(
        self, zoo, plugwarden_server, content, status, error_type
    ):
        server = plugwarden_server({"server": {"token": TOKEN}})
        response = post(
            server,
            "/v1/plugins/ready/run",
            content=content,
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert response.status_code == status
        assert response.json()["error_type"] == error_type
        assert server.host.status("ready").state is State.INITIALIZED

    def test_restart_over_http_flips_readyz(self, plugwarden_plugin, plugwarden_server, tmp_path):
        """A required plugin FAILED: /readyz 503 with its reason; fixed and restarted: 200."""
        flag = tmp_path / "fail"
        flag.write_text("1")
        source = plugin_source(
            "return 1",
            init_body=(
                f"import os\nif os.path.exists({str(flag)!r}):\n    raise RuntimeError('no model')"
            ),
        )
        plugwarden_plugin("core", source)
        server = plugwarden_server(
            {"server": {"token": TOKEN}, "plugins": {"core": {"required": True}}}
        )
        not_ready = get(server, "/readyz")
        assert not_ready.status_code == 503
        assert "required plugin 'core' is FAILED" in not_ready.json()["reasons"][0]
        assert "no model" in not_ready.json()["reasons"][0]
        flag.unlink()
        restarted = post(
            server, "/v1/plugins/core/restart", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert restarted.status_code == 200
        assert restarted.json()["state"] == "INITIALIZED"
        assert get(server, "/readyz").json() == {"ready": True, "reasons": []}

    def test_restart_unknown_plugin_is_404(self, zoo, plugwarden_server):
        server = plugwarden_server({"server": {"token": TOKEN}})
        response = post(
            server, "/v1/plugins/ghost/restart", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert response.status_code == 404


class TestProbes:
    def test_healthz_is_alive(self, plugwarden_server):
        assert get(plugwarden_server(), "/healthz").json() == {"status": "alive"}

    def test_readyz_names_a_missing_required_plugin(self, plugwarden_server):
        server = plugwarden_server({"plugins": {"absent": {"required": True}}})
        response = get(server, "/readyz")
        assert response.status_code == 503
        assert response.json()["reasons"] == ["required plugin 'absent' is not installed"]


METHODS = st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"])
# Arbitrary text, percent-encoded as a client puts it on the wire.
SEGMENT = st.text(st.characters(codec="utf-8"), max_size=12).map(lambda t: quote(t, safe=""))
PATHS = st.one_of(
    st.sampled_from(
        [
            "/",
            "/healthz",
            "/readyz",
            "/metrics",
            "/v1/plugins",
            "/v1/plugins/ready",
            "/v1/plugins/ready/health",
            "/v1/plugins/ready/run",
            "/v1/plugins/ready/restart",
        ]
    ),
    st.lists(SEGMENT, min_size=1, max_size=4).map(lambda parts: "/" + "/".join(parts)),
    SEGMENT.map(lambda name: f"/v1/plugins/{name}/run"),
)
HEADERS = st.dictionaries(
    st.sampled_from(["authorization", "content-type", "content-length-x", "accept", "x-any"]),
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40).map(str.strip),
    max_size=3,
)


class TestFuzz:
    def test_no_500_for_any_path_method_header_or_body(self, zoo, plugwarden_server):
        """Hypothesis throws paths, methods, headers and bodies at a live server."""
        server = plugwarden_server({"server": {"token": TOKEN}})
        client = httpx.Client(timeout=30)

        @settings(
            max_examples=250,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture],
        )
        @given(
            method=METHODS,
            path=PATHS,
            headers=HEADERS,
            body=st.one_of(st.binary(max_size=300), st.just(b'{"tool": "echo"}')),
            authorised=st.booleans(),
        )
        def probe(method, path, headers, body, authorised):
            if authorised:
                headers = {**headers, "authorization": f"Bearer {TOKEN}"}
            response = client.request(method, server.url + path, headers=headers, content=body)
            assert response.status_code < 500, (method, path, response.text)
            if response.status_code >= 400 and method != "HEAD":
                assert set(response.json()) == {"error", "error_type"}

        try:
            probe()
        finally:
            client.close()
        assert server.host.status("ready").state in (State.INITIALIZED, State.RUNNING)
