"""The layers of docs/architecture.md are the code's: every import goes down or stays level, and none goes round.

The table is read from the document, so the picture and the code cannot
drift apart. Imports are read from the source (ast), all of them: at the top,
inside functions and under ``TYPE_CHECKING``. And the config layer is checked
for what it must not need: ``import greenmon.config`` in a fresh interpreter
loads no gevent, requests, urllib3 or greenmon network module.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "greenmon"
ARCHITECTURE = REPO / "docs" / "architecture.md"
NETWORK_LIBRARIES = ("gevent", "requests", "urllib3")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def documented_layers() -> list[tuple[str, list[str]]]:
    """(layer, its modules) from the table under "## Layers", lowest first."""
    text = ARCHITECTURE.read_text(encoding="utf-8")
    section = text.split("## Layers", 1)[1].split("\n## ", 1)[0]
    layers = []
    for row in section.splitlines():
        cells = [cell.strip() for cell in row.strip().strip("|").split("|")]
        if len(cells) < 3 or cells[0] in ("layer", "") or set(cells[0]) <= set("-"):
            continue
        names = re.findall(r"`([\w/]+)`", cells[1])
        layers.append((cells[0], [module_name(PACKAGE / (name + ".py")) for name in names]))
    return layers


def imports_of(module: str) -> set[str]:
    """The greenmon modules ``module`` imports, wherever the import statement stands."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in MODULES:   # greenmon.x.Name -> greenmon.x
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


GRAPH = {module: imports_of(module) for module in MODULES}


def cycles_in(graph: dict[str, set[str]]) -> list[str]:
    """Each import circle found, as "a -> b -> a"."""
    cycles, done = [], set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            cycles.append(" -> ".join(path[path.index(module):] + [module]))
            return
        if module in done:
            return
        for other in sorted(graph[module]):
            visit(other, path + [module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])
    return cycles


def upward(graph: dict[str, set[str]], layers: list[tuple[str, list[str]]]) -> list[str]:
    rank = {module: index for index, (_, modules) in enumerate(layers) for module in modules}
    return [f"{module} ({layers[rank[module]][0]}) imports {other} ({layers[rank[other]][0]})"
            for module, imported in sorted(graph.items()) for other in sorted(imported)
            if rank[other] > rank[module]]


def test_every_module_sits_on_exactly_one_layer():
    layers = documented_layers()
    assert [layer for layer, _ in layers] == ["base", "model", "config", "network", "engine",
                                              "outputs", "app"]
    placed = [module for _, modules in layers for module in modules]
    assert len(placed) == len(set(placed)), "a module is named twice"
    assert set(placed) - set(MODULES) == set(), "the table names a module that does not exist"
    assert set(MODULES) - set(placed) == set(), "a module is on no layer"


def test_no_import_goes_up_a_layer():
    assert upward(GRAPH, documented_layers()) == []


def test_no_imports_go_round_in_a_circle():
    assert cycles_in(GRAPH) == []


def test_the_rules_see_a_breach():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert cycles_in(graph) == ["a -> b -> c -> a"]
    assert upward({"low": {"high"}, "high": set()}, [("base", ["low"]), ("app", ["high"])]) == \
        ["low (base) imports high (app)"]


def test_the_check_finds_what_it_looks_for():
    """The readers above are not blind: known imports of each kind are seen."""
    assert "greenmon.transport" in GRAPH["greenmon.check"]                 # at the top
    assert "greenmon.workers.parent" in GRAPH["greenmon.cli"]              # inside a function
    assert "greenmon.engine" in GRAPH["greenmon.scheduler"]                # under TYPE_CHECKING
    assert "greenmon.discovery.values" in GRAPH["greenmon.discovery.sources"]


@pytest.mark.parametrize("module", ["greenmon.config", "greenmon.targets", "greenmon.discovery.sources"])
def test_parsing_a_config_loads_no_network_module(module):
    probe = ("import json, sys; before = set(sys.modules); import " + module +
             "; print(json.dumps(sorted(set(sys.modules) - before)))")
    loaded = json.loads(subprocess.run([sys.executable, "-c", probe], cwd=REPO, check=True,
                                       capture_output=True, text=True, timeout=60).stdout)
    rank = {module: index for index, (_, modules) in enumerate(documented_layers())
            for module in modules}
    network = [name for name in loaded if name.split(".")[0] in NETWORK_LIBRARIES
               or (name in rank and rank[name] > rank["greenmon.config"])]
    assert network == [], network
    assert module in loaded   # the probe did import it
