"""Root causes of import failures, named with their fix."""

from __future__ import annotations

import pytest

from plugwarden import State
from plugwarden.preflight.causes import import_failure_reason


class TestImportFailureReason:
    def test_missing_module_names_the_pip_package(self):
        try:
            import cv2  # noqa: F401
        except ModuleNotFoundError as exc:
            reason = import_failure_reason("vision_plugin", exc)
        else:  # pragma: no cover
            pytest.skip("cv2 is installed here")
        assert reason.startswith("Module 'cv2' not found. Install with: pip install opencv-python")

    def test_cuda_library_is_named_from_the_chain(self):
        try:
            try:
                raise OSError("libcudart.so.12: cannot open shared object file: No such file")
            except OSError as inner:
                raise ImportError("initialisation of the backend failed") from inner
        except ImportError as exc:
            reason = import_failure_reason("tracker", exc)
        assert reason.startswith(
            "CUDA library libcudart.so.12 failed to load while importing 'tracker'"
        )
        assert "Install the CUDA runtime" in reason

    def test_entry_point_module_itself_missing(self):
        try:
            import plugwarden_no_such_plugin_module  # noqa: F401
        except ModuleNotFoundError as exc:
            reason = import_failure_reason("plugwarden_no_such_plugin_module", exc)
        assert "is not in its distribution" in reason
        assert "Fix the entry point in the plugin's pyproject.toml" in reason
        assert "rebuild and reinstall the plugin's distribution" in reason
        assert "force-reinstall" not in reason  # reinstalling the same mistake cannot help


@pytest.mark.parametrize("isolation", ["process", "inline"])
class TestThroughTheHost:
    def test_syntax_error_names_file_and_line(self, plugwarden_plugin, plugwarden_host, isolation):
        package = plugwarden_plugin("typo", "x = 1\ndef broken(:\n    pass\n")
        host = plugwarden_host({"defaults": {"isolation": isolation}})
        status = host.status("typo")
        assert status.state is State.FAILED
        assert status.reason.startswith(f"Syntax error in {package / '__init__.py'} line 2:")

    def test_an_undeclared_import_tells_the_operator_and_the_author(
        self, plugwarden_plugin, plugwarden_host, isolation
    ):
        plugwarden_plugin("needs", "import sklearn.linear_model\n")
        host = plugwarden_host({"defaults": {"isolation": isolation}})
        reason = host.status("needs").reason
        assert reason.startswith(
            "Module 'sklearn' not found. Install with: pip install scikit-learn"
        )
        assert "imports it without declaring it" in reason
        assert "add 'scikit-learn' to the dependencies in its pyproject.toml" in reason

    def test_an_entry_point_attribute_typo_names_the_entry_point(
        self, plugwarden_plugin, plugwarden_host, isolation
    ):
        plugwarden_plugin("typo", "x = 1\n", entry_point="typo_plugin:plugn")
        host = plugwarden_host({"defaults": {"isolation": isolation}})
        reason = host.status("typo").reason
        assert reason.startswith("Entry point 'typo_plugin:plugn' names an attribute")
        assert "Fix the entry point in the plugin's pyproject.toml" in reason

    def test_a_manifest_error_points_to_the_source_not_site_packages(
        self, plugwarden_plugin, plugwarden_host, isolation
    ):
        plugwarden_plugin("p", "x = 1\n", manifest="requires_gpu = 'yes'\n")
        host = plugwarden_host({"defaults": {"isolation": isolation}})
        reason = host.status("p").reason
        assert "(the installed copy). Fix the manifest in the plugin's source" in reason
        assert reason.endswith(
            "rebuild and reinstall the plugin's distribution and restart the plugin."
        )

    def test_validate_false_says_where_to_look(self, plugwarden_plugin, plugwarden_host, isolation):
        source = "from plugwarden import hookimpl\n@hookimpl\ndef validate():\n    return False\n"
        source += "@hookimpl\ndef run(tool, args):\n    return 1\n"
        plugwarden_plugin("lazy", source)
        host = plugwarden_host({"defaults": {"isolation": isolation, "restart": "never"}})
        reason = host.status("lazy").reason
        assert "not ready. Its own log lines in the host's log say why" in reason


def test_a_crash_says_who_fixes_it(plugwarden_plugin, plugwarden_host):
    source = "from plugwarden import hookimpl\n@hookimpl\ndef validate():\n    return True\n"
    source += "@hookimpl\ndef run(tool, args):\n    import os\n    os._exit(3)\n"
    plugwarden_plugin("crashy", source)
    host = plugwarden_host({"defaults": {"restart": "never"}})
    error = host.call("crashy", "t", {}).error
    assert "the restart policy brings it back; if it recurs, the plugin's author" in error
