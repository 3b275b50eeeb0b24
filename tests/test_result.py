"""The result record."""

from __future__ import annotations

import json

from plugwarden import CallResult


class TestCallResult:
    def test_success_record_to_dict_has_every_field(self):
        """to_dict() is JSON-ready and carries the call's args unchanged."""
        record = CallResult(
            ok=True, plugin="p", tool="t", args={"a": [1, 2]}, result={"x": 1}, duration_ms=1.23456
        )
        data = record.to_dict()
        assert data == {
            "ok": True,
            "plugin": "p",
            "hook": "run",
            "tool": "t",
            "args": {"a": [1, 2]},
            "result": {"x": 1},
            "error": None,
            "error_type": None,
            "duration_ms": 1.235,
            "guard_tripped": False,
            "guard": None,
        }
        json.dumps(data)

    def test_failure_record_copies_args_and_names_the_guard(self):
        """failure() keeps the caller's args (a copy) and the tripped guard."""
        args = {"k": "v"}
        record = CallResult.failure(
            "p", "too slow", "Timeout", tool="t", args=args, guard="timeout"
        )
        args["k"] = "changed"
        assert record.args == {"k": "v"}
        assert record.guard_tripped and record.to_dict()["guard"] == "timeout"
        assert not record.ok and record.error == "too slow"
