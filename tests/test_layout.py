"""The package's layout holds: each stage imports only from the stages before it in the data
flow, no import circle exists anywhere, and every package folder is installed. Imports are read
with ast from the source files (function-level imports included), nothing is imported."""

from __future__ import annotations

import ast
import configparser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Rank of each part of the package; a module may import only modules of its own rank or lower.
# Rank 0 is shared ground; the face of the package (evoproxy/__init__.py, which loads the public
# API from every stage) stands above all, so no module may import it.
FOUNDATION = (
    "errors",
    "params",
    "table",
    "hashing",
    "version",
    "reference",
    "locking",
    "files",
    "pace",
    "primitives",
    "search_spaces",
)
STAGES = ("model", "quant", "stats", "proxy", "bench", "evolve", "allocation", "allocators", "cli")


def _modules() -> dict[str, Path]:
    """Module name → source file, for every module of the installed package."""
    found = {}
    for path in (ROOT / "evoproxy").rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _imports(name: str) -> set[str]:
    """The package modules that module `name` imports, anywhere in its file. `from P import x`
    counts as importing P.x where that is a module, else P."""
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    base = name.split(".") if _is_package(name) else name.split(".")[:-1]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = (
                ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else []))
                if node.level
                else node.module
            )
            targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in MODULES else module for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:  # `import evoproxy.model.data as d` names a module too
                target = target.rpartition(".")[0]
            if target:
                out.add(target)
    return out - {name}


GRAPH = {name: _imports(name) for name in MODULES}


def _rank(name: str) -> int:
    if name == "evoproxy":
        return len(STAGES) + 1
    part = name.split(".")[1]
    if part in FOUNDATION:
        return 0
    assert part in STAGES, f"{name} belongs to no stage: add its folder to STAGES or FOUNDATION"
    return STAGES.index(part) + 1


def against_the_flow(graph: dict[str, set[str]]) -> list[str]:
    """The imports of `graph` from a module to one of a later stage."""
    return sorted(f"{a} imports {b}" for a, targets in graph.items() for b in targets if _rank(b) > _rank(a))


def find_circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of `graph` (its modules in order, the first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        path.append(name)
        for target in sorted(graph.get(name, ())):
            if state.get(target) == 1:
                return path[path.index(target) :] + [target]
            if target not in state and (circle := visit(target)):
                return circle
        path.pop()
        state[name] = 2
        return None

    for name in sorted(graph):
        if name not in state and (circle := visit(name)):
            return circle
    return None


def test_the_graph_reads_the_three_import_forms():
    assert "evoproxy.model" in GRAPH["evoproxy.stats.compute"]  # from ..model import ...
    assert "evoproxy.primitives" in GRAPH["evoproxy.proxy.genome"]  # from .. import primitives
    assert "evoproxy.proxy.genome" in GRAPH["evoproxy.proxy.registry"]  # from .genome import Genome


def test_the_checks_catch_a_backward_import_and_a_circle():
    assert against_the_flow({"evoproxy.model.data": {"evoproxy.proxy.genome"}, "evoproxy.cli": {"evoproxy.model"}}) == [
        "evoproxy.model.data imports evoproxy.proxy.genome"
    ]
    assert against_the_flow({"evoproxy.proxy.genome": {"evoproxy"}}) == ["evoproxy.proxy.genome imports evoproxy"]
    assert find_circle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_circle({"a": {"b"}, "b": {"c"}, "d": {"a", "c"}}) is None


def test_each_stage_imports_only_from_the_stages_before_it():
    wrong = against_the_flow(GRAPH)
    assert not wrong, "imports against the data flow (" + " → ".join(STAGES) + "):\n" + "\n".join(wrong)


def test_no_import_circle():
    circle = find_circle(GRAPH)
    assert circle is None, "import circle: " + " → ".join(circle)


def test_every_package_folder_is_installed():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    listed = set(cfg["options"]["packages"].split())
    packages = {name for name in MODULES if _is_package(name)}
    assert packages <= listed, f"setup.cfg [options] packages lacks {sorted(packages - listed)}"


MAX_MODULE_LINES = 350  # a module a reader takes in at once; past that it holds more than one job


def test_every_module_is_short_enough_to_read_at_once():
    long = sorted(
        f"{name}: {n} lines"
        for name, path in MODULES.items()
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    )
    assert not long, f"modules over {MAX_MODULE_LINES} lines (split them by job):\n" + "\n".join(long)
