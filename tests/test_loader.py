"""Loading: hooks checked against the specs, reasons that name the hook."""

from __future__ import annotations

import subprocess
import sys

import pytest

from plugwarden import State

ISOLATIONS = ["process", "inline"]


@pytest.mark.parametrize("isolation", ISOLATIONS)
class TestHookChecks:
    def test_missing_required_hook_is_failed_naming_it(
        self, plugwarden_plugin, plugwarden_host, isolation
    ):
        plugwarden_plugin(
            "norun",
            "from plugwarden import hookimpl\n\n@hookimpl\ndef validate():\n    return True\n",
        )
        host = plugwarden_host({"defaults": {"isolation": isolation}})
        status = host.status("norun")
        assert status.state is State.FAILED
        assert "required hook(s) 'run(tool, args)'" in status.reason

    def test_a_hook_without_hookimpl_is_named_as_unmarked(
        self, plugwarden_plugin, plugwarden_host, isolation
    ):
        plugwarden_plugin(
            "unmarked",
            "from plugwarden import hookimpl\n\n@hookimpl\ndef validate():\n    return True\n\n"
            "def run(tool, args):\n    return 1\n",
        )
        host = plugwarden_host({"defaults": {"isolation": isolation}})
        status = host.status("unmarked")
        assert status.state is State.FAILED
        assert status.reason.startswith("run() is defined but not marked @hookimpl")
        assert "does not implement" not in status.reason

    def test_hook_with_an_argument_the_spec_lacks_is_failed(
        self, plugwarden_plugin, plugwarden_host, isolation
    ):
        plugwarden_plugin(
            "extra",
            "from plugwarden import hookimpl\n\n@hookimpl\n"
            "def validate():\n    return True\n\n@hookimpl\n"
            "def run(tool, args, verbose):\n    return 1\n",
        )
        host = plugwarden_host({"defaults": {"isolation": isolation}})
        status = host.status("extra")
        assert status.state is State.FAILED
        assert "Hook 'run' takes argument(s) 'verbose'" in status.reason
        assert "Expected run(tool, args)" in status.reason

    def test_unknown_hook_name_is_failed(self, plugwarden_plugin, plugwarden_host, isolation):
        plugwarden_plugin(
            "typo",
            "from plugwarden import hookimpl\n\n@hookimpl\n"
            "def validate():\n    return True\n\n@hookimpl\n"
            "def runn(tool, args):\n    return 1\n",
        )
        host = plugwarden_host({"defaults": {"isolation": isolation}})
        assert "Unknown hook 'runn'" in host.status("typo").reason

    def test_instance_entry_point_with_subset_of_arguments(
        self, plugwarden_plugin, plugwarden_host, isolation
    ):
        """module:attr naming an instance works; a hook may take fewer arguments."""
        source = (
            "from plugwarden import hookimpl\n\nclass Plugin:\n    @hookimpl\n"
            "    def validate(self):\n        return None\n\n    @hookimpl\n"
            "    def run(self, tool):\n        return tool.upper()\n\nplugin = Plugin()\n"
        )
        plugwarden_plugin("obj", source, entry_point="obj_plugin:plugin")
        host = plugwarden_host({"defaults": {"isolation": isolation}})
        assert host.status("obj").state is State.INITIALIZED
        assert host.call("obj", "shout", {}).result == "SHOUT"


class TestDirectDispatch:
    def test_a_hook_called_directly_answers_as_pluggy_would(
        self, plugwarden_plugin, plugwarden_site
    ):
        """Each hook's one guarded implementation is called without pluggy's
        caller, with the arguments it takes: the record is the one pluggy's
        call gives, for a value, a raise and a subset of the arguments."""
        from plugwarden.isolation.loader import load_plugin

        source = (
            "from plugwarden import hookimpl\n\n"
            "@hookimpl\ndef validate():\n    return True\n\n"
            "@hookimpl\ndef init():\n    pass\n\n"
            "@hookimpl\ndef run(args, tool):\n"
            "    if tool == 'boom':\n        raise ValueError(args['n'])\n"
            "    return {'tool': tool, 'n': args['n']}\n"
        )
        plugwarden_plugin("direct", source, module="direct_dispatch_plugin")
        plugin = load_plugin("direct", "direct_dispatch_plugin", None, [str(plugwarden_site)])
        assert set(plugin.direct) == {"validate", "init", "run"}
        for kwargs in ({"tool": "t", "args": {"n": 1}}, {"tool": "boom", "args": {"n": 2}}):
            direct = plugin.call("run", kwargs)
            through_pluggy = plugin.manager.hook.run(**kwargs)
            assert (direct.ok, direct.result, direct.error, direct.error_type) == (
                through_pluggy.ok,
                through_pluggy.result,
                through_pluggy.error,
                through_pluggy.error_type,
            )
        assert plugin.call("run", {"tool": "t", "args": {"n": 3}}).result == {"tool": "t", "n": 3}
        assert plugin.call("init", {"config": {"ignored": True}}).ok


def test_a_plugin_in_a_directory_made_after_a_failed_search_is_found(tmp_path):
    """The path finders' listings are trusted until the module is not found;
    then they are dropped and the import tried again. Here the first search
    cached "no such directory" for the plugin's path entry."""
    later = tmp_path / "made-later"
    script = (
        "import importlib, sys\n"
        "from plugwarden.isolation.loader import load_plugin\n"
        f"sys.path.insert(0, {str(later)!r})\n"
        "try:\n    importlib.import_module('made_later')\n"
        "except ModuleNotFoundError:\n    pass\n"
        f"import pathlib\nplace = pathlib.Path({str(later)!r})\nplace.mkdir()\n"
        "(place / 'made_later.py').write_text("
        "'from plugwarden import hookimpl\\n@hookimpl\\ndef validate():\\n    return None\\n"
        "@hookimpl\\ndef run(tool, args):\\n    return 1\\n')\n"
        f"print(sorted(load_plugin('later', 'made_later', None, [{str(later)!r}]).hooks))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['run', 'validate']"
