"""Model files: every format valid, truncated, wrong magic, empty, missing;
sha256 and min_bytes; path resolution; the host's pre-flight."""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
import zipfile
from pathlib import Path

import pytest

from plugwarden import State
from plugwarden.plugin.manifest import ModelSpec
from plugwarden.preflight.models import file_problem, resolve
from tests.conftest import plugin_source

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class FloatStorage:
    """Pickled as a GLOBAL of this module, renamed to torch.FloatStorage below."""


class _LegacyPickler(pickle.Pickler):
    def persistent_id(self, obj):
        if obj == "tensor-data":
            return ("storage", FloatStorage, "0", "cpu", 4)
        return None


def torch_zip() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({"weight": 1}, protocol=2))
        archive.writestr("archive/version", "3\n")
        archive.writestr("archive/data/0", b"\x00" * 64)
    return out.getvalue()


def legacy_torch() -> bytes:
    body = io.BytesIO()
    _LegacyPickler(body, protocol=2).dump({"weight": "tensor-data"})
    renamed = body.getvalue().replace(
        f"c{__name__}\nFloatStorage\n".encode(), b"ctorch\nFloatStorage\n"
    )
    return b"".join(
        [
            pickle.dumps(LEGACY_MAGIC, protocol=2),
            pickle.dumps(1001, protocol=2),
            pickle.dumps({"protocol_version": 1001, "little_endian": True}, protocol=2),
            renamed,
            pickle.dumps(["0"], protocol=2),
            struct.pack("<q", 4),
            b"\x01" * 16,  # four float32 elements
        ]
    )


def plain_pickle() -> bytes:
    return pickle.dumps({"coef": list(range(50))}, protocol=4)


def safetensors() -> bytes:
    header = json.dumps(
        {
            "__metadata__": {"format": "pt"},
            "w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
            "b": {"dtype": "F32", "shape": [2], "data_offsets": [16, 24]},
        }
    ).encode()
    return struct.pack("<Q", len(header)) + header + b"\x02" * 24


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def onnx() -> bytes:
    graph = b"\x0a\x03add" + b"\x2a" + _varint(40) + b"\x05" * 40  # name, an initializer blob
    return (
        b"\x08\x07" + b"\x12\x04test" + b"\x3a" + _varint(len(graph)) + graph + b"\x42\x02\x10\x11"
    )  # ir_version, producer, graph, opset_import


def _gguf_string(text: str) -> bytes:
    return struct.pack("<Q", len(text)) + text.encode()


def gguf() -> bytes:
    header = b"GGUF" + struct.pack("<IQQ", 3, 1, 2)
    header += _gguf_string("general.architecture") + struct.pack("<I", 8) + _gguf_string("llama")
    header += _gguf_string("general.alignment") + struct.pack("<II", 4, 32)
    header += _gguf_string("tok_embd") + struct.pack("<IQ", 1, 64) + struct.pack("<IQ", 1, 0)
    padding = -len(header) % 32
    return header + b"\x00" * padding + b"\x03" * 128  # 64 float16 values


FORMATS = {
    "model.pt": torch_zip,
    "legacy.pt": legacy_torch,
    "model.pkl": plain_pickle,
    "model.safetensors": safetensors,
    "model.onnx": onnx,
    "model.gguf": gguf,
}
WRONG_MAGIC = {
    "model.pt": b"NOTAZIPNORPICKLE" * 4,
    "legacy.pt": b"\x80\x02\x8a\x0a" + b"\x00" * 10 + b"." + b"\x00" * 30,
    "model.pkl": b"<html>not a pickle</html>",
    "model.safetensors": b"\xff" * 8 + b"{}",
    "model.onnx": b"\xff\xff\xff",
    "model.gguf": b"GGML" + b"\x00" * 60,
}
SPEC = ModelSpec("unused")


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("name", sorted(FORMATS))
class TestFormats:
    def test_valid_file_passes(self, tmp_path, name):
        assert file_problem(write(tmp_path, name, FORMATS[name]()), SPEC) is None

    @pytest.mark.parametrize("cut", ["last byte", "half", "first 12 bytes", "all but 5"])
    def test_truncated_file_is_caught(self, tmp_path, name, cut):
        data = FORMATS[name]()
        keep = {
            "last byte": len(data) - 1,
            "half": len(data) // 2,
            "first 12 bytes": 12,
            "all but 5": len(data) - 5,
        }[cut]
        path = write(tmp_path, name, data[:keep])
        reason = file_problem(path, SPEC)
        assert reason is not None
        assert reason.startswith(f"Model file truncated or corrupted: {path}. Re-download.")

    def test_wrong_magic_is_caught(self, tmp_path, name):
        path = write(tmp_path, name, WRONG_MAGIC[name])
        assert "truncated or corrupted" in (file_problem(path, SPEC) or "")

    def test_empty_file_is_caught(self, tmp_path, name):
        path = write(tmp_path, name, b"")
        assert file_problem(path, SPEC) == (
            f"Model file truncated or corrupted: {path}. Re-download. (it is empty)"
        )


class TestChecks:
    def test_missing_file(self, tmp_path):
        path = tmp_path / "absent.onnx"
        assert file_problem(path, SPEC) == f"Model file not found: {path}"

    def test_min_bytes(self, tmp_path):
        path = write(tmp_path, "weights.bin", b"x" * 100)
        assert "expected at least 1000" in file_problem(path, ModelSpec("w", min_bytes=1000))
        assert file_problem(path, ModelSpec("w", min_bytes=100)) is None

    def test_sha256_match_and_mismatch(self, tmp_path):
        import hashlib

        data = safetensors()
        path = write(tmp_path, "model.safetensors", data)
        good = hashlib.sha256(data).hexdigest()
        assert file_problem(path, ModelSpec("m", sha256=good)) is None
        reason = file_problem(path, ModelSpec("m", sha256="0" * 64))
        assert "sha256" in reason and "does not match" in reason

    def test_sha256_is_remembered_per_path_size_and_mtime(self, tmp_path):
        """Same size and mtime: the remembered digest is used, the file not reread."""
        import hashlib

        path = write(tmp_path, "w.bin", b"a" * 4096)
        digest = hashlib.sha256(b"a" * 4096).hexdigest()
        assert file_problem(path, ModelSpec("m", sha256=digest)) is None
        stat = path.stat()
        path.write_bytes(b"b" * 4096)  # same size; put the old mtime back
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        assert file_problem(path, ModelSpec("m", sha256=digest)) is None
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
        assert "does not match" in file_problem(path, ModelSpec("m", sha256=digest))


class TestResolve:
    def test_relative_to_package_dir(self, tmp_path):
        assert resolve("models/a.onnx", tmp_path, None) == tmp_path / "models" / "a.onnx"

    def test_operator_models_dir_takes_precedence(self, tmp_path):
        assert (
            resolve("a.onnx", tmp_path / "pkg", str(tmp_path / "ops"))
            == tmp_path / "ops" / "a.onnx"
        )

    def test_home_and_environment_are_expanded(self, tmp_path, monkeypatch):
        monkeypatch.setenv("MODEL_ROOT", str(tmp_path))
        monkeypatch.setenv("HOME", str(tmp_path / "home"))
        assert resolve("$MODEL_ROOT/a.gguf", None, None) == tmp_path / "a.gguf"
        assert resolve("~/a.gguf", None, None) == tmp_path / "home" / "a.gguf"


class TestPreflight:
    def test_missing_model_is_unavailable_before_any_import(
        self, plugwarden_plugin, plugwarden_host
    ):
        package = plugwarden_plugin(
            "vision",
            "raise SystemExit('must not be imported')\n",
            manifest={"models": {"detector": "weights/det.onnx"}},
        )
        host = plugwarden_host()
        status = host.status("vision")
        assert status.state is State.UNAVAILABLE
        assert status.reason == f"Model file not found: {package / 'weights' / 'det.onnx'}"

    def test_init_receives_resolved_model_paths(self, plugwarden_plugin, plugwarden_host, tmp_path):
        models = tmp_path / "models"
        models.mkdir()
        (models / "det.onnx").write_bytes(onnx())
        plugwarden_plugin(
            "vision",
            plugin_source(
                "return SEEN", prelude="SEEN = {}", init_body="SEEN.update(config['models'])"
            ),
            manifest={"models": {"detector": {"path": "det.onnx", "min_bytes": 10}}},
        )
        host = plugwarden_host({"plugins": {"vision": {"models_dir": str(models)}}})
        assert host.call("vision", "t", {}).result == {"detector": str(models / "det.onnx")}


def test_a_safetensors_header_nested_past_the_parser_is_corrupt(tmp_path):
    header = b"[" * 5000 + b"]" * 5000
    data = struct.pack("<Q", len(header)) + header + b"\x00" * 8
    path = write(tmp_path, "model.safetensors", data)
    reason = file_problem(path, SPEC) or ""
    assert reason.startswith(f"Model file truncated or corrupted: {path}.")
    assert "nests too deeply" in reason
