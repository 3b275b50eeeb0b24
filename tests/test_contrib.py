"""The contrib plugins as the README's first command installs them (light:
no extras): hello serves; videotracker is UNAVAILABLE naming the one command
that installs its stack, and the host never imports that stack."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest


def state_in_a_fresh_host(name: str) -> tuple[str, str, list[str]]:
    script = (
        "import json, sys\nfrom plugwarden import Host\n"
        f"with Host({{'jobs': {{'path': ':memory:'}}}}, only={{{name!r}}}) as host:\n"
        f"    status = host.status({name!r})\n"
        "    heavy = [m for m in ('torch', 'torchvision', 'cv2', 'numpy') if m in sys.modules]\n"
        "    print(json.dumps([status.state.value, status.reason, heavy]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    state, reason, heavy = json.loads(done.stdout.strip().splitlines()[-1])
    return state, reason, heavy


def test_hello_serves():
    state, reason, _ = state_in_a_fresh_host("hello")
    assert (state, reason) == ("INITIALIZED", "ready")


def test_videotracker_without_its_stack_names_the_command_that_installs_it():
    if importlib.util.find_spec("torch") is not None:
        pytest.skip("this environment has torch: see tox -e videotracker")
    state, reason, heavy = state_in_a_fresh_host("videotracker")
    assert state == "UNAVAILABLE"
    assert "Install with: pip install 'plugwarden-videotracker[ml]' && pip install --no-deps " in (
        reason
    )
    assert heavy == []
