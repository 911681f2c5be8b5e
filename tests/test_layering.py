"""The import structure: layers point down only, and no module imports itself back in a circle.

Read from the source with `ast`, imports inside functions included (a lazy import is still a
dependency), those under `if TYPE_CHECKING:` left out (never run).
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Where each installed package's source lives (pipelines/ and cli/ install inside sfa_cache).
SOURCES = {"sfa_cache": REPO / "sfa_cache", "sfa_cache.pipelines": REPO / "pipelines", "sfa_cache.cli": REPO / "cli"}
# Lowest first. A module may import its own package and anything on a lower layer, nothing else.
LAYERS = [
    ["sfa_cache.errors"],
    [
        "sfa_cache", "sfa_cache.atomic", "sfa_cache.settings_io", "sfa_cache.folders", "sfa_cache.jsonl",
        "sfa_cache.report", "sfa_cache.compare",
    ],
    ["sfa_cache.runtime", "sfa_cache.plot"],
    ["sfa_cache.distributed", "sfa_cache.fresh_process"],
    ["sfa_cache.video"],
    ["sfa_cache.data", "sfa_cache.models"],
    # cache/ by direction: the on-disk format below the engine that writes it and the feeds that
    # read it; those two never import each other (one layer: neither may import the other).
    ["sfa_cache.run", "sfa_cache.cache", "sfa_cache.cache.format"],
    ["sfa_cache.cache.extraction", "sfa_cache.cache.feeds"],
    ["sfa_cache.train", "sfa_cache.inference"],
    ["sfa_cache.cost"],
    ["sfa_cache.api"],  # the Python API is the library's: it never imports a pipeline
    ["sfa_cache.pipelines"],
    ["sfa_cache.cli"],
    ["sfa_cache.__main__"],
]
LAYER = {unit: i for i, units in enumerate(LAYERS) for unit in units}


def modules() -> dict[str, Path]:
    found = {}
    for package, folder in SOURCES.items():
        for path in folder.rglob("*.py"):
            parts = [p for p in path.relative_to(folder).with_suffix("").parts if p != "__init__"]
            if package == "sfa_cache" and parts and parts[0] in ("pipelines", "cli"):
                continue
            found[".".join([package, *parts])] = path
    return found


def _type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The sfa_cache modules `path` imports, anywhere in the file but under TYPE_CHECKING."""
    out: set[str] = set()

    def visit(node: ast.AST) -> None:
        if _type_checking(node):
            return
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sfa_cache"):
            for alias in node.names:
                name = f"{node.module}.{alias.name}"
                out.add(name if name in known else node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("sfa_cache"))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return out


def unit(module: str) -> str:
    """The layer unit of a module: its (sub)package (sfa_cache.video.*, sfa_cache.cache.feeds.*),
    or the module itself."""
    for candidate in sorted(LAYER, key=len, reverse=True):
        if module == candidate or (candidate != "sfa_cache" and module.startswith(candidate + ".")):
            return candidate
    return module


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {m: {i for i in imports_of(p, set(mods)) if i in mods and i != m} for m, p in mods.items()}


def test_every_module_has_a_layer() -> None:
    assert {unit(m) for m in modules()} <= set(LAYER), sorted({unit(m) for m in modules()} - set(LAYER))


def test_imports_point_down_only() -> None:
    upward = [f"{m} -> {i}" for m, deps in graph().items() for i in deps
              if unit(i) != unit(m) and LAYER[unit(i)] >= LAYER[unit(m)]]
    assert upward == [], "\n".join(upward)


def test_no_import_circle() -> None:
    g = graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    circles: list[list[str]] = []

    def walk(m: str, path: list[str]) -> None:
        state[m] = 1
        for i in sorted(g[m]):
            if state.get(i) == 1:
                circles.append(path[path.index(i):] + [i])
            elif i not in state:
                walk(i, path + [i])
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            walk(m, [m])
    assert circles == [], circles


def test_no_string_names_a_module_on_a_higher_layer() -> None:
    """A dependency hidden in a string (a module a worker pool is told to preload, say) is still a
    dependency: a string that names an sfa_cache module names one this module may import. (The
    package's own name is the loggers' namespace, not an import.)"""
    mods = modules()
    names = set(mods) - {"sfa_cache"}
    found = []
    for m, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in names:
                named = node.value
                if unit(named) != unit(m) and LAYER[unit(named)] >= LAYER[unit(m)]:
                    found.append(f"{m} names {named}")
    assert found == [], "\n".join(found)


def test_the_checker_sees_an_upward_import(tmp_path: Path) -> None:
    """The scan is not vacuous: a lazy import of the CLI from the library is found."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "def f():\n    from sfa_cache.cli.main import cli\n\nif TYPE_CHECKING:\n    import sfa_cache.train.loop\n"
    )
    assert imports_of(probe, set(modules())) == {"sfa_cache.cli.main"}
    assert LAYER[unit("sfa_cache.cli.main")] > LAYER[unit("sfa_cache.models.vivit")]
