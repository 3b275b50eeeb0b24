"""The hello plugin, installed, against the plugwarden contract."""

from typing import Any, ClassVar

from plugwarden.testing import PluginConformance


class TestHelloConforms(PluginConformance):
    plugin = "hello"
    tool_examples: ClassVar[dict[str, dict[str, Any]]] = {
        "greet": {"name": "Ada"},
        "echo": {"x": 1},
        "count": {"to": 2, "every_s": 0},
    }
    conformance_level = "2"
