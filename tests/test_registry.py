"""The registry: states, history, calls in flight, metrics."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from plugwarden import PluginStatus, RegistryTimeout, State, TransitionError, UnknownPlugin
from plugwarden.host.registry import Registry
from plugwarden.result import CallResult


def ready(registry: Registry, name: str = "p") -> Registry:
    registry.transition(name, State.LOADED, "imported")
    registry.transition(name, State.INITIALIZED, "ready")
    return registry


class TestTransitions:
    def test_each_transition_keeps_its_time_and_reason(self):
        """History holds every transition with its reason and a UTC time."""
        registry = ready(Registry())
        registry.transition("p", State.FAILED, "broke")
        history = registry.status("p").history
        assert [(t.state, t.reason) for t in history] == [
            (State.LOADED, "imported"),
            (State.INITIALIZED, "ready"),
            (State.FAILED, "broke"),
        ]
        assert all(t.at.tzinfo is not None for t in history)

    def test_refused_transition_raises_and_changes_nothing(self):
        """FAILED is terminal: a plain transition out of it raises."""
        registry = Registry()
        registry.transition("p", State.FAILED, "broke")
        with pytest.raises(TransitionError):
            registry.transition("p", State.INITIALIZED, "no")
        assert registry.status("p").state is State.FAILED
        assert len(registry.status("p").history) == 1

    def test_restart_leaves_a_terminal_state(self):
        """restart=True begins the pipeline again from FAILED."""
        registry = Registry()
        registry.transition("p", State.FAILED, "broke")
        registry.transition("p", State.LOADED, "again", restart=True)
        assert registry.status("p").state is State.LOADED

    def test_unknown_name_raises_unknown_plugin(self):
        with pytest.raises(UnknownPlugin, match="'ghost'"):
            Registry().status("ghost")

    def test_readers_get_registry_timeout_while_a_writer_holds_it(self):
        """A lock timeout is a distinct error (the HTTP layer answers 503)."""
        registry = ready(Registry(lock_timeout_s=0.05))
        with registry.hold_write_lock():
            result = []
            thread = threading.Thread(target=lambda: result.append(_try_status(registry)))
            thread.start()
            thread.join()
        assert isinstance(result[0], RegistryTimeout)


def _try_status(registry):
    try:
        return registry.status("p")
    except RegistryTimeout as exc:
        return exc


class TestCalls:
    def test_running_while_a_call_is_in_flight(self):
        """The plugin reads RUNNING while a call is in flight, INITIALIZED after."""
        registry = ready(Registry())
        ticket = registry.begin_call("p")
        assert ticket == registry.status("p").generation
        assert registry.status("p").state is State.RUNNING
        assert registry.status("p").reason == "1 call(s) in flight"
        registry.end_call("p", CallResult(ok=True, plugin="p"), ticket)
        assert registry.status("p").state is State.INITIALIZED
        assert registry.status("p").reason == "ready"

    def test_calls_write_no_history(self):
        """A thousand calls leave the lifecycle's history as it was: busy and
        idle are read from the calls in flight, not recorded."""
        registry = ready(Registry())
        before = registry.status("p").history
        for _ in range(1000):
            ticket = registry.begin_call("p")
            registry.end_call("p", CallResult(ok=True, plugin="p"), ticket)
        assert registry.status("p").history == before
        assert [t.state for t in before] == [State.LOADED, State.INITIALIZED]

    def test_snapshot_reflects_each_change(self):
        """Cached snapshots never go stale: every write is seen by the next read."""
        registry = ready(Registry())
        before = registry.status("p")
        ticket = registry.begin_call("p")
        during = registry.status("p")
        registry.end_call("p", CallResult(ok=True, plugin="p"), ticket)
        after = registry.status("p")
        assert (before.in_flight, during.in_flight, after.in_flight) == (0, 1, 0)
        assert during.state is State.RUNNING
        assert after.metrics["success_count"] == 1
        assert after.to_dict()["success_count"] == 1

    def test_calls_in_flight_across_two_switches_count_until_they_end(self):
        """An upgrade, then its rollback: calls begun on either earlier
        version still read RUNNING until they end, then the count is zero."""
        registry = ready(Registry())
        info = registry.status("p").info
        first = registry.begin_call("p")
        registry.switch("p", "Switched to 2.0", info)
        second = registry.begin_call("p")
        registry.switch("p", "Rolled back to 1.0", info)
        assert registry.status("p").in_flight == 2
        for ticket in (first, second):
            registry.end_call("p", CallResult(ok=True, plugin="p"), ticket)
        assert registry.status("p").in_flight == 0
        assert registry.status("p").state is State.INITIALIZED
        assert registry.status("p").metrics["success_count"] == 2

    def test_begin_call_on_a_failed_plugin_returns_its_status(self):
        registry = Registry()
        registry.transition("p", State.FAILED, "broke")
        refusal = registry.begin_call("p")
        assert isinstance(refusal, PluginStatus) and refusal.reason == "broke"

    def test_failing_call_counts_an_error_and_leaves_the_state(self):
        """A call's failure is the call's: the plugin goes back to INITIALIZED."""
        registry = ready(Registry())
        ticket = registry.begin_call("p")
        registry.end_call("p", CallResult.failure("x", "ValueError", plugin="p"), ticket)
        status = registry.status("p")
        assert status.state is State.INITIALIZED
        assert status.metrics["error_count"] == 1

    def test_a_late_call_of_an_old_generation_leaves_the_new_one_alone(self):
        """A restart begins a new generation; the old call's end counts in the
        metrics but neither moves the state nor the new in-flight count."""
        registry = ready(Registry())
        old = registry.begin_call("p")
        registry.transition("p", State.LOADED, "reloaded", restart=True, generation=old + 1)
        registry.transition("p", State.INITIALIZED, "ready", generation=old + 1)
        new = registry.begin_call("p")
        registry.end_call("p", CallResult.failure("late", "WorkerDied", plugin="p"), old)
        status = registry.status("p")
        assert (status.state, status.in_flight, status.generation) == (State.RUNNING, 1, new)
        assert status.metrics["error_count"] == 1
        assert not registry.fail("p", "stale failure", old)
        registry.end_call("p", CallResult(ok=True, plugin="p"), new)
        assert registry.status("p").state is State.INITIALIZED

    def test_health_failures_in_a_row_flip_healthy_once(self):
        """The third failed check in a row flips healthy to False; a passing
        check flips it back; only flips are reported."""
        registry = ready(Registry())
        generation = registry.status("p").generation
        flips = [
            registry.set_health("p", {"ok": ok}, generation, 3)
            for ok in (False, False, True, False, False, False, False, True)
        ]
        assert flips == [None, None, None, None, None, False, None, True]
        assert registry.status("p").healthy

    def test_counts_are_exact_with_eight_threads(self):
        """8 threads x 500 calls: every success and error counted, none lost."""
        registry = ready(Registry())

        def hammer(index):
            for n in range(500):
                ticket = registry.begin_call("p")
                ok = (index + n) % 5 != 0
                result = CallResult(ok=ok, plugin="p", duration_ms=1.0)
                registry.end_call("p", result, ticket)

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(hammer, range(8)))
        metrics = registry.status("p").metrics
        assert metrics["success_count"] + metrics["error_count"] == 4000
        assert metrics["error_count"] == sum(
            1 for i in range(8) for n in range(500) if (i + n) % 5 == 0
        )
        assert metrics["avg_execution_time_ms"] == 1.0
        assert registry.status("p").state is State.INITIALIZED
        assert registry.status("p").in_flight == 0


class TestVersion:
    def test_calls_leave_the_version_and_every_other_write_moves_it(self):
        registry = Registry()
        registry.transition("p", State.LOADED)
        registry.transition("p", State.INITIALIZED)
        version = registry.version
        generation = registry.begin_call("p")
        assert isinstance(generation, int)
        registry.end_call("p", CallResult(ok=True, plugin="p"), generation)
        assert registry.version == version
        registry.note("p", "a line of history")
        assert registry.version == version + 1
        registry.fail("p", "gone")
        assert registry.version == version + 2

    def test_the_cached_snapshot_is_read_without_the_lock_and_dropped_by_a_write(self):
        registry = Registry(lock_timeout_s=0.1)
        registry.transition("p", State.LOADED)
        assert registry.cached_status("p") is None  # nothing read yet
        status = registry.status("p")
        with registry.hold_write_lock():  # a reader that needs the lock would fail now
            assert registry.cached_status("p") is status
        registry.fail("p", "gone")
        assert registry.cached_status("p") is None
        assert registry.cached_status("ghost") is None

    def test_a_stale_hold_drops_the_cached_snapshots_so_every_reader_waits(self):
        registry = Registry(lock_timeout_s=0.05)
        registry.transition("p", State.LOADED)
        registry.status("p")
        version = registry.version
        with registry.hold_write_lock(stale=True):
            assert registry.cached_status("p") is None
            assert registry.version == version + 1
            result = []
            thread = threading.Thread(target=lambda: result.append(_try_status(registry)))
            thread.start()
            thread.join()
        assert isinstance(result[0], RegistryTimeout)
