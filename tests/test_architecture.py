"""The shape of the code holds: import layers, no import cycles, functions short enough to read.

The layers and the other import contracts live in ``pyproject.toml`` (``[tool.importlinter]``)
and are checked by import-linter, exactly as ``lint-imports`` checks them.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "transferkit"
#: longest function (``def`` line to last line, decorators excluded) that reads at once
MAX_FUNCTION_LINES = 80


def test_import_contracts_are_kept():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run(
        [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
                               "sys.exit(lint_imports_command())",
         "--config", str(ROOT / "pyproject.toml"), "--no-cache", "--no-logo"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, f"import contracts broken:\n{run.stdout}\n{run.stderr}"
    assert "0 broken" in run.stdout, run.stdout


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    comp.append(m)
                    if m == node:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def test_no_import_cycles():
    """Every import counts, also those inside functions: none may close a cycle."""
    graph = grimp.build_graph(PACKAGE, cache_dir=None)
    found = _cycles(graph)
    lines = []
    for comp in found:
        lines.append(" <-> ".join(comp))
        for a in comp:
            for b in sorted(graph.find_modules_directly_imported_by(a) & set(comp)):
                for d in graph.get_import_details(importer=a, imported=b):
                    lines.append(f"    {a}:{d['line_number']}  {d['line_contents']}")
    assert not found, "import cycles:\n" + "\n".join(lines)


def test_the_cycle_finder_finds_cycles():
    graph = grimp.ImportGraph()
    for a, b in [("p.a", "p.b"), ("p.b", "p.c"), ("p.c", "p.a"), ("p.c", "p.d"), ("p.e", "p.e")]:
        graph.add_import(importer=a, imported=b)
    assert _cycles(graph) == [["p.a", "p.b", "p.c"]]


def long_functions(root: Path = ROOT / PACKAGE,
                   limit: int = MAX_FUNCTION_LINES) -> list[tuple[str, int]]:
    """``("path:line name", lines)`` of every function under ``root`` longer than ``limit``."""
    out = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > limit:
                    out.append((f"{path.relative_to(root.parent)}:{node.lineno} {node.name}", n))
    return out


def test_functions_are_short():
    found = long_functions()
    assert not found, f"functions longer than {MAX_FUNCTION_LINES} lines:\n" + "\n".join(
        f"  {where}: {n} lines" for where, n in found)


def test_long_functions_are_found(tmp_path):
    body = "\n".join(f"        x{i} = {i}" for i in range(79))
    (tmp_path / "m.py").write_text(f"def short():\n    pass\n\n\nclass C:\n    def long(self):\n{body}\n")
    assert long_functions(tmp_path, 79) == [(f"{tmp_path.name}/m.py:6 long", 80)]
    assert long_functions(tmp_path, 80) == []
