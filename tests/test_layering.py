"""The package's layering: its import graph has no cycle longer than two modules, and nothing
dispatches on a concrete model class or tests a class's name outside that class's own module.

The graph is read from the source with :mod:`ast`, so that imports inside functions count (they
are cycles Python merely postpones) and imports under ``if TYPE_CHECKING:`` do not (they never run).
Run as a script to print the largest strongly connected component: ``python tests/test_layering.py``.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "pyro_vae"


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, module: str, is_package: bool) -> set[str | tuple[str, str]]:
    """What ``module`` imports, at any depth of its code, skipping ``if TYPE_CHECKING:``: module
    names, and ``(module, module.name)`` for ``from module import name``."""
    found: set[str | tuple[str, str]] = set()
    base = module.split(".") if is_package else module.split(".")[:-1]

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base[: len(base) - (node.level - 1)]
                target = ".".join(anchor + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # ``from . import evaluate`` imports the module pyro_vae.evaluate, ``from .models import
            # MODELS`` the package pyro_vae.models
            found.update((target, f"{target}.{alias.name}") for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """module -> the package's modules it imports.

    As import-linter (grimp) counts them: ``from a import b`` is an import of the module ``a.b``
    where there is one, else of ``a``; the parent packages Python also runs are not edges (every
    module would otherwise be in a cycle with a package ``__init__`` that re-exports it).
    """
    sources = {_module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for name, path in sources.items():
        tree = ast.parse(path.read_text(), str(path))
        edges = set()
        for target in _imports(tree, name, path.name == "__init__.py"):
            if isinstance(target, tuple):
                target = target[1] if target[1] in sources else target[0]
            if target in sources and target != name:
                edges.add(target)
        graph[name] = edges
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's strongly connected components of ``graph``."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[set[str]] = []
    counter = [0]
    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))

    def connect(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                connect(w)
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
            out.append(component)

    for v in graph:
        if v not in index:
            connect(v)
    return out


def largest_cycle(root: Path = PACKAGE) -> set[str]:
    return max(strongly_connected(import_graph(root)), key=len)


def test_strongly_connected_finds_a_known_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert max(strongly_connected(graph), key=len) == {"a", "b", "c"}


def test_function_level_imports_count_and_type_checking_does_not(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from . import b\n")
    (pkg / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .c import C\nfrom .a import f\n"
    )
    (pkg / "c.py").write_text("from .b import f\n")
    assert largest_cycle(pkg) == {"pkg.a", "pkg.b"}


def test_the_package_has_no_import_cycle_longer_than_two_modules():
    cycle = largest_cycle()
    assert len(cycle) <= 2, f"an import cycle of {len(cycle)} modules: {sorted(cycle)}"


if __name__ == "__main__":
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else PACKAGE
    cycle = largest_cycle(root)
    print(f"largest import cycle of {root}: {len(cycle)} modules")
    for name in sorted(cycle):
        print("  ", name)
