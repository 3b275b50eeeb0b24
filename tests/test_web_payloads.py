"""Binary values over HTTP: multipart and octet-stream bodies in, base64 or
multipart/mixed answers out, and the same 4xx discipline as JSON bodies."""

from __future__ import annotations

import base64
import email.parser
import email.policy
import json

import httpx
import numpy as np
import pytest

from plugwarden import State
from tests.conftest import wait_for
from tests.test_segment import BINARY

TOKEN = "payloads-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FRAME = np.random.default_rng(7).integers(0, 255, (48, 64, 3), dtype=np.uint8)


@pytest.fixture
def server(plugwarden_plugin, plugwarden_server):
    plugwarden_plugin("binary", BINARY)
    config = {"server": {"token": TOKEN, "max_blob_bytes": 1 << 20, "max_body_bytes": 4096}}
    return plugwarden_server(config)


def run(server, body=None, headers=None, **options):
    """POST to the binary plugin's run route (``body``: as JSON)."""
    if body is not None:
        options["json"] = body
    url = f"{server.url}/v1/plugins/binary/run"
    return httpx.post(url, headers=AUTH | (headers or {}), timeout=60, **options)


def request_part(tool: str, args: dict) -> dict:
    return {"request": json.dumps({"tool": tool, "args": args})}


def parts_of(answer: httpx.Response) -> dict[str, bytes]:
    """A multipart/mixed answer read by the standard library's parser."""
    head = f"Content-Type: {answer.headers['content-type']}\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + answer.content)
    return {
        part.get_param("name", header="content-disposition"): part.get_payload(decode=True)
        for part in message.iter_parts()
    }


class TestBodies:
    def test_a_file_part_reaches_the_plugin_as_bytes_and_comes_back_as_base64(self, server):
        data = bytes(range(256)) * 100
        answer = run(server, data=request_part("echo", {"value": {"$blob": "file"}}),
                     files={"file": ("x.bin", data, "application/octet-stream")})  # fmt: skip
        assert answer.status_code == 200, answer.text
        record = answer.json()
        assert base64.b64decode(record["result"]["$base64"]) == data
        assert record["args"] == {"value": {"$blob": {"bytes": len(data)}}}  # described

    def test_a_part_with_dtype_and_shape_is_an_array_in_the_plugin(self, server):
        ref = {"$blob": "frame", "dtype": "|u1", "shape": list(FRAME.shape)}
        answer = run(server, data=request_part("kinds", {"frame": ref}),
                     files={"frame": ("f", FRAME.tobytes())})  # fmt: skip
        assert answer.json()["result"]["frame"] == ["ndarray", "uint8", [48, 64, 3]]
        mean = run(server, data=request_part("mean", {"frame": ref}),
                   files={"frame": ("f", FRAME.tobytes())})  # fmt: skip
        assert mean.json()["result"] == pytest.approx(FRAME.mean())

    def test_an_octet_stream_body_is_one_argument(self, server):
        query = {"tool": "mean", "arg": "frame", "dtype": "|u1", "shape": "48,64,3"}
        octets = {"Content-Type": "application/octet-stream"}
        answer = run(server, content=FRAME.tobytes(), headers=octets, params=query)
        assert answer.status_code == 200, answer.text
        assert answer.json()["result"] == pytest.approx(FRAME.mean())
        plain = run(server, content=b"abc", headers={"Content-Type": "application/octet-stream"},
                    params={"tool": "kinds", "arg": "data", "args": '{"n": 1}'})  # fmt: skip
        assert plain.json()["result"] == {"data": ["bytes", "", []], "n": ["int", "", []]}

    def test_an_array_result_as_multipart_mixed(self, server):
        """Accept: multipart/mixed puts each binary value in a part of its
        own, referred to from the JSON record."""
        answer = run(server, {"tool": "make", "args": {}}, headers={"Accept": "multipart/mixed"})
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("multipart/mixed; boundary=")
        parts = parts_of(answer)
        record = json.loads(parts["record"])
        assert record["result"]["a"] == {"$blob": "b0", "dtype": "<f4", "shape": [2, 3]}
        assert record["result"]["b"] == [{"$blob": "b1"}, {"$blob": "b2"}]
        assert np.array_equal(np.frombuffer(parts["b0"], "<f4"), np.arange(6, dtype="<f4"))
        assert (parts["b1"], parts["b2"]) == (b"xyz", b"q")

    def test_a_plain_result_as_multipart_mixed_is_its_record_alone(self, server):
        answer = run(server, {"tool": "echo", "args": {"value": [1, "a"]}},
                     headers={"Accept": "multipart/mixed"})  # fmt: skip
        assert json.loads(parts_of(answer)["record"])["result"] == [1, "a"]

    def test_a_job_takes_a_multipart_body(self, server):
        answer = httpx.post(
            f"{server.url}/v1/plugins/binary/jobs", headers=AUTH,
            data=request_part("echo", {"value": {"$blob": "file"}}), files={"file": ("f", b"job")},
        )  # fmt: skip
        assert answer.status_code == 202, answer.text
        job = answer.json()
        assert job["args"] == {"value": {"$blob": {"bytes": 3}}}
        url = f"{server.url}/v1/jobs/{job['id']}"
        wait_for(lambda: httpx.get(url, headers=AUTH).json()["state"] == "succeeded", 30)
        result = httpx.get(f"{url}/result", headers=AUTH).json()
        assert base64.b64decode(result["$base64"]) == b"job"


HOSTILE = {
    "no_request_part": ({}, {"file": ("f", b"x")}, None, 422, "no 'request' part"),
    "unknown_part": (request_part("echo", {"value": {"$blob": "nope"}}), {"file": ("f", b"x")},
                     None, 422, "part 'nope', which was not sent"),
    "unused_part": (request_part("echo", {"value": 1}), {"extra": ("f", b"x")}, None, 422,
                    "part 'extra' is not referred to"),
    "shape_lies": (request_part("echo", {"value": {"$blob": "f", "dtype": "<f4", "shape": [9]}}),
                   {"f": ("f", b"1234")}, None, 422, "are not an array of (9,)"),
    "object_dtype": (request_part("echo", {"value": {"$blob": "f", "dtype": "|O8"}}),
                     {"f": ("f", b"12345678")}, None, 422, "not a plain numeric type"),
    "request_not_json": ({"request": "{nope"}, {"f": ("f", b"x")}, None, 400, "not valid JSON"),
    "request_over_max_body": (request_part("echo", {"value": "x" * 5000}), {"f": ("f", b"x")},
                              None, 413, "max_body_bytes"),
    "over_max_blob": (request_part("echo", {"value": {"$blob": "f"}}),
                      {"f": ("f", b"x" * (2 << 20))}, None, 413, "max_blob_bytes"),
    "no_boundary": (None, None, "multipart/form-data", 422, "no multipart boundary"),
    "text_plain": (None, None, "text/plain", 415, "Unsupported Content-Type"),
    "octets_without_tool": (None, None, "application/octet-stream", 422, "?tool=TOOL&arg="),
}  # fmt: skip


class TestHostileBodies:
    @pytest.mark.parametrize("case", sorted(HOSTILE))
    def test_a_bad_body_is_a_4xx_naming_the_problem(self, server, case):
        data, files, content_type, status, says = HOSTILE[case]
        if content_type is None:
            answer = run(server, data=data, files=files)
        else:
            answer = run(server, content=b"--x\r\n", headers={"Content-Type": content_type})
        assert answer.status_code == status, answer.text
        assert says in answer.json()["error"]
        assert server.host.status("binary").state is State.INITIALIZED
        assert server.host.status("binary").metrics["error_count"] == 0

    @pytest.mark.parametrize(
        ("args", "says"),
        [("[" * 3000, "nests deeper"), ('{"a": NaN}', "finite"), ("[1]", "JSON object")],
    )
    def test_an_octet_streams_query_args_are_held_to_the_json_body_rules(self, server, args, says):
        octets = {"Content-Type": "application/octet-stream"}
        query = {"tool": "echo", "arg": "value", "args": args}
        answer = run(server, content=b"abc", headers=octets, params=query)
        assert answer.status_code in (400, 422), answer.text
        assert says in answer.json()["error"]
