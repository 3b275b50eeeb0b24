"""Entry-point discovery over real dist-info directories."""

from __future__ import annotations

from plugwarden.plugin.discovery import discover
from plugwarden.testing import write_plugin
from tests.conftest import ECHO


class TestDiscover:
    def test_finds_each_entry_point_with_its_distribution(self, plugwarden_site):
        write_plugin(plugwarden_site, "alpha", ECHO, version="1.2.3", requires=["packaging"])
        write_plugin(plugwarden_site, "beta", ECHO, entry_point="beta_plugin:thing")
        found = discover([str(plugwarden_site)])
        assert set(found.plugins) == {"alpha", "beta"}
        alpha = found.plugins["alpha"]
        assert alpha.dist_version == "1.2.3"
        assert alpha.requires == ("packaging",)
        assert alpha.package_dir == plugwarden_site / "alpha_plugin"
        assert found.plugins["beta"].attr == "thing"
        assert found.plugins["beta"].requires == ()  # a dist-info without Requires-Dist
        assert found.duplicates == {}

    def test_two_distributions_claiming_one_name_are_both_reported(self, plugwarden_site):
        """A duplicate name is never silently shadowed."""
        write_plugin(plugwarden_site, "same", ECHO, module="first_impl", dist="first-dist")
        write_plugin(plugwarden_site, "same", ECHO, module="second_impl", dist="second-dist")
        found = discover([str(plugwarden_site)])
        assert "same" not in found.plugins
        assert {s.dist_name for s in found.duplicates["same"]} == {"first-dist", "second-dist"}

    def test_discovery_imports_nothing(self, plugwarden_site):
        """Finding a plugin (and its manifest directory) runs none of its code."""
        write_plugin(plugwarden_site, "bomb", "raise SystemExit('imported!')\n")
        found = discover([str(plugwarden_site)])
        assert found.plugins["bomb"].package_dir is not None

    def test_a_copy_shadowed_on_the_path_is_not_a_plugin(self, tmp_path):
        """The first copy of a distribution on the path wins, as for an import,
        even when only a later copy declares a plugin."""
        first, second = tmp_path / "first", tmp_path / "second"
        for site in (first, second):
            site.mkdir()
        write_plugin(first, "other", ECHO, dist="shared-dist", module="other_impl")
        (first / "shared_dist-1.0.0.dist-info" / "entry_points.txt").write_text("")
        write_plugin(second, "late", ECHO, dist="shared-dist", module="late_impl")
        assert discover([str(first), str(second)]).plugins == {}
        assert set(discover([str(second), str(first)]).plugins) == {"late"}

    def test_an_egg_info_distribution_is_found_with_its_requirements(self, tmp_path):
        """No METADATA, no Requires-Dist header: PKG-INFO and requires.txt."""
        (tmp_path / "egged.py").write_text(ECHO)
        egg = tmp_path / "egged-0.3.egg-info"
        egg.mkdir()
        (egg / "PKG-INFO").write_text("Metadata-Version: 1.1\nName: egged\nVersion: 0.3\n\n")
        (egg / "requires.txt").write_text("packaging\n")
        (egg / "entry_points.txt").write_text("[plugwarden.plugins]\negged = egged\n")
        found = discover([str(tmp_path)]).plugins["egged"]
        assert (found.dist_name, found.dist_version, found.requires) == (
            "egged",
            "0.3",
            ("packaging",),
        )
