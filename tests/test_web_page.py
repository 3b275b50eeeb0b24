"""GET /: the status page, as a person sees it in a real browser."""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.conftest import ECHO

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium not installed (Debian package; .ci/run installs it)"
)
ARTIFACTS = Path(os.environ.get("PLUGWARDEN_ARTIFACTS", "test-artifacts"))


def chromium(url: str, *extra: str, profile: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=5000",
            "--window-size=1280,720",
            *extra,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def page_server(plugwarden_plugin, plugwarden_server):
    plugwarden_plugin("greeter", ECHO, manifest={"version": "2.0.0"})
    plugwarden_plugin("broken", "raise ImportError('cannot import weights <b>')\n")
    server = plugwarden_server()
    server.host.call("greeter", "t", {})
    return server


class TestStatusPage:
    def test_page_is_html_with_every_plugin_escaped(self, page_server):
        response = httpx.get(page_server.url + "/", timeout=30)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/html")
        text = response.text
        assert 'data-plugin="greeter"' in text and 'data-plugin="broken"' in text
        assert "cannot import weights &lt;b&gt;" in text
        assert "<b>" not in text.split("<body>")[1].split("<script>")[0]
        assert "http://" not in text and "https://" not in text  # no external assets

    @needs_chromium
    def test_a_person_sees_states_reasons_and_counts(self, page_server, tmp_path):
        """Chromium renders the page (after its script refreshed it) and shoots it."""
        dom = chromium(page_server.url + "/", "--dump-dom", profile=tmp_path / "p1")
        assert dom.returncode == 0, dom.stderr[-2000:]
        rendered = html.unescape(dom.stdout)
        assert "greeter" in rendered and "INITIALIZED" in rendered
        assert "broken" in rendered and "FAILED" in rendered
        assert "cannot import weights <b>" in rendered
        assert "1 FAILED" in rendered
        updated = re.search(r'<span id="updated">([^<]*)</span>', rendered)
        assert updated is not None
        # The page's script refreshed it: a time, not the server's "now" or a failure.
        assert updated.group(1) not in ("now", "") and "failed" not in updated.group(1)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = ARTIFACTS / "status-page.png"
        result = chromium(
            page_server.url + "/", f"--screenshot={shot.resolve()}", profile=tmp_path / "p2"
        )
        assert result.returncode == 0, result.stderr[-2000:]
        assert shot.stat().st_size > 5000
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
