"""One plugin's settings, resolved once (plugwarden.settings): defaults,
then the manifest, then the operator's table; the defaults a ceiling."""

from __future__ import annotations

import pytest

from plugwarden import HostConfig
from plugwarden.plugin.manifest import GuardSettings, Manifest
from plugwarden.settings import resolve
from tests.conftest import ECHO

DEFAULTS = {"memory_mb": 256, "max_result_bytes": 2**20, "timeout_s": 5}
GREEDY = GuardSettings(workers=64, memory_mb=600, max_result_bytes=50 * 2**20, timeout_s=10)


class TestTheOperatorsDefaultsAreACeiling:
    def test_a_manifest_asking_for_more_is_capped_with_a_note_naming_the_fix(self):
        config = HostConfig.from_dict({"defaults": DEFAULTS})
        settings = resolve("greedy", Manifest(guards=GREEDY), config)
        limits = settings.limits
        assert (limits.workers, limits.memory_mb, limits.max_result_bytes, limits.timeout_s) == (
            1,
            256,
            2**20,
            5,
        )
        notes = "\n".join(settings.notes)
        for key in ("workers", "memory_mb", "max_result_bytes", "timeout_s"):
            assert f"asks for {key} = " in notes
        assert "[plugins.greedy] memory_mb = 600" in notes

    def test_what_the_operator_grants_in_the_plugins_table_holds(self):
        config = HostConfig.from_dict(
            {"defaults": DEFAULTS, "plugins": {"greedy": {"memory_mb": 600, "workers": 4}}}
        )
        settings = resolve("greedy", Manifest(guards=GREEDY), config)
        assert (settings.limits.memory_mb, settings.limits.workers) == (600, 4)
        assert not any("memory_mb" in note or "workers" in note for note in settings.notes)

    @pytest.mark.parametrize("key", ["timeout_s", "memory_mb", "max_result_bytes"])
    def test_a_manifest_may_always_ask_for_less(self, key):
        config = HostConfig.from_dict({"defaults": DEFAULTS})
        lower = {"timeout_s": 1, "memory_mb": 64, "max_result_bytes": 1024}[key]
        settings = resolve("modest", Manifest(guards=GuardSettings(**{key: lower})), config)
        assert getattr(settings.limits, key) == lower and settings.notes == ()

    def test_a_greedy_manifest_gets_one_worker_and_its_history_says_why(
        self, plugwarden_plugin, plugwarden_host
    ):
        plugwarden_plugin("greedy", ECHO, manifest={"guards": {"workers": 64, "memory_mb": 600}})
        host = plugwarden_host({"defaults": DEFAULTS})
        assert len(host.worker_pids("greedy")) == 1
        status = host.status("greedy")
        assert status.state.value == "INITIALIZED"
        history = " ".join(transition.reason for transition in status.history)
        assert "asks for workers = 64" in history and "capped at 1" in history
        assert "asks for memory_mb = 600" in history and "capped at 256" in history
