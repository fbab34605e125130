"""The import graph of ``model`` and ``backend`` has no cycles — counting the imports written inside
functions, which hide a cycle from Python (it only fails when both ends load at module level) but
not from a reader who has to follow it."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]



def module_files() -> dict[str, Path]:
    files = {}
    for package in ("model", "backend"):
        for path in (REPO / package).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            files[name] = path
    return files


def imported_modules(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """Every project module ``name`` imports, anywhere in its body (``from pkg import mod`` counts
    ``pkg.mod`` alone when that is a module: what the reader follows is the module, not the
    package's ``__init__``, which may itself list its submodules)."""
    out: set[str] = set()
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package[: len(package) - (node.level - 1)]
                base = ".".join(parent + ([base] if base else []))
            submodules = {f"{base}.{alias.name}" for alias in node.names} & known.keys()
            if len(submodules) < len(node.names):  # names defined in ``base`` itself
                out.add(base)
            out.update(submodules)
    return {m for m in out if m in known and m != name}


def cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(frozenset(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    return {name: imported_modules(name, path, files) for name, path in files.items()}


def test_the_cycle_finder_finds_a_cycle_through_a_function_local_import():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [frozenset({"a", "b", "c"})]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_import_graph_has_no_cycles():
    graph = import_graph()
    assert "model.pipeline" in graph and "model.autoencode" in graph["model.pipeline"]  # the parse sees imports
    assert "backend.cli.arguments" in graph["backend.cli.remesh"]  # `from pkg import module` is followed
    assert "model.gpu.engine" in graph["model.engine"]  # and so are the imports inside functions
    assert cycles(graph) == [], [sorted(c) for c in cycles(graph)]


def test_the_public_api_is_at_the_top_of_model_and_loads_on_first_use():
    import subprocess
    import sys

    code = ("import sys, model.grid\n"
            "assert 'numba' not in sys.modules and 'model.pipeline' not in sys.modules, 'model.grid pulled in the pipeline'\n"
            "import model\n"
            "from model import RemeshOptions, decode, encode, load_mesh, remesh, save_mesh, Mesh\n"
            "from model.pipeline import decode_to_mesh, encode_mesh, remesh as pipeline_remesh\n"
            "assert remesh is pipeline_remesh and encode is encode_mesh and decode is decode_to_mesh\n"
            "assert set(model.__all__) <= set(dir(model))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_the_files_the_add_on_bundles_import_only_what_blender_has():
    """install.py copies ADDON_WIRE_FILES into the add-on as they are; inside Blender there is
    numpy, pyzmq and msgpack (bundled wheels) and the standard library, not numba, torch or the
    project's packages (a numba import there broke every remesh with quads once)."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("install", REPO / "install.py")
    install = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(install)
    allowed = {"numpy", "zmq", "msgpack", *sys.stdlib_module_names}
    bundled = {Path(rel).stem for rel in install.ADDON_WIRE_FILES}
    for rel in install.ADDON_WIRE_FILES:
        tree = ast.parse((REPO / rel).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: must be a file that is bundled too
                    names = [node.module.split(".")[0]] if node.module else [a.name for a in node.names]
                    assert set(names) <= bundled, (rel, names)
                    continue
                names = [node.module.split(".")[0]]
            else:
                continue
            assert set(names) <= allowed, f"{rel} imports {names}, which Blender does not have"
