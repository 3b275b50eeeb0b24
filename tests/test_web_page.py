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


@pytest.fixture
def ops_server(plugwarden_plugin, plugwarden_server):
    """A required plugin that fails, one that serves, one that is unhealthy."""
    plugwarden_plugin("zeta", ECHO, manifest={"tools": {"echo": "echo back"}})
    plugwarden_plugin("alpha", "raise ImportError('no weights')\n")
    plugwarden_plugin("mid", ECHO + "\n@hookimpl\ndef health():\n    raise OSError('disk full')\n")
    server = plugwarden_server(
        {
            "defaults": {"health_failures": 1, "restart": "never"},
            "plugins": {"alpha": {"required": True}},
        }
    )
    server.host.call("zeta", "echo", {})
    server.host.check_health("mid")
    return server


class TestOperatorsPage:
    @needs_chromium
    def test_the_rendered_page_tells_an_operator_what_is_wrong(self, ops_server, tmp_path):
        """Asserted on the DOM Chromium rendered after the page's own refresh
        (header from /readyz, rows in name order, every column), with the
        history of the failing plugin opened by its link; no script error."""
        url = ops_server.url + "/#history=alpha"
        dom = chromium(
            url, "--dump-dom", "--enable-logging=stderr", "--v=0", profile=tmp_path / "a"
        )
        assert dom.returncode == 0, dom.stderr[-2000:]
        assert "Uncaught" not in dom.stderr and "CONSOLE" not in dom.stderr, dom.stderr[-2000:]
        rendered = html.unescape(dom.stdout)
        assert 'data-refreshed="ok"' in rendered
        ready = re.search(r'<span id="ready" class="(\w+)">([^<]*)</span>', rendered)
        assert ready is not None and ready.group(1) == "notready"
        assert "required plugin 'alpha' is FAILED" in ready.group(2)
        order = re.findall(r'<tr data-plugin="([^"]+)"', rendered)
        assert order == ["alpha", "mid", "zeta"]
        row = rendered.split('data-plugin="zeta"')[1].split("</tr>")[0]
        assert "echo" in row and "1 ok / 0 err" in row and "0 in flight" in row
        assert re.search(r"\d+\.\d MB", row) and "s ago" in row and "none" in row
        assert "unhealthy" in rendered.split('data-plugin="mid"')[1].split("</tr>")[0]
        alpha = rendered.split('data-plugin="alpha"')[1].split("</tr>")[0]
        assert "<details open" in alpha and "FAILED" in alpha and "no weights" in alpha
        assert "grants</b> network false, read " in alpha  # no network: it did not ask
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = ARTIFACTS / "status-page-not-ready.png"
        chromium(url, f"--screenshot={shot.resolve()}", profile=tmp_path / "b")
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
