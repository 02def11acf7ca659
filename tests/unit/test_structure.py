"""
The house's shape, guarded: no import cycle among the core's modules, no
module over 600 lines and no function over 80 (generated code aside).

``docs/architecture.md`` explains the layout these rules keep; a failure here
names the cycle or the file and function, and the fix is to move code to the
part that owns it, not to raise the limit.
"""

from __future__ import annotations

import ast
import graphlib
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "src" / "mdgate"
SOURCES = [
    CORE,
    ROOT / "plugins" / "mdgate-yahoo" / "src",
    ROOT / "plugins" / "mdgate-dhan" / "src",
    ROOT / "tests" / "example_provider" / "src",
]
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80


def _generated(path: Path) -> bool:
    return path.name.endswith("_pb2.py")  # protoc output


def _python_files() -> Iterator[Path]:
    for root in SOURCES:
        for path in sorted(root.rglob("*.py")):
            if not _generated(path):
                yield path


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(CORE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(tree: ast.AST, package: str) -> Iterator[str]:
    """
    Every module a module imports, wherever the import stands.

    ``if TYPE_CHECKING:`` imports and imports inside functions count too: a
    module that names another only for its types still depends on it, and a
    cycle hidden behind either is still a cycle for the reader.
    """
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the importing package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            yield base
            yield from (f"{base}.{a.name}" for a in node.names)  # `from pkg import module`
        stack.extend(ast.iter_child_nodes(node))


def core_import_graph() -> dict[str, set[str]]:
    """Module -> the core modules it imports (parent packages imported implicitly left out)."""
    files = {_module_name(p): p for p in sorted(CORE.rglob("*.py")) if not _generated(p)}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps = {m for m in _imports(ast.parse(path.read_text(encoding="utf-8")), package) if m in files}
        graph[name] = deps - {name}
    return graph


def test_no_import_cycle_among_core_modules() -> None:
    sorter = graphlib.TopologicalSorter(core_import_graph())
    try:
        sorter.prepare()
    except graphlib.CycleError as exc:
        pytest.fail(f"import cycle among core modules: {' -> '.join(exc.args[1])}")


def test_the_cycle_check_sees_a_cycle(tmp_path: Path) -> None:
    """The checker itself: two modules importing each other is reported."""
    graph = {"a": {"b"}, "b": {"a"}}
    with pytest.raises(graphlib.CycleError):
        graphlib.TopologicalSorter(graph).prepare()
    tree = ast.parse("from mdgate._x import y\nif TYPE_CHECKING:\n    import mdgate._z\nfrom . import w\n")
    expected = {"mdgate._x", "mdgate._x.y", "mdgate._z", "mdgate._p", "mdgate._p.w"}
    assert set(_imports(tree, "mdgate._p")) == expected


def test_no_module_over_600_lines() -> None:
    too_long = {
        str(p.relative_to(ROOT)): n
        for p in _python_files()
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert too_long == {}, "split these modules by concern (docs/architecture.md)"


def test_no_function_over_80_lines() -> None:
    too_long: dict[str, int] = {}
    for path in _python_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long[f"{path.relative_to(ROOT)}:{node.name}"] = length
    assert too_long == {}, "split these functions (a helper per case)"
