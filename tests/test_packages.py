"""Package pre-flight: Requires-Dist and manifest packages -> UNAVAILABLE."""

from __future__ import annotations

import pytest

from plugwarden import State
from tests.conftest import ECHO


class TestPackagePreflight:
    @pytest.mark.parametrize(
        ("requires", "reason"),
        [
            (
                ["surely-not-installed-pkg"],
                "Missing package 'surely-not-installed-pkg'. Install with: pip install "
                "surely-not-installed-pkg",
            ),
            (["pluggy>=999"], "Package 'pluggy' "),
            (["pluggy<0.1"], "needs pluggy<0.1"),
        ],
        ids=["missing", "too-old", "too-new"],
    )
    def test_missing_or_wrong_version_is_unavailable(
        self, plugwarden_plugin, plugwarden_host, requires, reason
    ):
        plugwarden_plugin("needy", ECHO, requires=requires)
        host = plugwarden_host()
        status = host.status("needy")
        assert status.state is State.UNAVAILABLE
        assert reason in status.reason
        assert "Install with: pip install" in status.reason

    def test_satisfied_and_marker_excluded_requirements_pass(
        self, plugwarden_plugin, plugwarden_host
    ):
        plugwarden_plugin(
            "fine",
            ECHO,
            requires=[
                "pluggy>=1.0",
                "not-installed-anywhere; python_version < '3.0'",
                "also-missing; extra == 'gpu'",
            ],
        )
        host = plugwarden_host()
        assert host.status("fine").state is State.INITIALIZED

    def test_manifest_packages_are_checked_without_import(self, plugwarden_plugin, plugwarden_host):
        """A missing import name gives the pip name to install (cv2 -> opencv-python)."""
        plugwarden_plugin("vision", ECHO, manifest={"packages": ["json", "cv2", "os.path"]})
        host = plugwarden_host()
        status = host.status("vision")
        assert status.state is State.UNAVAILABLE
        assert status.reason == "Missing package 'cv2'. Install with: pip install opencv-python"


def test_a_manifests_install_command_is_the_fix_for_its_missing_packages(
    plugwarden_plugin, plugwarden_host
):
    from tests.conftest import ECHO

    command = "pip install 'plugwarden-demo[ml]'"
    manifest = f'packages = ["no_such_pkg_a", "json", "no_such_pkg_b"]\ninstall = "{command}"\n'
    plugwarden_plugin("heavy", ECHO, manifest=manifest)
    reason = plugwarden_host().status("heavy").reason
    assert reason == f"Missing package(s) 'no_such_pkg_a', 'no_such_pkg_b'. Install with: {command}"
