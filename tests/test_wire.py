"""The wire's replies: a header, then an outcome's result; a long result is
checked and kept as its bytes, never decoded by the host."""

from __future__ import annotations

import json

import pytest

from plugwarden.isolation import wire
from plugwarden.result import CallResult


def outcome_frame(result_text: str | bytes, header: dict | None = None) -> bytes:
    fields = {"v": 1, "id": 7, "pid": 2, "kind": "outcome", "ok": True, "hook": "run",
              "error": None, "error_type": None, "ms": 1.0} | (header or {})  # fmt: skip
    body = result_text.encode() if isinstance(result_text, str) else result_text
    return json.dumps(fields).encode() + b"\n" + body


class TestOutcome:
    def test_a_short_result_is_decoded(self):
        result = wire.outcome(wire.decode(outcome_frame('{"a":[1,2]}'), 7, 2))
        assert result.result == {"a": [1, 2]} and not result.undecoded

    def test_a_long_result_is_kept_as_its_bytes_and_decoded_on_request(self):
        text = json.dumps([{} for _ in range(100_000)])
        result = wire.outcome(wire.decode(outcome_frame(text), 7, 2))
        assert result.undecoded and result.result is None
        assert bytes(result.encoded) == text.encode()
        assert result.decoded().result == [{}] * 100_000
        assert json.loads(b"".join(bytes(part) for part in result.json_parts()))["result"] == (
            [{}] * 100_000
        )

    @pytest.mark.parametrize(
        ("body", "says"),
        [
            (b"[" + b"1," * 50_000 + b"NaN]", "not plain JSON"),
            (b"[" * 129 + b"]" * 129 + b" " * 70_000, "deeper than 128"),
            (b'["' + b"\xff" * 70_000 + b'"]', "UTF-8"),
            (b"[" + b"1," * 50_000 + b"1", "not plain JSON"),
        ],
        ids=["nan", "deep", "not-utf8", "cut-short"],
    )
    def test_a_long_result_that_is_not_plain_json_is_a_violation(self, body, says):
        with pytest.raises(wire.ProtocolViolation, match=says):
            wire.decode(outcome_frame(body), 7, 2)

    def test_a_result_or_raw_field_forged_in_the_header_is_ignored(self):
        frame = outcome_frame("5", {"result": {"forged": True}, "raw": "x" * 10})
        message = wire.decode(frame, 7, 2)
        assert message["result"] == 5 and "raw" not in message

    def test_only_an_outcome_and_every_outcome_carries_a_result(self):
        progress = {"v": 1, "id": 7, "pid": 2, "kind": "progress", "done": 1, "total": 2,
                    "message": ""}  # fmt: skip
        with pytest.raises(wire.ProtocolViolation, match="result after its header"):
            wire.decode(json.dumps(progress).encode() + b"\n[1]", 7, 2)
        with pytest.raises(wire.ProtocolViolation, match="result after its header"):
            wire.decode(outcome_frame("1").split(b"\n")[0], 7, 2)

    def test_a_header_past_the_envelope_is_refused_before_it_is_decoded(self):
        frame = outcome_frame("1", {"error": "e" * (wire.ENVELOPE_BYTES + 10)})
        with pytest.raises(wire.ProtocolViolation, match="header is over"):
            wire.decode(frame, 7, 2)


class TestWorkerSide:
    def test_a_result_nesting_past_the_cap_is_the_calls_error(self):
        deep: list = []
        for _ in range(130):
            deep = [deep]
        value = CallResult(True, result=deep, encoded=json.dumps(deep))
        frame = wire.encode_outcome(7, 2, value, 2**20)
        result = wire.outcome(wire.decode(frame, 7, 2))
        assert result.error_type == "ResultTooDeep" and "128 levels" in result.error

    def test_an_outcome_round_trips(self):
        value = CallResult(True, result={"a": "b"}, encoded='{"a": "b"}')
        result = wire.outcome(wire.decode(wire.encode_outcome(7, 2, value, 2**20), 7, 2))
        assert result.ok and result.result == {"a": "b"}
