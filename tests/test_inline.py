"""Inline isolation: the caller gets its result at the deadline, whatever happens."""

from __future__ import annotations

import threading

import pytest

from plugwarden import State
from plugwarden.isolation.executor import ElasticExecutor
from plugwarden.isolation.inline import copy_for_plugin
from tests.conftest import ECHO, plugin_source

INLINE = {"defaults": {"isolation": "inline"}}


@pytest.fixture
def inline_host(plugwarden_plugin, plugwarden_host):
    def make(source: str, guards: dict | None = None):
        plugwarden_plugin("sibling", ECHO)
        plugwarden_plugin("p", source, manifest={"guards": guards or {}})
        return plugwarden_host(INLINE)

    return make


class TestInlineGuards:
    def test_slow_call_gets_the_timeout_result_and_fails_the_plugin(self, inline_host, tmp_path):
        """A hung inline call is abandoned at its deadline; the plugin is FAILED."""
        release = threading.Event()
        import builtins

        builtins._plugwarden_test_release = release  # the plugin waits on this
        try:
            host = inline_host(
                plugin_source(
                    "import builtins\nbuiltins._plugwarden_test_release.wait(60)\nreturn 'late'"
                ),
                {"timeout_s": 0.3},
            )
            result = host.call("p", "slow", {})
            assert not result.ok and result.guard == "timeout"
            assert (
                result.error
                == "Plugin execution timed out after 0.3s. Increase timeout_s if needed."
            )
            assert host.status("p").state is State.FAILED
            assert host.call("sibling", "echo", {}).ok
        finally:
            release.set()
            del builtins._plugwarden_test_release

    def test_fast_call_within_its_timeout_succeeds(self, inline_host):
        host = inline_host(plugin_source("return args['n'] * 2"), {"timeout_s": 30})
        result = host.call("p", "double", {"n": 21})
        assert result.ok and result.result == 42 and result.guard is None
        assert host.status("p").state is State.INITIALIZED

    @pytest.mark.parametrize(
        ("body", "error_type"),
        [
            ("raise ValueError('v')", "ValueError"),
            ("raise SystemExit(2)", "SystemExit"),
            ("raise KeyboardInterrupt", "KeyboardInterrupt"),
            ("raise GeneratorExit", "GeneratorExit"),
            ("return float('nan')", "ResultNotSerializable"),
            ("return object()", "ResultNotSerializable"),
        ],
    )
    def test_every_exception_type_becomes_an_error_result(self, inline_host, body, error_type):
        """BaseException subclasses included: nothing reaches the caller as a
        raise, and the failure is the call's only: the plugin stays up."""
        host = inline_host(plugin_source(body))
        result = host.call("p", "t", {"keep": "me"})
        assert not result.ok and result.error_type == error_type
        assert result.args == {"keep": "me"}
        assert host.status("p").state is State.INITIALIZED
        assert host.status("p").metrics["error_count"] == 1
        assert host.call("sibling", "echo", {}).ok

    def test_memory_growth_past_the_limit_trips_the_guard(self, inline_host):
        """The host's growth during an inline call past memory_mb is blamed on it."""
        import builtins

        release = threading.Event()
        builtins._plugwarden_test_release = release  # the plugin holds its memory until set
        body = (
            "import builtins\nhog = bytearray(300 * 2**20)\n"
            "hog[::4096] = b'x' * len(hog[::4096])\n"
            "builtins._plugwarden_test_release.wait(60)\nreturn len(hog)"
        )
        try:
            host = inline_host(plugin_source(body), {"memory_mb": 100, "timeout_s": 30})
            result = host.call("p", "hog", {})
        finally:
            release.set()
            del builtins._plugwarden_test_release
        assert result.guard == "memory"
        assert "exceeded 100 MB memory limit" in result.error


class TestElasticExecutor:
    def test_a_stuck_job_does_not_block_the_next(self):
        """Hung threads are replaced: new work still runs."""
        executor = ElasticExecutor(idle_s=1)
        release = threading.Event()
        stuck = executor.submit(release.wait, 30)
        quick = executor.submit(lambda: 7)
        assert quick.wait(10) and quick.value == 7
        assert not stuck.wait(0)
        release.set()
        assert stuck.wait(10)


class TestArgumentCopy:
    def test_a_plugin_changing_plain_args_changes_only_its_copy(self, inline_host):
        body = "args['x'] = 'theirs'\nargs['new'] = 1\nreturn sorted(args)"
        host = inline_host(plugin_source(body))
        mine = {"x": "mine", "n": 2}
        assert host.call("p", "t", mine).result == ["n", "new", "x"]
        assert mine == {"x": "mine", "n": 2}

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"tool": "t", "args": {"x": 1, "y": None, "z": 1.5, "b": b"raw", "t": True}},
            {"tool": "t", "args": {"nested": {"x": [1, 2]}}},
            {"config": {"models": ["a"]}},
            {"tool": "t", "args": {(1, 2): "tuple key"}},
        ],
    )
    def test_the_copy_is_equal_and_shares_nothing_mutable(self, kwargs):
        copied = copy_for_plugin(kwargs)
        assert copied == kwargs and copied is not kwargs
        for key, value in kwargs.items():
            if isinstance(value, dict):
                assert copied[key] is not value

    def test_shared_and_cyclic_values_are_copied_as_deepcopy_does(self):
        shared: list[object] = []
        shared.append(shared)
        copied = copy_for_plugin({"tool": "t", "args": {"a": shared, "b": shared}})
        a, b = copied["args"]["a"], copied["args"]["b"]
        assert a is b and a[0] is a and a is not shared
