"""Schemathesis fuzzes a live server against its own OpenAPI document: every
route, every phase (examples, coverage, fuzzing, and stateful job flows
through the document's links), with the token and without it. No answer may
be a 5xx, and every answer must match the document."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from plugwarden.testing import FakeNvml, fake_gpu
from tests.conftest import ECHO

HERE = Path(__file__).parent
TOKEN = "fuzz-token"
CHECKS = "all"
# DELETE /v1/jobs/{id} cancels a job and keeps its record, read afterwards as
# cancelled (docs/reference/http.md); this check takes any DELETE for a removal.
EXCLUDED = "use_after_free"


@pytest.fixture
def fuzzed_server(plugwarden_plugin, plugwarden_server, tmp_path_factory, monkeypatch):
    """Plugins in each steady state behind a served host, one of them placed
    on a (fake) GPU so that records carry GPUs. Installs stay on this
    machine: uv works offline (a fuzzed spec names no real package)."""
    monkeypatch.setenv("UV_OFFLINE", "1")
    state = tmp_path_factory.mktemp("state")  # apart from the plugins' site: none may read it
    plugwarden_plugin("echo", ECHO, manifest={"description": "echoes", "tools": {"echo": "e"}})
    plugwarden_plugin("broken", "raise ImportError('no luck')\n")
    plugwarden_plugin("missing", ECHO, requires=["not-installed-anywhere-xyz"])
    plugwarden_plugin("gpu", ECHO, manifest={"requires_gpu": True, "tools": {"echo": "e"}})
    with FakeNvml(state / "nvml.json", (16384,)), fake_gpu("present"):
        yield plugwarden_server(
            {
                "server": {"token": TOKEN, "plugins_dir": str(state / "envs")},
                "jobs": {"path": str(state / "jobs.sqlite3")},
                "plugins": {"gpu": {"gpu_memory_mb": 1024}},
            }
        )


def schemathesis(url: str, where: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """The Schemathesis CLI against ``url``, run in ``where`` (its caches
    and reports stay there)."""
    seed = random.randrange(2**32)
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "--config-file",
        str(HERE / "schemathesis.toml"),
        "run",
        f"{url}/openapi.json",
        "--checks",
        CHECKS,
        "--exclude-checks",
        EXCLUDED,
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--max-examples",
        os.environ.get("PLUGWARDEN_FUZZ_EXAMPLES", "20"),
        "--seed",
        str(seed),
        "--workers",
        "1",
        "--no-color",
        *options,
    ]
    return subprocess.run(
        command, cwd=where, capture_output=True, text=True, timeout=900, check=False
    )


def verdict(run: subprocess.CompletedProcess[str]) -> str:
    return f"{' '.join(run.args)}\n{run.stdout[-12000:]}\n{run.stderr[-4000:]}"


# A run is bounded by its examples per operation (PLUGWARDEN_FUZZ_EXAMPLES), not by time.
@pytest.mark.timeout(1000)
class TestFuzz:
    def test_with_the_token_every_answer_matches_the_document(
        self, fuzzed_server, tmp_path_factory
    ):
        token = f"Authorization: Bearer {TOKEN}"
        run = schemathesis(fuzzed_server.url, tmp_path_factory.mktemp("st"), "--header", token)
        assert run.returncode == 0, verdict(run)

    def test_without_the_token_every_answer_matches_the_document(
        self, fuzzed_server, tmp_path_factory
    ):
        run = schemathesis(fuzzed_server.url, tmp_path_factory.mktemp("st"))
        assert run.returncode == 0, verdict(run)
