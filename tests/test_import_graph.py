"""No import circle in kebr_data or kebr_model: every `import` in their source files (function-level ones
included) is read with `ast`, and the module graph must be acyclic, so lower layers never import higher ones.

An import of `a.b.c` also runs the `__init__` of each package above it that does not contain the importing
module (importing `kebr_data.stages.base` from `kebr_data.asr_engines` runs `kebr_data/stages/__init__.py`,
which imports every stage), so those packages count as imported too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(node: ast.AST, module: str, is_package: bool, known: set[str]) -> list[str]:
    """The modules of `known` that one import statement of `module` names."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    assert isinstance(node, ast.ImportFrom)
    if node.level:
        base = module.split(".")
        base = base[:len(base) - node.level + (1 if is_package else 0)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    return [target] + [f"{target}.{alias.name}" for alias in node.names if f"{target}.{alias.name}" in known]


def graph(packages: tuple[str, ...]) -> dict[str, set[str]]:
    """module -> the project modules it imports (with the packages above them that it does not sit in)."""
    files = {module_name(p): p for pkg in packages for p in (ROOT / pkg).rglob("*.py")}
    known = set(files)
    edges: dict[str, set[str]] = {}
    for module, path in files.items():
        out: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for target in imported(node, module, path.name == "__init__.py", known):
                parts = target.split(".")
                for i in range(1, len(parts) + 1):
                    name = ".".join(parts[:i])
                    inside = module == name or module.startswith(name + ".")
                    if name in known and name != module and (i == len(parts) or not inside):
                        out.add(name)
        edges[module] = out
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
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
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def describe(found: list[list[str]], edges: dict[str, set[str]]) -> str:
    lines = []
    for component in found:
        members = set(component)
        lines.append(f"{len(component)} modules in a circle:")
        lines += [f"  {m} -> {', '.join(sorted(edges[m] & members))}" for m in component]
    return "\n".join(lines)


def test_the_graph_sees_a_circle():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(edges) == [["a", "b", "c"]]


def test_a_cross_package_import_runs_the_package_init():
    edges = graph(("kebr_data",))
    assert "kebr_data.storage" in edges["kebr_data.pipeline.shard_task"]  # via kebr_data.storage.store
    assert "kebr_data.stages" not in edges["kebr_data.stages.base"]  # a module's own package is already running


def test_kebr_data_has_no_import_circle():
    edges = graph(("kebr_data",))
    found = cycles(edges)
    print(describe(found, edges))
    assert not found, describe(found, edges)


@pytest.mark.xfail(strict=False, reason="kebr_model's circles (sweep <-> cli, ...) are the 26reader branch's: "
                                        "the lead removes this mark at merge")
def test_kebr_model_has_no_import_circle():
    edges = graph(("kebr_data", "kebr_model"))
    found = cycles(edges)
    print(describe(found, edges))
    assert not found, describe(found, edges)
