"""The hello plugin, installed, against the plugwarden contract."""

from plugwarden.testing import PluginConformance


class TestHelloConforms(PluginConformance):
    plugin = "hello"
    tool_examples = {
        "greet": {"name": "Ada"},
        "echo": {"x": 1},
        "count": {"to": 2, "every_s": 0},
    }
    conformance_level = "2"
