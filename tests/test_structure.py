"""The code's shape, checked: no import cycle inside plugwarden, no arrow
from a lower layer up to a higher one, at most 12 floors of imports, no
module over 400 lines, no folder of more than 20 modules, no two modules
named alike, no private name imported across modules, and the host's own
parts (the registry, the job queue) imported by the host package alone.

The layers, lowest first (docs/architecture.md): the shared basics
at the package root; ``plugin`` (what a plugin is); ``config``, ``sections`` and
``settings`` (the operator's file, and one plugin's settings resolved);
``preflight``;
``isolation`` (then its optional ``ray`` backend); ``host`` and ``jobs``;
``web``; ``testing``; ``cli``."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import plugwarden

SRC = Path(plugwarden.__file__).parent
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


LAYERS = {
    "plugwarden.error_types": 0,
    "plugwarden.exceptions": 0,
    "plugwarden.exits": 0,
    "plugwarden.hookspecs": 0,
    "plugwarden.logs": 0,
    "plugwarden.console": 0,
    "plugwarden.result": 0,
    "plugwarden.encoding": 0,
    "plugwarden.blob": 0,
    "plugwarden.plugin": 1,
    "plugwarden.config": 2,
    "plugwarden.sections": 2,
    "plugwarden.settings": 2,
    "plugwarden.preflight": 3,
    "plugwarden.environments": 3,
    "plugwarden.isolation": 4,
    "plugwarden.isolation.ray": 5,
    "plugwarden.host": 6,
    "plugwarden.jobs": 6,
    "plugwarden.web": 7,
    "plugwarden.testing": 8,
    "plugwarden.cli": 9,
    "plugwarden.__main__": 10,
}
MAX_FLOORS = 12
MAX_MODULES_A_FOLDER = 20
# The host's own parts: only the host package (plugwarden.host) imports them.
HOST_PARTS = ("plugwarden.host.registry", "plugwarden.jobs.queue")


def type_checking_nodes(tree: ast.AST) -> set[int]:
    """The ids of the nodes under ``if TYPE_CHECKING:`` (imports for the
    type checker, never run)."""
    return {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING"
        for statement in node.body
        for inner in ast.walk(statement)
    }


def imports(*, runtime: bool = False) -> dict[str, list[tuple[str, list[str]]]]:
    """module -> [(imported module, names)] for every plugwarden import at
    any depth (lazy imports inside functions count: they still form a cycle).
    ``runtime``: leave out the imports under ``if TYPE_CHECKING:``."""
    found: dict[str, list[tuple[str, list[str]]]] = {}
    for path in SRC.rglob("*.py"):
        name = module_name(path)
        edges = found.setdefault(name, [])
        tree = ast.parse(path.read_text())
        skipped = type_checking_nodes(tree) if runtime else set()
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module.startswith("plugwarden"):
                    edges.append((node.module, [alias.name for alias in node.names]))
            elif isinstance(node, ast.Import):
                edges += [(a.name, []) for a in node.names if a.name.startswith("plugwarden")]
    return found


def graph(*, runtime: bool = False) -> dict[str, set[str]]:
    found = imports(runtime=runtime)
    edges: dict[str, set[str]] = {}
    for module, targets in found.items():
        out = edges.setdefault(module, set())
        for target, names in targets:
            # `from plugwarden.isolation.process import worker` imports the module worker.
            for name in names:
                if f"{target}.{name}" in found:
                    out.add(f"{target}.{name}")
            if target in found and target != "plugwarden":
                out.add(target)
    return edges


def imported_by(statements: str, watched: tuple[str, ...]) -> list[str]:
    """The modules of ``watched`` (or under them) that a fresh interpreter
    has imported after running ``statements``."""
    probe = (
        f"import sys\n{statements}\n"
        f"print(sorted(m for m in sys.modules if m in {watched!r} "
        f"or m.split('.')[0] in {watched!r}))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return ast.literal_eval(done.stdout.strip())


def floors(edges: dict[str, set[str]]) -> dict[str, int]:
    """A module's floor: one above the highest module it imports (the
    package root, which re-exports the public names lazily, left out)."""
    found: dict[str, int] = {}

    def floor(module: str) -> int:
        if module not in found:
            below = [t for t in edges.get(module, ()) if t not in (module, "plugwarden")]
            found[module] = 1 + max((floor(t) for t in below), default=0)
        return found[module]

    for module in edges:
        floor(module)
    return found


def layer(module: str) -> int | None:
    owners = [prefix for prefix in LAYERS if module == prefix or module.startswith(prefix + ".")]
    return LAYERS[max(owners, key=len)] if owners else None


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    found, state, stack = [], {}, []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                found.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node)
    return found


class TestStructure:
    def test_no_import_cycle_inside_plugwarden(self):
        """Walking every import with ast finds no cycle (the package root,
        which re-exports the public names, is left out: nothing imports it
        for an implementation)."""
        edges = graph()
        assert "plugwarden.host.host" in edges and "plugwarden.host.supervisor" in edges
        assert cycles(edges) == []

    def test_no_arrow_runs_up_the_layers(self):
        """Every module belongs to a layer, and imports only from its own
        layer or lower ones (the type checker's imports apart)."""
        edges = graph(runtime=True)
        assert [m for m in edges if m != "plugwarden" and layer(m) is None] == []
        up = sorted(
            f"{module} -> {target}"
            for module, targets in edges.items()
            if module != "plugwarden"
            for target in targets
            if target != "plugwarden" and layer(target) > layer(module)
        )
        assert up == []

    def test_imports_are_at_most_twelve_floors_deep(self):
        """A module's floor is one above the highest it imports at run time."""
        found = floors(graph(runtime=True))
        assert max(found.values()) <= MAX_FLOORS, sorted(found.items(), key=lambda kv: -kv[1])[:5]

    def test_the_floor_counter_counts_the_longest_chain(self):
        assert floors({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == {"a": 3, "b": 2, "c": 1}

    def test_no_folder_holds_more_than_twenty_modules(self):
        folders = {p.parent for p in SRC.rglob("*.py")}
        crowded = {
            str(folder.relative_to(SRC)): n
            for folder in folders
            if (n := len([p for p in folder.glob("*.py") if p.name != "__init__.py"]))
            > MAX_MODULES_A_FOLDER
        }
        assert crowded == {}

    def test_no_two_modules_are_named_alike(self):
        """No module name is another's plural (worker / workers), and no
        name stands twice in one package."""
        stems = {p.stem for p in SRC.rglob("*.py") if p.stem != "__init__"}
        plural = sorted(
            (s, f"{s}{end}") for s in stems for end in ("s", "es") if f"{s}{end}" in stems
        )
        assert plural == []

    def test_only_the_host_package_imports_the_registry_and_the_job_queue(self):
        reaching = sorted(
            f"{module} -> {target}"
            for module, targets in graph().items()
            for target in targets
            if target in HOST_PARTS and not module.startswith("plugwarden.host.")
        )
        assert reaching == []

    def test_the_cycle_finder_finds_a_cycle(self):
        assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]

    def test_no_module_is_over_400_lines(self):
        sizes = {module_name(p): len(p.read_text().splitlines()) for p in SRC.rglob("*.py")}
        assert {m: n for m, n in sizes.items() if n > MAX_LINES} == {}

    def test_no_private_name_is_imported_across_modules(self):
        private = [
            (module, target, name)
            for module, targets in imports().items()
            for target, names in targets
            for name in names
            if name.startswith("_") and not name.startswith("__")
        ]
        assert private == []

    def test_every_error_class_is_a_plugwarden_error(self):
        """Exceptions plugwarden defines live under PlugwardenError."""
        strays = []
        for path in SRC.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ClassDef):
                    bases = {getattr(b, "id", getattr(b, "attr", "")) for b in node.bases}
                    if bases & {"Exception", "BaseException"} and node.name != "PlugwardenError":
                        strays.append(f"{module_name(path)}.{node.name}")
        assert strays == []

    def test_the_package_names_resolve_and_import_on_first_use(self):
        """``from plugwarden import hookimpl`` (every plugin does it, and so
        does the zygote, through the worker) must not import the host."""
        assert sorted(plugwarden.__all__) == sorted(plugwarden._EXPORTS)
        for name in plugwarden.__all__:
            assert getattr(plugwarden, name) is not None, name
        assert plugwarden.__version__
        loaded = imported_by(
            "from plugwarden import hookimpl\nimport plugwarden.isolation.process.worker",
            # packaging: the pre-flight's, ~25 ms of every zygote's boot.
            ("plugwarden.host.host", "plugwarden.config", "starlette", "uvicorn", "packaging"),
        )
        assert loaded == []

    def test_serve_starts_the_plugins_before_it_imports_the_web_stack(self):
        """What ``plugwarden serve`` imports before its plugins start: not
        the client commands' rich and httpx, not the web stack (imported
        while the workers start), not wrapt (inline and Ray guards only)."""
        loaded = imported_by(
            "import plugwarden.cli.main, plugwarden.web.launch, plugwarden.host.host",
            ("rich", "httpx", "starlette", "uvicorn", "wrapt"),
        )
        assert loaded == []

    def test_the_web_stack_leaves_rich_and_prometheus_client_for_later(self):
        """The app ``serve`` builds imports neither the CLI's rich nor
        prometheus-client (loaded at the first scrape)."""
        loaded = imported_by(
            "import plugwarden.web.server\n"
            "from plugwarden import Host\n"
            "host = Host({}, search_path=[])\n"
            "plugwarden.web.server.build(host, host.config, start=False)\n"
            "host.close()",
            ("rich", "httpx", "prometheus_client"),
        )
        assert loaded == []
