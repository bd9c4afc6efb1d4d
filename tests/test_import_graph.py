"""The import graph of the project's packages, read with `ast` from the source files (nothing imported):
no import circle, counting imports made inside functions too (a lazy import hides a circle, it does not
remove it; only `if TYPE_CHECKING:` blocks are left out), and lower layers never import higher ones."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("kebr_data", "kebr_model")
#: (importer prefix, imported prefixes it must not reach): data below evaluation below the loop, sweeps and CLI
LAYERS = [
    ("kebr_data", ("kebr_model",)),
    ("kebr_data.settings", ("kebr_data.stages", "kebr_data.asr_engines", "kebr_data.config", "kebr_data.pipeline",
                            "kebr_data.cli")),
    ("kebr_data.asr_engines", ("kebr_data.stages", "kebr_data.config", "kebr_data.pipeline", "kebr_data.cli")),
    ("kebr_data.stages", ("kebr_data.config", "kebr_data.pipeline", "kebr_data.cli")),
    ("kebr_data.pipeline", ("kebr_data.cli",)),
    ("kebr_model.data", ("kebr_model.evaluation", "kebr_model.training.train", "kebr_model.training.run", "kebr_model.sweeps",
                         "kebr_model.cli")),
    ("kebr_model.evaluation", ("kebr_model.training.train", "kebr_model.training.run", "kebr_model.sweeps", "kebr_model.cli")),
    ("kebr_model.training.run", ("kebr_model.sweeps", "kebr_model.cli")),
    ("kebr_model.sweeps", ("kebr_model.cli",)),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (getattr(test, "id", None) == "TYPE_CHECKING"
                                         or getattr(test, "attr", None) == "TYPE_CHECKING")


def _imports(tree: ast.AST):
    """Every Import / ImportFrom node, outside `if TYPE_CHECKING:` blocks."""
    for node in ast.iter_child_nodes(tree):
        if _type_checking(node):
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        yield from _imports(node)


def imported(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The project modules that module `name` (at `path`) imports."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in _imports(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            base = f"{base}.{node.module}" if node.level and node.module else (base if node.level else node.module)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        found |= {t for t in targets if t in known and t != name}
    return found


@functools.lru_cache(maxsize=1)
def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imported(name, path, known) for name, path in known.items()}


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_circle_finder_finds_a_planted_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("package", ["kebr_model", "kebr_data"])
def test_no_import_circle(package):
    edges = graph()
    inside = {m: {t for t in ts if t.split(".")[0] == package} for m, ts in edges.items() if m.split(".")[0] == package}
    assert circles(inside) == []


def test_lower_layers_never_import_higher_ones():
    edges = graph()
    wrong = [f"{m} -> {t}" for m, ts in edges.items() for t in sorted(ts) for low, high in LAYERS
             if (m == low or m.startswith(low + ".")) and any(t == h or t.startswith(h + ".") for h in high)]
    assert wrong == []
