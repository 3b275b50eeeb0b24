"""The docs: reference pages that match the code they are generated from,
pointers from the code that lead somewhere, a site map that holds every page,
and a README that stays short and opens with its two commands.
(tox -e docs builds the site with mkdocs --strict.)"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from plugwarden.testing import ECHO_PLUGIN

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
POINTER = re.compile(r"docs/([\w/.-]+\.md)(?:#([\w-]+))?")


def generator():
    spec = importlib.util.spec_from_file_location("docs_generate", DOCS / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def anchors(page: Path) -> set[str]:
    """The heading anchors MkDocs gives a page (python-markdown's slugify)."""
    found, fenced = set(), False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("#"):
            title = line.lstrip("#").strip().replace("`", "")
            slug = re.sub(r"[^\w\s-]", "", title).strip().lower()
            found.add(re.sub(r"[-\s]+", "-", slug))
    return found


def tracked(*patterns: str) -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", *patterns], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    return [ROOT / name for name in listed]


class TestReference:
    def test_every_reference_page_matches_the_code(self):
        assert generator().stale() == [], "run: python docs/generate.py"

    def test_the_check_says_which_page_is_stale(self, tmp_path, monkeypatch):
        module = generator()
        monkeypatch.setattr(module, "REFERENCE", tmp_path)
        (tmp_path / "errors.md").write_text("# out of date\n")
        assert set(module.stale()) == set(module.PAGES)
        assert module.main(["--check"]) == 1
        assert module.main([]) == 0 and module.stale() == []

    def test_every_config_key_and_error_type_is_described(self):
        from plugwarden.config import TABLES
        from plugwarden.error_types import HTTP_STATUS

        config = (DOCS / "reference" / "config.md").read_text()
        for table, keys in TABLES.items():
            assert f"## `[{table}]`" in config
            for key in keys:
                assert re.search(rf"^\| `{key}` \| .+ \| \S.* \|$", config, re.M), (table, key)
        errors = (DOCS / "reference" / "errors.md").read_text()
        for error_type in HTTP_STATUS:
            assert f"| `{error_type}` | {HTTP_STATUS[error_type]} |" in errors


class TestPointers:
    def test_the_code_points_at_pages_and_sections_that_exist(self):
        missing = []
        for source in tracked("src/*.py", "tests/*.py", "benchmarks/*.py", "docs/*.py"):
            for page, anchor in POINTER.findall(source.read_text()):
                target = DOCS / page
                if not target.is_file() or (anchor and anchor not in anchors(target)):
                    missing.append(f"{source.relative_to(ROOT)}: docs/{page}#{anchor}")
        assert missing == []

    def test_the_readme_links_to_pages_that_exist(self):
        readme = (ROOT / "README.md").read_text()
        links = re.findall(r"\]\(((?:docs/)?[\w/.-]+\.md)\)", readme)
        assert links and all((ROOT / link).is_file() for link in links), links

    def test_the_site_map_holds_every_page(self):
        nav = set(re.findall(r":\s*([\w/.-]+\.md)\s*$", (ROOT / "mkdocs.yml").read_text(), re.M))
        pages = {str(page.relative_to(DOCS)) for page in DOCS.rglob("*.md")}
        assert nav == pages


class TestSamples:
    def test_the_sample_health_record_has_every_field_a_real_one_has(
        self, plugwarden_plugin, plugwarden_host
    ):
        text = (DOCS / "guides" / "operating.md").read_text()
        start = text.index("$ curl -s localhost:8765/v1/plugins/hello/health\n")
        sample = json.loads(text[text.index("{", start) : text.index("\n\n", start)])
        plugwarden_plugin("hello", ECHO_PLUGIN)
        real = plugwarden_host().status("hello").to_dict()
        assert set(sample) == set(real)
        assert set(sample["guard_trips"]) == set(real["guard_trips"])
        assert set(sample["protections"]) == set(real["protections"])


class TestReadme:
    def test_it_is_short_and_opens_with_the_two_commands(self):
        readme = (ROOT / "README.md").read_text()
        assert len(readme.splitlines()) <= 150
        blocks = re.findall(r"```bash\n(.*?)```", readme, re.S)
        serve, test = blocks[0].strip(), blocks[1].strip()
        assert serve.endswith("plugwarden serve") and "./contrib_plugins/*" in serve
        assert test.endswith(".venv/bin/tox")
        assert test.split("&&")[-1].strip() in (ROOT / ".ci" / "run").read_text()

    @pytest.mark.skipif(sys.platform != "linux", reason="the CLI targets Linux")
    def test_every_command_it_shows_exists(self):
        from plugwarden.cli.main import parser

        readme = (ROOT / "README.md").read_text()
        shown = set(re.findall(r"\.venv/bin/plugwarden (\w+)", readme))
        known = set(parser()._subparsers._group_actions[0].choices)
        assert shown and shown <= known, shown - known
