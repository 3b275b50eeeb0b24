"""Stuck calls say where they were stuck (plugwarden.isolation.process.stacks):
the worker's stacks are taken before it is killed, logged, and its innermost
frames named in the reason."""

from __future__ import annotations

import logging
from pathlib import Path

from plugwarden import ErrorType
from plugwarden.isolation.process.stacks import stuck_at
from tests.conftest import plugin_source, wait_for

DUMP = """Thread 0x00007f0000000001 (most recent call first):
  File "/usr/lib/python3.11/threading.py", line 324 in wait
  File "/srv/site/other/helper.py", line 9 in background

Current thread 0x00007f0000000002 (most recent call first):
  File "/usr/lib/python3.11/socket.py", line 705 in readinto
  File "/srv/site/myplugin/pipeline.py", line 88 in track
  File "/srv/site/myplugin/__init__.py", line 12 in run
  File "/srv/site/pluggy/_callers.py", line 103 in _multicall
""".splitlines()

STUCK = plugin_source(
    "return deep()",
    prelude=(
        "import threading\n\n\ndef deep():\n    threading.Event().wait()  # never set: stuck here\n"
    ),
)
SLOW_HEALTH = STUCK + (
    "\n\n@hookimpl\ndef health():\n    import threading\n    threading.Event().wait()\n"
)


class TestStuckAt:
    def test_names_the_plugins_innermost_frame_then_the_innermost_of_all(self):
        where = stuck_at(DUMP, Path("/srv/site/myplugin"))
        assert (
            where == "in track at myplugin/pipeline.py:88, in readinto at python3.11/socket.py:705"
        )

    def test_one_frame_when_the_plugins_own_is_innermost(self):
        where = stuck_at([DUMP[4], *DUMP[6:]], Path("/srv/site/myplugin"))
        assert where == "in track at myplugin/pipeline.py:88"

    def test_nothing_to_say_without_frames(self):
        assert stuck_at(["garbage", ""], None) is None


class TestTimeouts:
    def test_a_timed_out_call_names_where_it_was_stuck_and_logs_the_stacks(
        self, plugwarden_plugin, plugwarden_host, caplog
    ):
        plugwarden_plugin("stuck", STUCK)
        host = plugwarden_host({"plugins": {"stuck": {"timeout_s": 1}}})
        with caplog.at_level(logging.WARNING, logger="plugwarden.stacks"):
            result = host.call("stuck", "t", {})
        assert result.error_type == ErrorType.TIMEOUT
        assert result.error.startswith("Plugin execution timed out after 1s (stuck in deep at ")
        assert "__init__.py:6, in wait at " in result.error
        assert result.error.endswith("Increase timeout_s if needed.")
        logged = [r.getMessage() for r in caplog.records if "its stacks" in r.getMessage()]
        assert logged and "Current thread" in logged[0] and "in deep" in logged[0]
        assert host.call("stuck", "t", {}).error_type == ErrorType.TIMEOUT  # replaced, serving

    def test_a_health_hook_that_hangs_says_where(self, plugwarden_plugin, plugwarden_host):
        plugwarden_plugin("sick", SLOW_HEALTH)
        host = plugwarden_host({"defaults": {"health_timeout_s": 1}})
        report = host.check_health("sick")
        assert report is not None and not report["ok"]
        assert "(stuck in health at " in report["error"]

    def test_a_cancel_that_had_to_kill_says_where(self, plugwarden_plugin, plugwarden_host):
        plugwarden_plugin("stuck", STUCK)
        host = plugwarden_host({"jobs": {"cancel_grace_s": 0.5}})
        job = host.submit("stuck", "t", {})
        wait_for(lambda: host.job(job.id).state == "running", 30)
        host.cancel(job.id)
        wait_for(lambda: host.job(job.id).finished, 60)
        ended = host.job(job.id)
        assert ended.state == "cancelled"
        assert "of the cancel (stuck in deep at " in ended.outcome["error"]
