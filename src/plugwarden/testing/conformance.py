"""``PluginConformance``: the contract's checks as tests of a plugin author's
own suite, against the *installed* distribution, through a real host with
real worker processes. Subclass it in a test file::

    from plugwarden.testing import PluginConformance

    class TestHelloConforms(PluginConformance):
        plugin = "hello"
        conformance_level = "1"

Each check is its own test, named by its stable id (``test_PW001`` ...;
docs/guides/writing-plugins.md says what each checks). A check newer than the pinned
``conformance_level`` that fails is reported as a skip reading "warning",
never a failure: raise the level when you are ready for it.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest

from plugwarden.plugin.discovery import discover
from plugwarden.testing.contract import CHECKS, Verdict, run_checks
from plugwarden.testing.stale import StaleInstallWarning, stale_files, stale_message

__all__ = ["PluginConformance"]


class PluginConformance:
    """Set ``plugin`` (the entry point's name). Optional: ``tool_examples``
    (tool -> args, over the manifest's examples), ``conformance_level``
    (pin it: "1"), ``skip_checks`` (id -> the reason), ``requires_gpu``
    (True: the run-time checks skip where there is no GPU), ``host_config``
    (a host config dict, e.g. the plugin's settings) and ``search_path``
    (where to look; default ``sys.path``)."""

    plugin: ClassVar[str] = ""
    tool_examples: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    conformance_level: ClassVar[str] = "1"
    skip_checks: ClassVar[Mapping[str, str]] = {}
    requires_gpu: ClassVar[bool] = False
    host_config: ClassVar[Mapping[str, Any]] = {}
    search_path: ClassVar[Sequence[str] | None] = None

    @pytest.fixture(scope="class")
    @classmethod
    def conformance(cls, request: pytest.FixtureRequest) -> dict[str, Verdict]:
        """One conformance run for the class: every check's verdict by id.
        A warning (:class:`StaleInstallWarning`) when the installed plugin
        is not the code of the project under test."""
        if not cls.plugin:
            pytest.fail(f"{cls.__name__}: set plugin = '<entry point name>'")
        level = cls.conformance_level
        if not str(level).isdigit() or int(level) < 1:
            pytest.fail(f"{cls.__name__}: conformance_level must be '1', '2'..., got {level!r}")
        for check_id, reason in cls.skip_checks.items():
            if not isinstance(reason, str) or not reason.strip():
                pytest.fail(f"{cls.__name__}: skipping {check_id} needs a reason")
        verdicts = run_checks(
            cls.plugin,
            search_path=cls.search_path,
            tool_examples=cls.tool_examples,
            config=cls.host_config,
            level=int(level),
            skip=cls.skip_checks,
            requires_gpu=cls.requires_gpu,
        )
        source = discover(cls.search_path).plugins.get(cls.plugin)
        if source is not None and source.package_dir is not None:
            differing = stale_files(source.package_dir, Path(request.config.rootpath))
            if differing:
                message = stale_message(cls.plugin, source.package_dir, differing)
                warnings.warn(message, StaleInstallWarning, stacklevel=1)
        return {verdict.check.id: verdict for verdict in verdicts}


def _present(verdict: Verdict, level: str) -> None:
    check = verdict.check
    if verdict.outcome == "fail":
        pytest.fail(
            f"{check.id} {check.title}: {verdict.detail}. Fix: {verdict.fix}", pytrace=False
        )
    if verdict.outcome == "warn":
        pytest.skip(
            f"warning: {check.id} (level {check.level}, above the pinned conformance_level "
            f"{level}) fails: {verdict.detail}. Fix: {verdict.fix}"
        )
    if verdict.outcome == "skip":
        pytest.skip(f"{check.id} skipped: {verdict.detail}")


def _make_test(check_id: str, title: str) -> Any:
    def test(self: PluginConformance, conformance: dict[str, Verdict]) -> None:
        _present(conformance[check_id], type(self).conformance_level)

    test.__name__ = f"test_{check_id}"
    test.__doc__ = f"{check_id}: {title}."
    return test


for _check in CHECKS:
    setattr(PluginConformance, f"test_{_check.id}", _make_test(_check.id, _check.title))
