"""Waiting on conditions and asserting states, for plugin tests: deadlines,
never sleeps as synchronisation."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from plugwarden.host.status import PluginStatus
from plugwarden.plugin.lifecycle import State

if TYPE_CHECKING:  # the assertions read a Host they are given
    from plugwarden.host.host import Host

__all__ = ["assert_state", "wait_for", "wait_for_state"]


def wait_for(condition: Callable[[], object], timeout_s: float = 10.0, what: str = "") -> None:
    """Poll ``condition`` until true; AssertionError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g}s waiting for {what or condition}")
        time.sleep(0.01)


def _state(state: State | str) -> State:
    return state if isinstance(state, State) else State(str(state).upper())


def assert_state(
    host: Host, name: str, state: State | str, reason_contains: str | None = None
) -> PluginStatus:
    """``name`` is in ``state`` now (and its reason contains the text)."""
    status = host.status(name)
    expected = _state(state)
    assert status.state is expected, (
        f"plugin {name!r} is {status.state.value}, not {expected.value}: {status.reason}"
    )
    if reason_contains is not None:
        assert reason_contains in status.reason, (
            f"plugin {name!r}'s reason does not mention {reason_contains!r}: {status.reason}"
        )
    return status


def wait_for_state(
    host: Host, name: str, state: State | str, timeout_s: float = 30.0
) -> PluginStatus:
    """Wait until ``name`` is in ``state``; its status then."""
    expected = _state(state)
    wait_for(
        lambda: host.status(name).state is expected,
        timeout_s,
        f"plugin {name!r} to be {expected.value} (it is {host.status(name).state.value})",
    )
    return host.status(name)
