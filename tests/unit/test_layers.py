"""Issue 24: the direction of imports between infercmp's packages, read from docs/architecture.md.

The rules live once, in the ```layers block of docs/architecture.md: a package may import the
packages on lines below its own; packages on one line are independent of each other. On top of the
layers: no engine package imports another, an engine's descriptor imports no runtime (of its
own or any other) at module level, the measuring parent (`run`) never imports an engine's runtime,
and every import of an infercmp module sits at the head of its file (the lazy helper
`infercmp.core.lazy` keeps the heavy third-party ones cheap). Function-level imports count: an
import is an import wherever it is written.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src"
PACKAGE = SRC / "infercmp"
ARCHITECTURE = REPO / "docs" / "architecture.md"


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, dotted
    target: str  # the imported infercmp module, dotted (resolved to a module where possible)
    line: int
    top_level: bool  # at the head of the file (module level, or under `if TYPE_CHECKING:`)


def read_layers(text: str) -> list[list[str]]:
    """The ```layers block: one line per layer, top first; `|` separates independent packages."""
    block = re.search(r"```layers\n(.*?)```", text, re.S)
    assert block, "docs/architecture.md has no ```layers block"
    layers = []
    for line in block.group(1).splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            layers.append([name.strip() for name in line.split("|")])
    return layers


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _head_nodes(tree: ast.Module) -> set[int]:
    """ids of the import nodes at the head of the file: module level, or under TYPE_CHECKING."""
    head = set()
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            head.add(id(node))
        elif isinstance(node, ast.If) and _is_type_checking(node):
            head.update(
                id(n) for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom))
            )
    return head


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> Iterator[Import]:
    tree = ast.parse(path.read_text(), str(path))
    head = _head_nodes(tree)
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join(package + ([base] if base else []))
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                for alias in node.names
            ]
        else:
            continue
        for target in targets:
            if target == "infercmp" or target.startswith("infercmp."):
                yield Import(module, target, node.lineno, id(node) in head)


def all_imports() -> list[Import]:
    modules = all_modules()
    return [imp for name, path in modules.items() for imp in imports_of(name, path, modules)]


def package_of(module: str) -> str | None:
    """The stage package a module belongs to (None for the root `infercmp` package itself)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def layer_violations(imports: list[Import], layers: list[list[str]]) -> list[str]:
    rank = {name: depth for depth, line in enumerate(layers) for name in line}
    problems = []
    for imp in imports:
        source, target = package_of(imp.module), package_of(imp.target)
        if source is None or target is None or source == target:
            continue
        where = f"{imp.module}:{imp.line} imports {imp.target}"
        if source not in rank or target not in rank:
            unknown = source if source not in rank else target
            problems.append(f"{where}: package {unknown!r} is in no layer of docs/architecture.md")
        elif rank[target] < rank[source]:
            problems.append(f"{where}: {target} sits above {source}")
        elif rank[target] == rank[source]:
            problems.append(f"{where}: {source} and {target} are independent (one layer)")
    return problems


ENGINE_PACKAGE = re.compile(r"^infercmp\.engines\.([a-z0-9_]+)(\.|$)")
ENGINE_SHARED = {"base", "descriptor", "registry"}  # modules of infercmp.engines itself


def _engine(module: str) -> str | None:
    match = ENGINE_PACKAGE.match(module)
    return match.group(1) if match and match.group(1) not in ENGINE_SHARED else None


def engine_violations(imports: list[Import]) -> list[str]:
    problems = []
    for imp in imports:
        where = f"{imp.module}:{imp.line} imports {imp.target}"
        own, other = _engine(imp.module), _engine(imp.target)
        if own and other and own != other:
            problems.append(f"{where}: one engine imports another")
        if imp.module.endswith(".descriptor") and imp.top_level and ".runtime" in imp.target:
            problems.append(f"{where}: a descriptor imports a runtime at module level")
        if package_of(imp.module) == "run" and other and imp.target.endswith(".runtime"):
            problems.append(f"{where}: run/ reaches an engine's runtime (only the worker may)")
    return problems


def function_level(imports: list[Import]) -> list[str]:
    return [
        f"{imp.module}:{imp.line} imports {imp.target} inside a function"
        for imp in imports
        if not imp.top_level
    ]


def cycles(imports: list[Import]) -> list[list[str]]:
    """Cycles among infercmp's modules (package __init__ edges included), by Tarjan's SCC."""
    graph: dict[str, set[str]] = {}
    for imp in imports:
        graph.setdefault(imp.module, set()).add(imp.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


# --- the rules hold on the tree --------------------------------------------------------------


@pytest.fixture(scope="module")
def imports() -> list[Import]:
    return all_imports()


@pytest.fixture(scope="module")
def layers() -> list[list[str]]:
    return read_layers(ARCHITECTURE.read_text())


def test_the_tree_holds_only_packages():
    loose = sorted(
        p.name for p in PACKAGE.glob("*.py") if p.name not in {"__init__.py", "__main__.py"}
    )
    assert loose == []


def test_every_package_is_in_a_layer(layers):
    named = {name for line in layers for name in line}
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert packages - named == set(), "add the package to the ```layers block"
    assert named - packages == set(), "the ```layers block names a package that does not exist"


def test_imports_point_down_the_layers(imports, layers):
    assert layer_violations(imports, layers) == []


def test_engines_stay_apart(imports):
    assert engine_violations(imports) == []


def test_no_infercmp_import_inside_a_function(imports):
    assert function_level(imports) == []


def test_no_import_cycles(imports):
    assert cycles(imports) == []


# --- the rules fail where they should ---------------------------------------------------------

RULES = read_layers(
    """```layers
cli
run | worker
engines
core
```"""
)


def _imp(module: str, target: str, top_level: bool = True) -> Import:
    return Import(module, target, 1, top_level)


def test_an_upward_import_is_refused():
    assert layer_violations([_imp("infercmp.core.stats", "infercmp.cli.options")], RULES) == [
        "infercmp.core.stats:1 imports infercmp.cli.options: cli sits above core"
    ]


def test_siblings_on_one_line_are_independent():
    problems = layer_violations([_imp("infercmp.run.bench", "infercmp.worker.run")], RULES)
    assert problems == [
        "infercmp.run.bench:1 imports infercmp.worker.run: run and worker are independent "
        "(one layer)"
    ]


def test_a_downward_import_passes():
    assert layer_violations([_imp("infercmp.cli.bench", "infercmp.engines.registry")], RULES) == []


def test_a_package_outside_the_layers_is_named():
    (problem,) = layer_violations([_imp("infercmp.newstage.x", "infercmp.core.errors")], RULES)
    assert "package 'newstage' is in no layer" in problem


def test_one_engine_importing_another_is_refused():
    (problem,) = engine_violations(
        [_imp("infercmp.engines.onnxruntime.runtime", "infercmp.engines.tensorrt.build")]
    )
    assert problem.endswith("one engine imports another")
    assert (
        engine_violations([_imp("infercmp.engines.pytorch.runtime", "infercmp.engines.base")]) == []
    )


def test_a_descriptor_importing_a_runtime_is_refused():
    (problem,) = engine_violations(
        [_imp("infercmp.engines.pytorch.descriptor", "infercmp.engines.pytorch.runtime")]
    )
    assert "descriptor imports a runtime" in problem


def test_run_reaching_a_runtime_is_refused():
    (problem,) = engine_violations([_imp("infercmp.run.bench", "infercmp.engines.pytorch.runtime")])
    assert "only the worker may" in problem


def test_a_function_level_import_is_found(tmp_path):
    source = "import os\n\ndef f():\n    from infercmp.core import stats\n    return stats\n"
    path = tmp_path / "mod.py"
    path.write_text(source)
    found = list(imports_of("infercmp.run.mod", path, {}))
    assert function_level(found) == ["infercmp.run.mod:4 imports infercmp.core inside a function"]


def test_a_type_checking_import_is_at_the_head(tmp_path):
    path = tmp_path / "mod.py"
    path.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import infercmp.core.stats\n"
    )
    assert function_level(list(imports_of("infercmp.run.mod", path, {}))) == []


def test_a_cycle_is_found():
    found = cycles(
        [
            _imp("infercmp.a.x", "infercmp.b.y"),
            _imp("infercmp.b.y", "infercmp.a.x", top_level=False),
        ]
    )
    assert found == [["infercmp.a.x", "infercmp.b.y"]]
