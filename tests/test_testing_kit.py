"""The author kit as an author meets it: PluginConformance in their own test
file (an inner pytest run), `plugwarden check` on a real wheel built with
setuptools, `plugwarden new`, and a fresh virtual environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import plugwarden_command
from tests.test_testing_checks import GOOD, GOOD_MANIFEST

SETUPTOOLS_PYPROJECT = """
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "plugwarden-stplugin"
version = "0.1.0"

[project.entry-points."plugwarden.plugins"]
stplugin = "stplugin"
"""


def conformance_file(plugin: str, site: Path, **attributes: object) -> str:
    lines = "".join(f"    {key} = {value!r}\n" for key, value in attributes.items())
    return (
        "from plugwarden.testing import PluginConformance\n\n"
        "class TestItConforms(PluginConformance):\n"
        f"    plugin = {plugin!r}\n    search_path = [{str(site)!r}]\n{lines}"
    )


@pytest.fixture
def setuptools_wheel(tmp_path):
    """A real wheel of a plugin built with setuptools and no package-data:
    its manifest.toml is left out of the wheel."""
    project = tmp_path / "stproject"
    (project / "stplugin").mkdir(parents=True)
    (project / "pyproject.toml").write_text(SETUPTOOLS_PYPROJECT)
    (project / "stplugin" / "__init__.py").write_text(GOOD)
    (project / "stplugin" / "manifest.toml").write_text(GOOD_MANIFEST.replace("good", "stplugin"))
    wheels = tmp_path / "wheels"
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(wheels),
         str(project)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    (wheel,) = wheels.glob("*.whl")
    return project, wheel


class TestPluginConformance:
    def test_a_conforming_plugin_passes_each_check_as_its_own_test(
        self, pytester, plugwarden_plugin, plugwarden_site
    ):
        plugwarden_plugin("good", GOOD, manifest=GOOD_MANIFEST)
        pytester.makepyfile(
            test_good=conformance_file(
                "good", plugwarden_site, tool_examples={"greet": {"name": "Ada"}}
            )
        )
        result = pytester.runpytest_subprocess("-v")
        result.assert_outcomes(passed=12)
        for check in ("PW001", "PW011", "PW012"):  # in any order (pytest-randomly shuffles them)
            result.stdout.fnmatch_lines([f"*test_{check} PASSED*"])

    def test_a_newer_check_than_the_pinned_level_is_a_warning_not_a_failure(
        self, pytester, plugwarden_plugin, plugwarden_site
    ):
        plugwarden_plugin("good", GOOD, manifest='[tools]\ngreet = ""\n')
        pytester.makepyfile(test_good=conformance_file("good", plugwarden_site))
        pinned = pytester.runpytest_subprocess("-rs")
        pinned.assert_outcomes(passed=11, skipped=1)
        pinned.stdout.fnmatch_lines(["*warning: PW011 (level 2, above the pinned*"])
        pytester.makepyfile(
            test_good=conformance_file("good", plugwarden_site, conformance_level="2")
        )
        pytester.runpytest_subprocess().assert_outcomes(passed=11, failed=1)

    def test_an_installed_copy_that_differs_from_the_project_is_warned_about(
        self, pytester, plugwarden_plugin, plugwarden_site
    ):
        plugwarden_plugin("good", GOOD, manifest=GOOD_MANIFEST)
        pytester.makepyfile(test_good=conformance_file("good", plugwarden_site))
        fresh = pytester.runpytest_subprocess("-W", "error::UserWarning")
        fresh.assert_outcomes(passed=12)  # no project source here: nothing to compare
        project = pytester.path / "src" / "good_plugin"
        project.mkdir(parents=True)
        (project / "__init__.py").write_text(GOOD)
        (project / "manifest.toml").write_text(GOOD_MANIFEST)
        same = pytester.runpytest_subprocess("-W", "error::UserWarning")
        same.assert_outcomes(passed=12)
        (project / "__init__.py").write_text(GOOD.replace("Hello, ", "Hi, "))
        stale = pytester.runpytest_subprocess()
        stale.assert_outcomes(passed=12, warnings=1)
        stale.stdout.fnmatch_lines(
            ["*StaleInstallWarning*'good'*differs from this project's source (__init__.py)*"]
        )

    def test_the_setuptools_wheel_without_package_data_fails_pw002(
        self, pytester, setuptools_wheel, tmp_path
    ):
        _, wheel = setuptools_wheel
        site = tmp_path / "installed"
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target",
             str(site), str(wheel)],
            check=True, timeout=300,
        )  # fmt: skip
        pytester.makepyfile(test_st=conformance_file("stplugin", site, tool_examples={"greet": {}}))
        result = pytester.runpytest_subprocess("-v")
        result.assert_outcomes(passed=10, failed=1, skipped=1)
        result.stdout.fnmatch_lines(["*test_PW002 FAILED*"])
        result.stdout.fnmatch_lines(["*PW002 manifest packaged*no manifest.toml beside*"])


class TestCheckCommand:
    def test_check_on_the_setuptools_wheel_fails_pw002_and_exits_one(self, setuptools_wheel):
        project, wheel = setuptools_wheel
        done = plugwarden_command("check", str(wheel), "--json", cwd=wheel.parent)
        assert done.returncode == 1, done.stderr
        verdicts = {v["id"]: v for v in json.loads(done.stdout)["stplugin"]}
        assert verdicts["PW002"]["outcome"] == "fail"
        assert "setuptools: [tool.setuptools.package-data]" in verdicts["PW002"]["fix"]
        assert verdicts["PW006"]["outcome"] == "pass"
        from_project = plugwarden_command("check", str(project), "--json", cwd=project.parent)
        assert from_project.returncode == 1
        (verdict,) = [v for v in json.loads(from_project.stdout)["stplugin"] if v["id"] == "PW002"]
        assert "stplugin/manifest.toml is in the project but not in the" in verdict["detail"]

    def test_check_of_an_installed_plugin_by_name(self):
        done = plugwarden_command("check", "hello", "--level", "2", cwd=Path.cwd())
        assert done.returncode == 0, done.stdout + done.stderr
        assert "PW011" in done.stdout and "fail" not in done.stdout

    @pytest.mark.parametrize(
        ("target", "message"),
        [("no-such-plugin-pw", "no entry point"), ("README.md", "not a wheel")],
    )
    def test_bad_targets(self, target, message):
        done = plugwarden_command("check", target, cwd=Path(__file__).parent.parent)
        assert done.returncode in (1, 2) and message in done.stdout + done.stderr
        assert "Traceback" not in done.stderr


class TestNew:
    def test_a_new_plugin_passes_plugwarden_check(self, tmp_path):
        made = plugwarden_command("new", "demo", cwd=tmp_path)
        assert made.returncode == 0, made.stderr
        assert (tmp_path / "demo" / "src" / "plugwarden_demo" / "manifest.toml").is_file()
        done = plugwarden_command("check", "demo", "--level", "2", cwd=tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr
        again = plugwarden_command("new", "demo", cwd=tmp_path)
        assert again.returncode == 2 and "not empty" in again.stderr

    def test_a_bad_name_is_refused(self, tmp_path):
        done = plugwarden_command("new", "no/slashes", cwd=tmp_path)
        assert done.returncode == 2 and "cannot be a plugin name" in done.stderr

    def test_a_new_plugin_installs_and_passes_its_own_tests_in_a_fresh_venv(self, tmp_path):
        """plugwarden new demo && cd demo && pip install . && pytest, in a venv
        that has nothing but this checkout of plugwarden."""
        assert plugwarden_command("new", "demo", cwd=tmp_path).returncode == 0
        venv = tmp_path / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
        root = Path(__file__).parent.parent
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        for target in (f"{root}[testing]", str(tmp_path / "demo")):
            installed = subprocess.run(
                [*pip, target], capture_output=True, text=True, timeout=600, check=False, env=env
            )
            assert installed.returncode == 0, installed.stderr[-2000:]
        tested = subprocess.run(
            [str(venv / "bin" / "python"), "-m", "pytest", "-q"],
            cwd=tmp_path / "demo", capture_output=True, text=True, timeout=300, check=False,
            env=env,
        )  # fmt: skip
        assert tested.returncode == 0, tested.stdout[-3000:]
        assert "12 passed" in tested.stdout


def test_fixtures_document_themselves(pytester):
    result = pytester.runpytest_subprocess("--fixtures")
    text = result.stdout.str()
    for fixture in ("plugwarden_plugin", "plugwarden_host", "plugwarden_server",
                    "plugwarden_faults", "plugwarden_fake_gpu", "plugwarden_site"):  # fmt: skip
        block = text[text.index(f"\n{fixture} -- ") :].splitlines()[2]
        assert "no docstring" not in block and block.strip(), fixture


def test_fixtures_leave_sys_path_and_sys_modules_as_they_found_them(pytester):
    pytester.makepyfile(
        test_trace="""
        import sys
        from plugwarden.testing import ECHO_PLUGIN

        PATH, MODULES = list(sys.path), set(sys.modules)

        def test_use_everything(plugwarden_plugin, plugwarden_host, plugwarden_faults):
            plugwarden_plugin("leaky", ECHO_PLUGIN)
            assert plugwarden_host().call("leaky", "t", {}).ok

        def test_nothing_left(plugwarden_host):
            assert sys.path == PATH
            assert "leaky_plugin" not in sys.modules
            assert not any(name.startswith("leaky") for name in set(sys.modules) - MODULES)
        """
    )
    pytester.runpytest_subprocess().assert_outcomes(passed=2)
