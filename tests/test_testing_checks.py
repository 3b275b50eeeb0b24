"""The conformance checks (plugwarden.testing.contract): a conforming plugin
passes every one; each kind of non-conformance fails its own check by id."""

from __future__ import annotations

import pytest

from plugwarden.testing import ECHO_PLUGIN, plugin_source
from plugwarden.testing.contract import CHECKS, LATEST_LEVEL, run_checks

GOOD = """
from plugwarden import hookimpl

@hookimpl
def validate():
    return True

@hookimpl
def run(tool, args):
    if tool == "greet":
        return {"message": "Hello, " + args.get("name", "world")}
    raise ValueError(f"Unknown tool {tool!r}")

@hookimpl
def health():
    return {"ok": True}
"""
GOOD_MANIFEST = (
    'name = "good"\nversion = "1.0.0"\ndescription = "A conforming plugin."\n'
    '[tools]\ngreet = "Say hello."\n'
)
EXAMPLES = {"greet": {"name": "Ada"}}


def outcomes(verdicts):
    return {verdict.check.id: verdict.outcome for verdict in verdicts}


def check(site, name="good", **options):
    options.setdefault("tool_examples", EXAMPLES)
    return {v.check.id: v for v in run_checks(name, search_path=[str(site)], **options)}


class TestConformingPlugin:
    def test_every_check_passes_at_the_latest_level(self, plugwarden_plugin, plugwarden_site):
        plugwarden_plugin("good", GOOD, manifest=GOOD_MANIFEST)
        verdicts = check(plugwarden_site, level=LATEST_LEVEL)
        assert {v.check.id: v.outcome for v in verdicts.values()} == {c.id: "pass" for c in CHECKS}

    def test_the_host_process_never_imports_the_plugin(self, plugwarden_plugin, plugwarden_site):
        import sys

        plugwarden_plugin("good", GOOD, manifest=GOOD_MANIFEST, module="pw_never_imported")
        assert check(plugwarden_site)["PW001"].outcome == "pass"
        assert "pw_never_imported" not in sys.modules


class TestEachCheckFailsByItsId:
    @pytest.mark.parametrize(
        ("source", "manifest", "options", "failing"),
        [
            (GOOD, None, {}, "PW002"),
            (GOOD, "descripton = 'typo'\n" + GOOD_MANIFEST, {}, "PW003"),
            (GOOD, "tools = ['a', 'b']\n", {}, "PW003"),
            (GOOD, GOOD_MANIFEST, {"requires": ["no-such-dist-pw>=1"]}, "PW004"),
            ("from plugwarden import hookimpl\n@hookimpl\ndef validate():\n    return True\n",
             GOOD_MANIFEST, {}, "PW005"),
            (plugin_source("return 1").replace("return True", "return 'weights missing'"),
             GOOD_MANIFEST, {}, "PW006"),
            (GOOD.replace('"Hello, "', "1 / 0 or "), GOOD_MANIFEST, {}, "PW007"),
            (ECHO_PLUGIN, None, {}, "PW008"),
            (GOOD.replace('return {"ok": True}', "return [1, 2]"), GOOD_MANIFEST, {}, "PW009"),
        ],
        ids=["no-manifest", "unknown-key", "tools-list-of-strings", "requires-dist",
             "missing-run", "validate-says-no", "tool-raises", "unknown-tool-ok", "health-list"],
    )  # fmt: skip
    def test_a_non_conformance_fails_its_check(
        self, plugwarden_plugin, plugwarden_site, source, manifest, options, failing
    ):
        plugwarden_plugin("good", source, manifest=manifest, **options)
        verdicts = check(plugwarden_site)
        assert verdicts[failing].outcome == "fail", verdicts[failing]
        assert verdicts[failing].detail
        failed = {i for i, v in verdicts.items() if v.outcome == "fail"}
        assert failed - {failing} <= {"PW002"}  # no manifest: ECHO has none

    def test_the_tools_list_of_strings_error_names_both_accepted_forms(
        self, plugwarden_plugin, plugwarden_site
    ):
        plugwarden_plugin("good", GOOD, manifest="tools = ['a', 'b']\n")
        detail = check(plugwarden_site)["PW003"].detail
        assert "[tools]" in detail and "[[tools]]" in detail

    def test_a_plugin_that_is_not_installed_fails_pw001_and_skips_the_rest(self, plugwarden_site):
        verdicts = check(plugwarden_site, name="absent")
        assert verdicts["PW001"].outcome == "fail"
        assert {v.outcome for i, v in verdicts.items() if i != "PW001"} == {"skip"}

    def test_a_failing_init_skips_the_checks_that_need_a_running_plugin(
        self, plugwarden_plugin, plugwarden_site
    ):
        source = plugin_source("return 1", init_body="raise RuntimeError('no model')")
        plugwarden_plugin("good", source, manifest=GOOD_MANIFEST)
        verdicts = check(plugwarden_site)
        assert verdicts["PW006"].outcome == "fail" and "no model" in verdicts["PW006"].detail
        assert {verdicts[i].outcome for i in ("PW007", "PW008", "PW009")} == {"skip"}
        assert verdicts["PW010"].outcome == "pass"


class TestRootCauses:
    def test_an_entry_point_naming_no_module_fails_first_and_the_rest_follow(
        self, plugwarden_plugin, plugwarden_site
    ):
        plugwarden_plugin("good", GOOD, manifest=GOOD_MANIFEST, entry_point="good_pluginx")
        verdicts = check(plugwarden_site)
        assert verdicts["PW001"].outcome == "fail"
        assert "'good_pluginx'" in verdicts["PW001"].detail
        assert verdicts["PW001"].fix == verdicts["PW001"].check.fix
        followers = [v for i, v in verdicts.items() if v.outcome == "fail" and i != "PW001"]
        assert followers, "the manifest and hooks checks fail too"
        for verdict in followers:
            assert verdict.detail.startswith("follows from PW001: "), verdict
            assert verdict.fix == "Fix PW001 first."
            assert "package data" not in verdict.detail


class TestExamples:
    MANIFEST = (
        'description = "A conforming plugin."\nversion = "1.0.0"\n'
        '[tools.greet]\ndescription = "Say hello."\nexample = {name = "Ada"}\n'
    )

    def test_the_manifests_example_is_run(self, plugwarden_plugin, plugwarden_site):
        strict = GOOD.replace('args.get("name", "world")', 'args["name"]')
        plugwarden_plugin("good", strict, manifest=self.MANIFEST)
        verdicts = check(plugwarden_site, tool_examples={}, level=LATEST_LEVEL)
        assert verdicts["PW007"].outcome == "pass", verdicts["PW007"]
        assert verdicts["PW011"].outcome == "pass"
        raising = GOOD.replace('"Hello, "', "1 / 0 or ")
        plugwarden_plugin("good", raising, manifest=self.MANIFEST)
        verdict = check(plugwarden_site, tool_examples={})["PW007"]
        assert verdict.outcome == "fail" and "{'name': 'Ada'}" in verdict.detail

    def test_a_tool_without_an_example_is_said_untried_not_failed(
        self, plugwarden_plugin, plugwarden_site
    ):
        strict = GOOD.replace('args.get("name", "world")', 'args["name"]')
        plugwarden_plugin("good", strict, manifest=GOOD_MANIFEST)
        verdict = check(plugwarden_site, tool_examples={})["PW007"]
        assert verdict.outcome == "pass"
        assert "not checked: greet (no example" in verdict.detail

    def test_a_result_json_cannot_carry_says_so(self, plugwarden_plugin, plugwarden_site):
        plugwarden_plugin("good", GOOD.replace('{"message": "Hello, "', "{1, 2} or {"),
                          manifest=self.MANIFEST)  # fmt: skip
        verdict = check(plugwarden_site, tool_examples={})["PW007"]
        assert verdict.outcome == "fail" and "JSON cannot carry" in verdict.detail
        assert "example" not in verdict.detail


class TestLevelsAndSkips:
    def test_a_check_above_the_pinned_level_warns_instead_of_failing(
        self, plugwarden_plugin, plugwarden_site
    ):
        plugwarden_plugin("good", GOOD, manifest='[tools]\ngreet = ""\n')
        assert check(plugwarden_site, level=1)["PW011"].outcome == "warn"
        assert check(plugwarden_site, level=2)["PW011"].outcome == "fail"

    def test_a_skipped_check_carries_its_reason(self, plugwarden_plugin, plugwarden_site):
        plugwarden_plugin("good", GOOD)
        verdict = check(plugwarden_site, skip={"PW002": "no manifest on purpose"})["PW002"]
        assert (verdict.outcome, verdict.detail) == ("skip", "no manifest on purpose")

    def test_a_gpu_plugin_on_a_machine_without_one_skips_the_run_time_checks(
        self, plugwarden_plugin, plugwarden_site, plugwarden_fake_gpu
    ):
        plugwarden_fake_gpu("none")
        plugwarden_plugin("good", GOOD, manifest="requires_gpu = true\n" + GOOD_MANIFEST)
        verdicts = check(plugwarden_site, requires_gpu=True)
        assert verdicts["PW006"].outcome == "skip" and "No GPU" in verdicts["PW006"].detail
        assert verdicts["PW002"].outcome == "pass"


NETWORKER = """
import os, socket
from plugwarden import hookimpl

@hookimpl
def validate():
    return True

@hookimpl
def run(tool, args):
    if tool != "greet":
        raise ValueError(f"Unknown tool {tool!r}")
    try:
        socket.create_connection(("127.0.0.1", 9), timeout=1).close()
    except OSError:
        pass  # refused by the sandbox, or by nobody listening: either way it tried
    return {"message": "hello"}
"""


class TestUndeclaredBehaviour:
    """PW012: a plugin that tries, at check time, what its manifest does not
    declare (the sandbox refuses it either way) is named, with the fix."""

    def test_a_connect_without_network_is_reported(self, plugwarden_plugin, plugwarden_site):
        plugwarden_plugin("good", NETWORKER, manifest=GOOD_MANIFEST)
        verdicts = check(plugwarden_site, level=LATEST_LEVEL)
        assert verdicts["PW012"].outcome == "fail"
        assert "a socket of family AF_INET" in verdicts["PW012"].detail
        assert "declare [permissions] network" in verdicts["PW012"].detail
        assert check(plugwarden_site, level=1)["PW012"].outcome == "warn"

    def test_the_same_connect_declared_passes(self, plugwarden_plugin, plugwarden_site):
        declared = GOOD_MANIFEST.replace("[tools]", "[permissions]\nnetwork = [9]\n[tools]")
        plugwarden_plugin("good", NETWORKER, manifest=declared)
        assert check(plugwarden_site, level=LATEST_LEVEL)["PW012"].outcome == "pass"
