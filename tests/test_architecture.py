"""The house rules of DESIGN.md, checked over the package's import graph.

Data flows one way, from pixels to places: a module may import its own layer and the layers below it,
never a layer above (deferred imports inside functions count too). Module-level imports form no
cycle. ``geo/`` never imports torch. A new top-level module or package must be given its layer here.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

import geoscope

PACKAGE = Path(geoscope.__file__).parent

#: layer of each top-level module / package of geoscope, bottom (0) to top. Same layer may import each other.
LAYERS: dict[str, int] = {
    # plain utilities every layer may use
    "errors": 0, "atomic": 0, "settings": 0, "optional": 0, "__main__": 9, "": 0,
    # pure geography: numpy / shapely, no torch
    "geo": 1,
    # reading the world; the one result type is plain data over geo/ and data/exif, and the calibrated
    # mixture it carries (numpy over geo/)
    "data": 2, "prediction": 2, "calibration": 2,
    # pretrained backbones
    "encoders": 3,
    # embedding store
    "store": 4,
    # small models over embeddings
    "heads": 5,
    # the object users hold
    "pretrained": 6, "geolocator": 6,
    # things done with a Geolocator
    "train": 7, "train_ray": 7, "evaluate": 7, "explain": 7, "verify": 7, "demo": 7, "demo_overhead": 7,
    "report": 7, "outdoor": 7, "area_search": 7, "crossview": 7,
    # front doors
    "cli": 8, "serve": 8,
    # test oracles and fixtures for geoscope's own tests: may use anything, used by nothing in the package
    "testing": 10,
}
#: modules allowed to import a test oracle (the testing helpers of a layer live beside it)
TESTING_USERS: set[str] = set()

HEAVY_IN_GEO = ("torch", "transformers", "rasterio.", "ray")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """(imported module, line, at module level) for every import of geoscope and of heavy libraries."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top_level = {id(node) for node in tree.body}
    # imports under `if TYPE_CHECKING:` at module level are for type checkers only
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for sub in ast.walk(node):
                top_level.discard(id(sub))
                sub._type_checking = True
    found = []
    for node in ast.walk(tree):
        if getattr(node, "_type_checking", False):
            continue
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module == "geoscope":
            names = [f"geoscope.{a.name}" for a in node.names]  # `from geoscope import settings`
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        for name in names:
            found.append((name, node.lineno, id(node) in top_level))
    return found


def _layer(module: str) -> int | None:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else ""
    return LAYERS.get(top)


@pytest.fixture(scope="module")
def graph() -> dict[str, list[tuple[str, int, bool]]]:
    return {_module_name(p): _imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_top_level_module_has_a_layer(graph):
    missing = sorted({m for m in graph if _layer(m) is None})
    assert not missing, f"give these modules a layer in tests/test_architecture.py LAYERS: {missing}"


def test_no_import_points_upward(graph):
    upward = []
    for module, imports in graph.items():
        here = _layer(module)
        for target, line, _ in imports:
            if not target.startswith("geoscope.") and target != "geoscope":
                continue
            there = _layer(target)
            if target == "geoscope" or (target.count(".") == 1 and target.split(".")[1] not in LAYERS):
                there = 8  # the lazy public API (`import geoscope`, `from geoscope import Geolocator`): front doors only
            if there is None or here is None:
                continue
            if there == LAYERS["testing"] and module not in TESTING_USERS and _layer(module) != LAYERS["testing"]:
                upward.append(f"{module}:{line} imports the test oracle {target}")
            elif there > here and there != LAYERS["testing"]:
                upward.append(f"{module} (layer {here}):{line} imports {target} (layer {there})")
    assert not upward, "imports that point up the layers of DESIGN.md:\n" + "\n".join(upward)


def test_no_import_cycle_at_module_level(graph):
    modules = set(graph)
    edges: dict[str, set[str]] = defaultdict(set)
    for module, imports in graph.items():
        for target, _, top in imports:
            if not top:
                continue
            # `from geoscope.a import b` may name a submodule b or an attribute of a; take the longest module
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != module and not module.startswith(target + "."):
                edges[module].add(target)
    # Tarjan's strongly connected components
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(modules):
        if v not in index:
            visit(v)
    assert not cycles, f"module-level import cycles: {cycles}"


def test_geo_never_imports_torch_or_other_heavy_libraries(graph):
    bad = [f"{m}:{line} imports {t}" for m, imports in graph.items() if _layer(m) == LAYERS["geo"]
           for t, line, _ in imports if t == "torch" or t.startswith(HEAVY_IN_GEO)]
    assert not bad, bad


def test_the_checker_catches_an_upward_import(tmp_path):
    """The rules above can fail: a geo/ module importing the Geolocator is reported."""
    fake = tmp_path / "geoscope" / "geo" / "bad.py"
    fake.parent.mkdir(parents=True)
    fake.write_text("def f():\n    from geoscope.geolocator import Geolocator\n    return Geolocator\n")
    (target, line, top), = [i for i in _imports(fake) if i[0].startswith("geoscope")]
    assert (target, line, top) == ("geoscope.geolocator", 2, False)
    assert _layer("geoscope.geo.bad") < _layer(target)
