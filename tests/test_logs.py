"""Logging: one event per line; a worker's records keep their level; JSON on request."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys

from plugwarden.logs import JsonFormatter, WorkerRecordFormatter, parse_record
from tests.conftest import plugin_source, wait_for
from tests.test_web_server import answers, free_port

LOGGING_RUN = plugin_source(
    "import logging\nlogging.getLogger('vision').warning('low light')\n"
    "print('plain print')\nraise ValueError('bad frame')"
)


class TestWorkerRecords:
    def test_a_worker_record_is_one_line_with_its_level_and_traceback(self):
        try:
            raise ValueError("inner")
        except ValueError:
            record = logging.LogRecord(
                "p", logging.ERROR, __file__, 1, "oops", None, sys.exc_info()
            )
        line = WorkerRecordFormatter().format(record)
        assert "\n" not in line
        level, logger, message = parse_record(line)
        assert (level, logger) == (logging.ERROR, "p")
        assert message.startswith("oops\nTraceback") and "ValueError: inner" in message

    def test_plain_text_and_forged_records_are_plain_text(self):
        assert parse_record("hello") is None
        assert parse_record("\x1e{not json") is None
        assert parse_record('\x1e{"level": "x", "logger": 1, "message": 2}') is None
        assert parse_record("\x1e" + "[" * 5000) is None  # past the JSON parser's recursion

    def test_through_a_real_worker(self, plugwarden_plugin, plugwarden_host, caplog):
        """The plugin's warning and the guard's traceback arrive as one
        WARNING event each (not a line per traceback line, not double
        levels); a print stays an INFO line."""
        caplog.set_level(logging.INFO, logger="plugwarden.plugin")
        plugwarden_plugin("cam", LOGGING_RUN)
        host = plugwarden_host()
        assert host.call("cam", "t", {}).error_type == "ValueError"

        def ours():
            return [r for r in caplog.records if r.name == "plugwarden.plugin.cam"]

        wait_for(lambda: any("hook run raised" in r.getMessage() for r in ours()), what="logs")
        by_message = {r.getMessage().split("\n")[0]: r for r in ours()}
        assert by_message["vision: low light"].levelno == logging.WARNING
        assert by_message["plain print"].levelno == logging.INFO
        raised = by_message["plugwarden.guards: hook run raised"]
        assert raised.levelno == logging.WARNING
        assert "Traceback" in raised.getMessage() and "ValueError: bad frame" in raised.getMessage()
        assert not any(r.getMessage().startswith(("WARNING ", "INFO ")) for r in ours())
        assert not any(r.getMessage().startswith("  File ") for r in ours())


class TestJsonLogs:
    def test_formatter_names_the_plugin_from_its_logger(self):
        record = logging.LogRecord("plugwarden.plugin.cam", logging.INFO, "", 1, "hi", None, None)
        event = json.loads(JsonFormatter().format(record))
        assert event["plugin"] == "cam" and event["level"] == "INFO" and event["message"] == "hi"
        assert event["pid"] == os.getpid() and event["time"].endswith("+00:00")

    def test_serve_writes_one_json_object_per_line(
        self, plugwarden_plugin, plugwarden_site, tmp_path
    ):
        plugwarden_plugin("cam", LOGGING_RUN)
        (tmp_path / "plugwarden.toml").write_text(
            '[server]\nlog_format = "json"\ntoken = "json-logs-token-123456"\n'
        )
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "plugwarden", "serve", "--port", str(port)],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(plugwarden_site)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for(lambda: answers(f"http://127.0.0.1:{port}/readyz"), 60, "readiness")
            import httpx

            httpx.post(
                f"http://127.0.0.1:{port}/v1/plugins/cam/run",
                json={"tool": "t"},
                headers={"Authorization": "Bearer json-logs-token-123456"},
                timeout=30,
            )
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(60) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
            lines = proc.stdout.read().decode().splitlines()
            proc.stdout.close()
        events = [json.loads(line) for line in lines if line.strip()]  # every line is JSON
        assert {"time", "level", "logger", "message", "pid"} <= set(events[0])
        warnings = [e for e in events if e.get("plugin") == "cam" and e["level"] == "WARNING"]
        assert any(e["message"] == "vision: low light" for e in warnings)
        assert any(e["logger"].startswith("uvicorn") for e in events)
