"""The hello plugin, installed, against the plugwarden contract (its tools'
examples come from its manifest)."""

from plugwarden.testing import PluginConformance


class TestHelloConforms(PluginConformance):
    plugin = "hello"
    conformance_level = "2"
