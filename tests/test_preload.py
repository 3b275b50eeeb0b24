"""Warm starts (a manifest's ``preload``, allowed by the operator): the
plugin's zygote imports those modules once, before it forks any worker, so a
worker replaced after a crash skips them."""

from __future__ import annotations

import os
import signal

import pytest

from plugwarden import State
from tests.conftest import plugin_source, wait_for

RUN = "import preload_probe, os\nreturn os.getpid()"


@pytest.fixture
def probe(plugwarden_site, tmp_path):
    """A module that writes its importer's pid to a file each time it is imported."""
    log = tmp_path / "imports.log"
    (plugwarden_site / "preload_probe.py").write_text(
        f"import os\nwith open({str(log)!r}, 'a') as out:\n    out.write(f'{{os.getpid()}}\\n')\n"
    )
    return log


def crash_and_replace(host, name: str) -> None:
    (pid,) = host.worker_pids(name)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: host.worker_pids(name) not in ([], [pid]), 60)


class TestPreload:
    def test_the_zygote_imports_them_once_for_every_worker(
        self, plugwarden_plugin, plugwarden_host, probe
    ):
        plugwarden_plugin("warm", plugin_source(RUN), manifest={"preload": ["preload_probe"]})
        host = plugwarden_host({"plugins": {"warm": {"preload": True}}})
        assert host.call("warm", "x", {}).ok
        crash_and_replace(host, "warm")
        assert host.call("warm", "x", {}).ok
        importers = probe.read_text().split()
        assert len(importers) == 1  # the zygote, before the first fork
        assert int(importers[0]) not in host.worker_pids("warm")

    def test_without_the_operators_word_each_worker_imports_them(
        self, plugwarden_plugin, plugwarden_host, probe
    ):
        plugwarden_plugin("warm", plugin_source(RUN), manifest={"preload": ["preload_probe"]})
        host = plugwarden_host()
        assert host.call("warm", "x", {}).ok
        crash_and_replace(host, "warm")
        assert host.call("warm", "x", {}).ok
        assert len(probe.read_text().split()) == 2
        notes = [t.reason for t in host.status("warm").history]
        assert any("[plugins.warm] preload = true" in note for note in notes), notes

    def test_a_module_that_fails_to_preload_fails_the_plugin_with_the_cause(
        self, plugwarden_plugin, plugwarden_host
    ):
        plugwarden_plugin("cold", plugin_source("return 1"), manifest={"preload": ["no_such_mod"]})
        plugwarden_plugin("other", plugin_source("return 2"))
        host = plugwarden_host({"plugins": {"cold": {"preload": True}}})
        status = host.status("cold")
        assert status.state is State.FAILED
        assert "preload of 'no_such_mod' failed: ModuleNotFoundError" in status.reason
        assert host.call("other", "x", {}).result == 2  # its own zygote: the others unharmed

    def test_a_module_that_initialises_cuda_is_refused_naming_it(
        self, plugwarden_plugin, plugwarden_host, plugwarden_site
    ):
        """No GPU here: the module stands in for a library that calls
        torch.cuda.init() at import (the kit's fake GPU does the same for NVML)."""
        (plugwarden_site / "eager_cuda.py").write_text(
            "import sys, types\n"
            "cuda = types.SimpleNamespace(is_initialized=lambda: True)\n"
            "sys.modules['torch'] = types.SimpleNamespace(cuda=cuda)\n"
        )
        plugwarden_plugin("eager", plugin_source("return 1"), manifest={"preload": ["eager_cuda"]})
        host = plugwarden_host({"plugins": {"eager": {"preload": True}}})
        status = host.status("eager")
        assert status.state is State.FAILED
        assert "preloading 'eager_cuda' initialised CUDA (torch.cuda is initialised)" in (
            status.reason
        )
