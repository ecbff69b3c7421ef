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


# -- dispatch by contract, not by type --------------------------------------------------------------
def _concrete_model_classes() -> dict[str, str]:
    """Registered model classes and their subclasses in the package: class name -> its module."""
    from pyro_vae.models import MODELS

    found: dict[str, str] = {}
    todo = [MODELS.get(name) for name in MODELS.names()]
    while todo:
        cls = todo.pop()
        if cls.__module__.startswith("pyro_vae.") and cls.__name__ not in found:
            found[cls.__name__] = cls.__module__
            todo.extend(cls.__subclasses__())
    return found


def _names_in(node: ast.AST) -> set[str]:
    return {
        n.id if isinstance(n, ast.Name) else n.attr
        for n in ast.walk(node)
        if isinstance(n, (ast.Name, ast.Attribute))
    }


def _mentions_class_name(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Attribute) and n.attr == "__name__" for n in ast.walk(node))


def type_dispatch(root: Path = PACKAGE, concrete: dict[str, str] | None = None) -> list[str]:
    """``module:line`` of every ``isinstance``/``issubclass`` on a concrete model class outside that
    class's own module, and of every test of a class's ``__name__`` (a comparison, ``in``, or
    ``startswith``/``endswith``) anywhere: dispatch that belongs in a contract."""
    concrete = _concrete_model_classes() if concrete is None else concrete
    out = []
    for path in sorted(root.rglob("*.py")):
        module = _module_name(path, root)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("isinstance", "issubclass")
                and len(node.args) == 2
            ):
                for name in _names_in(node.args[1]) & set(concrete):
                    if concrete[name] != module:
                        out.append(f"{module}:{node.lineno} {node.func.id}(..., {name})")
            if isinstance(node, ast.Compare) and _mentions_class_name(node):
                out.append(f"{module}:{node.lineno} compares a class name")
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("startswith", "endswith")
                and _mentions_class_name(node.func.value)
            ):
                out.append(f"{module}:{node.lineno} tests a class name")
    return out


#: contract methods, which code calls on the contract rather than looking them up as optional hooks
CONTRACT_METHODS = ("vamp_component", "set_epoch", "continue_at", "kl_weight")


def getattr_hooks(root: Path = PACKAGE) -> list[str]:
    """``module:line`` of every ``getattr``/``hasattr`` of a contract method by name."""
    out = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("getattr", "hasattr")
                and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant)
                and node.args[1].value in CONTRACT_METHODS
            ):
                out.append(f"{_module_name(path, root)}:{node.lineno} {node.args[1].value}")
    return out


def test_the_scan_finds_type_dispatch_and_hooks(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "m.py").write_text("class VAE: pass\ndef f(x): return isinstance(x, VAE)\n")
    (pkg / "plots.py").write_text(
        "from .m import VAE\n"
        "def f(x, o):\n"
        "    a = isinstance(x, (int, VAE))\n"
        "    b = 'Jit' in type(o).__name__\n"
        "    c = type(o).__name__.startswith('Jit')\n"
        "    d = getattr(o, 'set_epoch', None)\n"
        "    return f'{type(o).__name__}'\n"
    )
    found = type_dispatch(pkg, {"VAE": "pkg.m"})
    assert [f.split(" ")[0] for f in found] == ["pkg.plots:3", "pkg.plots:4", "pkg.plots:5"]
    assert getattr_hooks(pkg) == ["pkg.plots:6 set_epoch"]


def test_no_dispatch_on_concrete_model_classes_or_class_names():
    assert type_dispatch() == []


def test_contract_methods_are_not_looked_up_as_optional_hooks():
    assert getattr_hooks() == []


def test_config_is_a_leaf_and_the_build_layer_knows_the_parts():
    graph = import_graph()
    assert graph["pyro_vae.config"] <= {"pyro_vae.errors", "pyro_vae.registry"}
    # the parts never import the layer that composes them
    parts = ("models", "guides", "priors", "likelihoods", "objectives", "data", "engine", "loggers")
    importers = {m for m, targets in graph.items() if "pyro_vae.build" in targets}
    assert importers and not {
        m for m in importers if m.split(".")[1] in (*parts, "plan", "config", "evaluate", "kernel")
    }, importers
