"""Manifests: read without importing the plugin, every error names file and key."""

from __future__ import annotations

import json

import pytest

from plugwarden import ManifestError
from plugwarden.plugin.manifest import read_manifest

TOML = """
name = "vision"
version = "2.1"
description = "Finds things"
requires_gpu = true
packages = ["cv2", "numpy"]

[models]
detector = "models/yolo.pt"
tracker = { path = "models/track.onnx", sha256 = "%s", min_bytes = 1024 }

[tools]
detect = "Find objects"

[guards]
timeout_s = 30
memory_mb = 2048
isolation = "process"
""" % ("ab" * 32)


class TestReadManifest:
    def test_toml_manifest_every_key(self, tmp_path):
        (tmp_path / "manifest.toml").write_text(TOML)
        manifest = read_manifest(tmp_path)
        assert manifest.name == "vision" and manifest.version == "2.1"
        assert manifest.requires_gpu is True
        assert manifest.packages == ("cv2", "numpy")
        assert manifest.models["detector"].path == "models/yolo.pt"
        assert manifest.models["tracker"].sha256 == "ab" * 32
        assert manifest.models["tracker"].min_bytes == 1024
        assert manifest.tools == {"detect": "Find objects"}
        assert manifest.guards.timeout_s == 30.0 and manifest.guards.memory_mb == 2048.0

    def test_json_manifest_in_forgesyte_form(self, tmp_path):
        """manifest.json with a list of tool objects, as ForgeSyte plugins ship."""
        data = {
            "name": "ocr",
            "version": "1.0.0",
            "entrypoint": "ocr.plugin",
            "tools": [{"id": "read", "description": "Read text", "inputs": {}}],
        }
        (tmp_path / "manifest.json").write_text(json.dumps(data))
        manifest = read_manifest(tmp_path)
        assert manifest.tools == {"read": "Read text"}
        assert manifest.name == "ocr"

    def test_a_tool_may_carry_an_example_in_either_form(self, tmp_path):
        (tmp_path / "manifest.toml").write_text(
            '[tools.greet]\ndescription = "Say hello"\nexample = {name = "Ada"}\n'
            '[tools.echo]\ndescription = "Echo"\n'
        )
        manifest = read_manifest(tmp_path)
        assert manifest.tools == {"greet": "Say hello", "echo": "Echo"}
        assert manifest.examples == {"greet": {"name": "Ada"}}
        (tmp_path / "manifest.toml").unlink()
        data = {"tools": [{"id": "read", "description": "Read", "example": {"path": "a.png"}}]}
        (tmp_path / "manifest.json").write_text(json.dumps(data))
        assert read_manifest(tmp_path).examples == {"read": {"path": "a.png"}}

    def test_an_example_that_is_not_a_table_names_its_key(self, tmp_path):
        (tmp_path / "manifest.toml").write_text('[tools.greet]\nexample = "Ada"\n')
        with pytest.raises(ManifestError) as refused:
            read_manifest(tmp_path)
        assert refused.value.key == "tools.greet.example"

    def test_no_manifest_is_an_empty_one(self, tmp_path):
        manifest = read_manifest(tmp_path)
        assert manifest.path is None and manifest.tools == {}

    @pytest.mark.parametrize(
        ("text", "key", "expected"),
        [
            ('requires_gpu = "yes"', "requires_gpu", "a boolean"),
            ("packages = 'cv2'", "packages", "a list of import names"),
            ("[guards]\ntimeout_s = -1", "guards.timeout_s", "a positive number"),
            ("[guards]\ntimeout = 5", "guards.timeout", "unknown guard key"),
            (
                "[guards]\nisolation = 'thread'",
                "guards.isolation",
                "'process', 'inline', 'ray' or 'ray-inline'",
            ),
            ("[models]\nm = 3", "models.m", "a path string"),
            ("[models.m]\nsha256 = 'zz'", "models.m.path", "is required"),
            ("description = 5", "description", "a string"),
        ],
    )
    def test_wrong_type_names_file_key_and_expected_type(self, tmp_path, text, key, expected):
        (tmp_path / "manifest.toml").write_text(text)
        with pytest.raises(ManifestError) as info:
            read_manifest(tmp_path)
        assert info.value.key == key
        assert expected in str(info.value)
        assert str(tmp_path / "manifest.toml") in str(info.value)

    @pytest.mark.parametrize(
        ("filename", "text", "message"),
        [
            ("manifest.toml", "name = ", "not valid TOML"),
            ("manifest.json", '{"name": ', "not valid JSON"),
            ("manifest.json", "[1, 2]", "expected a table"),
            ("manifest.toml", "x = " + "[" * 5000 + "]" * 5000, "nests too deeply"),
            ("manifest.json", '{"x": ' + "[" * 5000 + "]" * 5000 + "}", "nests too deeply"),
        ],
    )
    def test_malformed_file_is_a_manifest_error(self, tmp_path, filename, text, message):
        (tmp_path / filename).write_text(text)
        with pytest.raises(ManifestError, match=message):
            read_manifest(tmp_path)


class TestUnknownKeys:
    def test_a_top_level_typo_is_kept_as_unknown_and_warned_in_the_history(
        self, plugwarden_plugin, plugwarden_host, caplog
    ):
        from tests.conftest import ECHO

        plugwarden_plugin("typo", ECHO, manifest='descripton = "oops"\nversion = "1.0"\n')
        host = plugwarden_host()
        status = host.status("typo")
        assert status.available
        notes = [t.reason for t in status.history]
        assert any("unknown key(s) 'descripton'" in note and "a typo?" in note for note in notes)
        assert "unknown key(s) 'descripton'" in caplog.text

    def test_a_config_table_for_a_plugin_that_is_not_installed_is_warned_about(
        self, plugwarden_plugin, plugwarden_host, caplog
    ):
        from tests.conftest import ECHO

        plugwarden_plugin("real", ECHO)
        plugwarden_host({"plugins": {"reall": {"timeout_s": 5}}})
        assert "[plugins.reall] but no plugin 'reall' is installed" in caplog.text
        assert "Installed: real" in caplog.text
