"""deploy/ and analysis/ as the style guide wants them: no import circle through deploy (function-
level imports included), files under 600 lines, every ConfigError with a fix."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "cluster_sim"
OWN = ("deploy", "analysis")


def _module(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, known: set[str]) -> set[str]:
    """Every cluster_sim module ``path`` imports, anywhere in the file (``from pkg import mod`` counts mod)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in known}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module in known:
                out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in known}
    return out


def test_no_import_circle():
    files = {_module(p): p for p in PKG.rglob("*.py")}
    known = set(files)
    graph = {m: _imports(p, known) - {m} for m, p in files.items()}
    # a package's __init__ runs before any of its modules: an edge to a.b.c is an edge to a.b too
    for m, deps in graph.items():
        graph[m] = deps | {".".join(d.split(".")[:i]) for d in deps for i in range(2, len(d.split(".")))
                           if ".".join(d.split(".")[:i]) in known and not m.startswith(".".join(d.split(".")[:i]))}
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                cycle = path[path.index(d):] + [d] if d in path else [m, d]
                if any(c.startswith("cluster_sim.deploy") for c in cycle):
                    pytest.fail("import circle: " + " -> ".join(cycle))
            elif d not in state:
                visit(d, path + [d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


@pytest.mark.parametrize("part", OWN)
def test_files_under_600_lines(part):
    long = {str(p.relative_to(ROOT)): n for p in (PKG / part).rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) >= 600}
    assert not long, long
    bench = len((ROOT / "benchmarks" / "scaling.py").read_text().splitlines())
    assert bench < 600


@pytest.mark.parametrize("part", OWN)
def test_every_config_error_names_a_fix(part):
    missing = []
    for p in (PKG / part).rglob("*.py"):
        for n in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(n, ast.Call) and getattr(n.func, "id", getattr(n.func, "attr", None)) == "ConfigError":
                fix = n.args[3] if len(n.args) > 3 else next((k.value for k in n.keywords if k.arg == "fix"), None)
                if fix is None or (isinstance(fix, ast.Constant) and not fix.value):
                    missing.append(f"{p.relative_to(ROOT)}:{n.lineno}")
    assert not missing, missing
