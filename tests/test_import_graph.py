"""The modules of drigm/ form no import cycle, counting imports inside functions (which hide cycles from Python)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def module_graph(package: Path) -> dict[str, set[str]]:
    """Module name -> the package's modules it imports anywhere in its source (top level or inside functions)."""
    files = {}
    for f in package.rglob("*.py"):
        parts = f.relative_to(package.parent).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    graph: dict[str, set[str]] = {m: set() for m in files}
    for mod, f in files.items():
        is_pkg = f.name == "__init__.py"
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the module's package, up level - 1 packages
                    anchor = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join([*anchor, *([base] if base else [])])
                for alias in node.names:
                    target = f"{base}.{alias.name}" if f"{base}.{alias.name}" in files else base
                    if target in files and target != mod:
                        graph[mod].add(target)
            elif isinstance(node, ast.Import):
                graph[mod] |= {a.name for a in node.names if a.name in files and a.name != mod}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_drigm_has_no_import_cycle() -> None:
    graph = module_graph(ROOT / "drigm")
    assert "drigm.learner" in graph and "drigm.reward_model" in graph["drigm.learner"]
    assert cycles(graph) == [], "import cycles (counting imports inside functions)"


def test_the_cycle_finder_finds_a_cycle_through_a_function_level_import(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.b import f\n")
    (pkg / "b.py").write_text("def f():\n    from pkg import c\n")
    (pkg / "c.py").write_text("from . import a\n")
    assert cycles(module_graph(pkg)) == [["pkg.a", "pkg.b", "pkg.c"]]


def test_reference_and_proofs_check_never_import_upward() -> None:
    """The dependency direction is one-way: reference <- proofs_check and reference <- drigm."""
    for package, banned in (("reference", ("drigm", "proofs_check", "torch")), ("proofs_check", ("drigm", "torch"))):
        for f in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(f.read_text())):
                names = (
                    [node.module or ""]
                    if isinstance(node, ast.ImportFrom) and not node.level
                    else [a.name for a in node.names]
                    if isinstance(node, ast.Import)
                    else []
                )
                for name in names:
                    assert name.split(".")[0] not in banned, f"{f.relative_to(ROOT)} imports {name}"


MAX_MODULE_LINES = 750


def test_no_module_of_drigm_outside_envs_is_over_750_lines() -> None:
    over = {
        str(f.relative_to(ROOT)): len(f.read_text().splitlines())
        for f in (ROOT / "drigm").rglob("*.py")
        if "envs" not in f.relative_to(ROOT / "drigm").parts and len(f.read_text().splitlines()) > MAX_MODULE_LINES
    }
    assert not over, over
