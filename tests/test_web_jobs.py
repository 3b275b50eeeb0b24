"""The job routes on a real uvicorn server: submit, poll, stream, cancel,
list, and the usual 4xx JSON for bad input."""

from __future__ import annotations

import json
import re
import threading

import httpx
import pytest

from plugwarden import ErrorType
from tests.conftest import plugin_source, wait_for
from tests.test_jobs import BLOCK_UNTIL_FILE, STEPS, Gate
from tests.test_web_page import CHROMIUM, chromium

TOKEN = "jobs-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def server(plugwarden_plugin, plugwarden_server):
    plugwarden_plugin("steps", plugin_source(STEPS))
    plugwarden_plugin("gate", plugin_source(BLOCK_UNTIL_FILE))
    return plugwarden_server({"server": {"token": TOKEN}, "jobs": {"max_queued_jobs": 1}})


def read(url, **options):
    """GET with the token: job reads carry their callers' data."""
    return httpx.get(url, headers=AUTH, **options)


def submit(server, name="steps", body=None, headers=AUTH):
    body = {"tool": "count", "args": {"n": 20, "dt": 0.1}} if body is None else body
    return httpx.post(f"{server.url}/v1/plugins/{name}/jobs", json=body, headers=headers)


def events(server, job_id):
    """Every (event, data) of the job's stream, until it ends."""
    seen = []
    with httpx.stream(
        "GET", f"{server.url}/v1/jobs/{job_id}/events", timeout=60, headers=AUTH
    ) as answer:
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/event-stream")
        kind = None
        for line in answer.iter_lines():
            if line.startswith("event: "):
                kind = line[len("event: ") :]
            elif line.startswith("data: "):
                seen.append((kind, json.loads(line[len("data: ") :])))
    return seen


class TestProgress:
    def test_polling_shows_increasing_progress_then_the_result(self, server):
        answer = submit(server)
        assert answer.status_code == 202
        job = answer.json()
        assert answer.headers["location"] == f"/v1/jobs/{job['id']}"
        assert job["state"] == "queued" and job["plugin"] == "steps" and job["record"] is None
        done = []
        while True:
            polled = read(server.url + answer.headers["location"]).json()
            if polled["progress"] is not None:
                done.append(polled["progress"]["done"])
            if polled["state"] not in ("queued", "running"):
                break
        assert polled["state"] == "succeeded"
        assert polled["record"]["ok"] and polled["record"]["result"] == {"done": 20}
        assert done == sorted(done) and len(set(done)) >= 3 and done[-1] == 20

    def test_the_event_stream_carries_progress_then_the_final_record(self, server):
        job = submit(server).json()
        seen = events(server, job["id"])
        kinds = [kind for kind, _ in seen]
        assert kinds[-1] == "end" and set(kinds[:-1]) == {"progress"}
        progress = [data["progress"]["done"] for kind, data in seen[:-1] if data["progress"]]
        assert progress == sorted(progress) and len(set(progress)) >= 3
        final = seen[-1][1]
        assert final["state"] == "succeeded" and final["record"]["result"] == {"done": 20}

    def test_the_stream_of_a_finished_job_is_its_end_event(self, server):
        job = submit(server, body={"tool": "count", "args": {"n": 1, "dt": 0}}).json()
        wait_for(lambda: read(f"{server.url}/v1/jobs/{job['id']}").json()["state"] == "succeeded")
        assert [kind for kind, _ in events(server, job["id"])] == ["end"]


class TestDrain:
    def test_a_drain_ends_the_event_streams_with_shutting_down(self, server, tmp_path):
        gate = Gate(tmp_path)
        job = submit(server, "gate", {"tool": "t", "args": gate.args}).json()
        gate.wait_started()
        drainer = threading.Thread(target=server.host.drain, args=(30,))
        with httpx.stream(
            "GET", f"{server.url}/v1/jobs/{job['id']}/events", timeout=60, headers=AUTH
        ) as answer:
            lines = answer.iter_lines()
            assert next(lines) == "event: progress"  # the stream is open: now drain
            drainer.start()
            rest = list(lines)
        gate.release()
        drainer.join(30)
        assert "event: error" in rest
        data = json.loads(
            next(line for line in rest if line.startswith("data: ") and "error_type" in line)[6:]
        )
        assert data["error_type"] == ErrorType.SHUTTING_DOWN


class TestCancelAndList:
    def test_delete_cancels_a_running_job(self, server):
        job = submit(server, body={"tool": "count", "args": {"n": 1000, "dt": 0.01}}).json()
        url = f"{server.url}/v1/jobs/{job['id']}"
        wait_for(lambda: read(url).json()["progress"] is not None, 30, "progress")
        assert httpx.delete(url, headers=AUTH).status_code == 200
        wait_for(lambda: read(url).json()["state"] == "cancelled", 10, "the cancel")
        after = httpx.post(
            f"{server.url}/v1/plugins/steps/run",
            json={"tool": "count", "args": {"n": 1, "dt": 0}},
            headers=AUTH,
        )
        assert after.json()["ok"]

    def test_the_list_filters_by_plugin_and_state_and_pages_with_a_link(self, server):
        ids = []
        for _ in range(3):
            job = submit(server, body={"tool": "c", "args": {"n": 1, "dt": 0}}).json()
            wait_for(
                lambda j=job: read(f"{server.url}/v1/jobs/{j['id']}").json()["state"] == "succeeded"
            )
            ids.append(job["id"])
        listed = read(f"{server.url}/v1/jobs", params={"plugin": "steps", "limit": 2})
        assert [j["id"] for j in listed.json()] == ids[::-1][:2]
        link = listed.headers["link"]
        assert link.endswith('rel="next"')
        rest = read(server.url + link[1 : link.index(">")]).json()
        assert [j["id"] for j in rest] == ids[:1]
        assert read(f"{server.url}/v1/jobs", params={"state": "failed"}).json() == []
        assert read(f"{server.url}/v1/jobs", params={"plugin": "gate"}).json() == []

    def test_a_listing_carries_no_results_and_a_job_its_result_on_its_own_route(self, server):
        job = submit(server, body={"tool": "c", "args": {"n": 1, "dt": 0}}).json()
        url = f"{server.url}/v1/jobs/{job['id']}"
        wait_for(lambda: read(url).json()["state"] == "succeeded")
        (listed,) = read(f"{server.url}/v1/jobs").json()
        assert "result" not in listed["record"] and listed["record"]["result_bytes"] > 0
        assert read(url).json()["record"]["result"] == {"done": 1}
        assert read(url + "/result").json() == {"done": 1}

    def test_the_result_of_a_job_not_finished_is_a_409(self, server, tmp_path):
        gate = Gate(tmp_path)
        job = submit(server, "gate", {"tool": "t", "args": gate.args}).json()
        answer = read(f"{server.url}/v1/jobs/{job['id']}/result")
        gate.release()
        assert answer.status_code == 409 and answer.json()["error_type"] == "JobNotFinished"

    def test_a_full_queue_answers_429_busy(self, server, tmp_path):
        gate = Gate(tmp_path)
        body = {"tool": "t", "args": gate.args}
        assert submit(server, "gate", body).status_code == 202
        gate.wait_started()
        assert submit(server, "gate", body).status_code == 202  # queued
        full = submit(server, "gate", body)
        assert full.status_code == 429 and full.headers["retry-after"]
        assert full.json()["error_type"] == ErrorType.BUSY
        gate.release()


class TestBadRequests:
    @pytest.mark.parametrize(
        "path", ["/v1/jobs/nope", "/v1/jobs/" + "0" * 32, "/v1/jobs/" + "0" * 32 + "/events"]
    )
    def test_an_unknown_job_is_404(self, server, path):
        answer = read(server.url + path)
        assert answer.status_code == 404
        assert answer.json()["error_type"] == ErrorType.UNKNOWN_JOB

    def test_delete_of_an_unknown_job_is_404(self, server):
        answer = httpx.delete(f"{server.url}/v1/jobs/{'a' * 32}", headers=AUTH)
        assert answer.status_code == 404 and answer.json()["error_type"] == ErrorType.UNKNOWN_JOB

    @pytest.mark.parametrize(
        ("headers", "status"),
        [({}, 401), ({"Authorization": "Bearer wrong"}, 403)],
    )
    def test_submit_and_cancel_need_the_token(self, server, headers, status):
        assert submit(server, headers=headers).status_code == status
        assert (
            httpx.delete(f"{server.url}/v1/jobs/{'a' * 32}", headers=headers).status_code == status
        )
        assert read(f"{server.url}/v1/jobs").json() == []

    @pytest.mark.parametrize(
        ("headers", "status"),
        [({}, 401), ({"Authorization": "Bearer wrong"}, 403)],
    )
    def test_job_reads_need_the_token(self, server, headers, status):
        """A job's args and result are its caller's data: listing, reading
        and following a job are closed to anyone without the token."""
        job = submit(server, body={"tool": "count", "args": {"n": 1, "dt": 0, "secret": "pw"}})
        job_id = job.json()["id"]
        for path in ("/v1/jobs", f"/v1/jobs/{job_id}", f"/v1/jobs/{job_id}/events"):
            answer = httpx.get(server.url + path, headers=headers)
            assert answer.status_code == status, path
            assert "pw" not in answer.text

    @pytest.mark.parametrize(
        ("body", "status", "error_type"),
        [
            ({"tool": 3}, 422, ErrorType.INVALID_ARGUMENTS),
            ({"tool": "t", "extra": 1}, 422, ErrorType.INVALID_REQUEST),
            ({"tool": "t", "timeout_s": -1}, 422, ErrorType.INVALID_ARGUMENTS),
            ({"tool": "t", "timeout_s": "1"}, 422, ErrorType.INVALID_ARGUMENTS),
            ([1, 2], 422, ErrorType.INVALID_REQUEST),
        ],
    )
    def test_a_bad_body_gets_a_4xx_json_error(self, server, body, status, error_type):
        answer = submit(server, body=body)
        assert answer.status_code == status and answer.json()["error_type"] == error_type

    def test_invalid_json_and_an_unknown_plugin(self, server):
        raw = httpx.post(f"{server.url}/v1/plugins/steps/jobs", content=b"{nope", headers=AUTH)
        assert raw.status_code == 400 and raw.json()["error_type"] == ErrorType.INVALID_JSON
        unknown = submit(server, "missing")
        assert (
            unknown.status_code == 404 and unknown.json()["error_type"] == ErrorType.UNKNOWN_PLUGIN
        )

    @pytest.mark.parametrize(
        "query",
        [{"state": "done"}, {"limit": "0"}, {"limit": "x"}, {"before": "-3"}, {"page": "2"}],
    )
    def test_a_bad_list_query_is_422(self, server, query):
        answer = read(f"{server.url}/v1/jobs", params=query)
        assert (
            answer.status_code == 422 and answer.json()["error_type"] == ErrorType.INVALID_REQUEST
        )

    def test_jobs_are_off_without_a_token(self, plugwarden_plugin, plugwarden_server):
        plugwarden_plugin("steps", plugin_source(STEPS))
        live = plugwarden_server()
        answer = submit(live)
        assert answer.status_code == 403
        assert answer.json()["error_type"] == ErrorType.MUTATIONS_DISABLED


class TestObservability:
    def test_metrics_count_jobs_by_state_duration_and_queue_depth(self, server, tmp_path):
        from prometheus_client.parser import text_string_to_metric_families

        job = submit(server, body={"tool": "c", "args": {"n": 2, "dt": 0}}).json()
        wait_for(lambda: read(f"{server.url}/v1/jobs/{job['id']}").json()["state"] == "succeeded")
        gate = Gate(tmp_path)
        submit(server, "gate", {"tool": "t", "args": gate.args})
        gate.wait_started()
        submit(server, "gate", {"tool": "t", "args": gate.args})
        samples = {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(httpx.get(server.url + "/metrics").text)
            for sample in family.samples
        }
        gate.release()
        assert samples[("plugwarden_jobs", (("state", "succeeded"),))] == 1
        assert samples[("plugwarden_jobs", (("state", "running"),))] == 1
        assert samples[("plugwarden_jobs", (("state", "queued"),))] == 1
        assert samples[("plugwarden_job_queue_depth", (("plugin", "gate"),))] == 1
        assert samples[("plugwarden_job_duration_seconds_count", (("plugin", "steps"),))] == 1

    @pytest.mark.skipif(
        CHROMIUM is None, reason="chromium not installed (Debian package; .ci/run installs it)"
    )
    def test_the_status_page_shows_a_running_job_with_its_progress_bar(self, server, tmp_path):
        job = submit(server, body={"tool": "count", "args": {"n": 100000, "dt": 0.05}}).json()
        url = f"{server.url}/v1/jobs/{job['id']}"
        wait_for(lambda: read(url).json()["progress"] is not None, 30, "progress")
        dom = chromium(server.url + "/", "--dump-dom", profile=tmp_path / "profile").stdout
        row = re.search(rf'<tr data-job="{job["id"]}">(.*?)</tr>', dom, re.S)
        assert row is not None, dom[-2000:]
        assert "steps" in row.group(1) and "count" in row.group(1)
        assert re.search(r'<progress max="1" value="0\.0\d*', row.group(1))
        assert "of 100000" in row.group(1)
        httpx.delete(url, headers=AUTH)
