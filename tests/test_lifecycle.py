"""The lifecycle state machine."""

from __future__ import annotations

import pytest

from plugwarden import State
from plugwarden.plugin.lifecycle import is_allowed

LEGAL = [
    (None, State.LOADED),
    (None, State.FAILED),
    (None, State.UNAVAILABLE),
    (State.LOADED, State.INITIALIZED),
    (State.LOADED, State.FAILED),
    (State.INITIALIZED, State.RUNNING),
    (State.INITIALIZED, State.FAILED),
    (State.RUNNING, State.INITIALIZED),
    (State.RUNNING, State.FAILED),
]
REFUSED = [
    (None, State.INITIALIZED),
    (None, State.RUNNING),
    (State.LOADED, State.RUNNING),
    (State.INITIALIZED, State.LOADED),
    (State.FAILED, State.INITIALIZED),
    (State.FAILED, State.LOADED),
    (State.UNAVAILABLE, State.INITIALIZED),
    (State.UNAVAILABLE, State.FAILED),
    (State.FAILED, State.UNAVAILABLE),
]


class TestTransitions:
    @pytest.mark.parametrize(("current", "target"), LEGAL)
    def test_legal_transition_is_allowed(self, current, target):
        """Each transition of the contract is allowed."""
        assert is_allowed(current, target)

    @pytest.mark.parametrize(("current", "target"), REFUSED)
    def test_illegal_transition_is_refused(self, current, target):
        """Terminal states stay terminal; steps cannot be skipped."""
        assert not is_allowed(current, target)

    @pytest.mark.parametrize("current", list(State))
    def test_restart_leaves_any_state_for_the_pipeline_start(self, current):
        """A manual restart may leave every state, terminal ones included."""
        assert is_allowed(current, State.LOADED, restart=True)
        assert is_allowed(current, State.UNAVAILABLE, restart=True)
        assert not is_allowed(current, State.RUNNING, restart=True)
