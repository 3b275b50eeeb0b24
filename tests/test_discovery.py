"""Entry-point discovery over real dist-info directories."""

from __future__ import annotations

from plugwarden.core.discovery import discover
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
