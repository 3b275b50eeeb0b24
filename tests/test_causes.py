"""Root causes of import failures, named with their fix."""

from __future__ import annotations

import pytest

from plugwarden import State
from plugwarden.core.causes import import_failure_reason


class TestImportFailureReason:
    def test_missing_module_names_the_pip_package(self):
        try:
            import cv2  # noqa: F401
        except ModuleNotFoundError as exc:
            reason = import_failure_reason("vision_plugin", exc)
        else:  # pragma: no cover
            pytest.skip("cv2 is installed here")
        assert reason == "Module 'cv2' not found. Install with: pip install opencv-python"

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
        assert "Reinstall the plugin's distribution" in reason


@pytest.mark.parametrize("isolation", ["process", "inline"])
class TestThroughTheHost:
    def test_syntax_error_names_file_and_line(self, plugwarden_plugin, plugwarden_host, isolation):
        package = plugwarden_plugin("typo", "x = 1\ndef broken(:\n    pass\n")
        host = plugwarden_host({"defaults": {"isolation": isolation}})
        status = host.status("typo")
        assert status.state is State.FAILED
        assert status.reason.startswith(f"Syntax error in {package / '__init__.py'} line 2:")

    def test_missing_dependency_module(self, plugwarden_plugin, plugwarden_host, isolation):
        plugwarden_plugin("needs", "import sklearn.linear_model\n")
        host = plugwarden_host({"defaults": {"isolation": isolation}})
        assert host.status("needs").reason == (
            "Module 'sklearn' not found. Install with: pip install scikit-learn"
        )

    def test_cuda_library_failure_at_import(self, plugwarden_plugin, plugwarden_host, isolation):
        plugwarden_plugin("gpu", "raise OSError('libcublas.so.11: cannot open shared object')\n")
        host = plugwarden_host({"defaults": {"isolation": isolation}})
        assert "CUDA library libcublas.so.11 failed to load" in host.status("gpu").reason
