"""The package's shape: no import cycle, no private name imported across modules, one table of
public names, and every module small enough to read (DESIGN.md's layout rules)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pgcache

PACKAGE = Path(pgcache.__file__).resolve().parent
MAX_MODULE_LINES = 600


def _modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), path


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    package = (
        base if Path(str(PACKAGE.parent / "/".join(base)) + "/__init__.py").exists() else base[:-1]
    )
    package = package[: len(package) - (node.level - 1)]
    return ".".join([*package, node.module] if node.module else package)


def _imports(module: str, path: Path) -> Iterator[tuple[str, str | None, bool]]:
    """(imported module, imported name or None, at module level and not under TYPE_CHECKING)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    type_checking: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            type_checking.update(id(child) for child in ast.walk(node))
    top_level = {id(node) for node in tree.body}
    for node in ast.walk(tree):
        eager = id(node) in top_level and id(node) not in type_checking
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None, eager
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, node)
            for alias in node.names:
                yield target, alias.name, eager


def _graph() -> dict[str, set[str]]:
    """Which pgcache modules each one imports when it is imported (module level only)."""
    names = {module for module, _ in _modules()}
    graph: dict[str, set[str]] = {}
    for module, path in _modules():
        edges: set[str] = set()
        for target, name, eager in _imports(module, path):
            if not eager or not target.startswith("pgcache"):
                continue
            submodule = f"{target}.{name}" if name else target
            edges.add(submodule if submodule in names else target)
        graph[module] = edges - {module}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for child in sorted(graph.get(node, ())):
            if state.get(child) == 1:
                return [*stack[stack.index(child) :], child]
            if child not in state and (found := visit(child)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_module_imports_itself_through_a_cycle() -> None:
    cycle = _cycle(_graph())
    assert cycle is None, " -> ".join(cycle or [])


def test_the_cycle_check_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_module_imports_a_private_name_of_another_module() -> None:
    offenders = [
        f"{module} imports {name} from {target}"
        for module, path in _modules()
        for target, name, _ in _imports(module, path)
        if name
        and name.startswith("_")
        and not name.startswith("__")
        and target.startswith("pgcache")
        and target != module
        and target != "pgcache._core"
    ]
    assert not offenders


def test_no_module_is_longer_than_one_concern_needs() -> None:
    long = [
        f"{path.relative_to(PACKAGE)}: {n}"
        for _, path in _modules()
        if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    ]
    assert not long


def test_every_public_name_in_the_table_is_importable_from_pgcache() -> None:
    for name in pgcache.__all__:
        assert getattr(pgcache, name) is not None, name


def test_the_typing_imports_name_exactly_the_public_table() -> None:
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    typed: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            typed.update(alias.asname or alias.name for alias in node.names)
    typed -= {"TYPE_CHECKING", "Any", "Final", "annotations", "__version__"}
    assert typed == set(pgcache.__all__) - {"__version__"}


def test_all_is_sorted_and_has_no_duplicates() -> None:
    assert pgcache.__all__ == sorted(set(pgcache.__all__))


def test_every_subpackage_says_what_it_is_for() -> None:
    missing = [
        str(path.relative_to(PACKAGE))
        for _, path in _modules()
        if ast.get_docstring(ast.parse(path.read_text())) is None
    ]
    assert not missing
