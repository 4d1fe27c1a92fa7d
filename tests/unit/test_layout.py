"""The product's code stays walkable: imports go one way (no circle among its modules) and no
module grows past 400 lines."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("app", "agents", "tables", "views", "dashboards")
MAX_LINES = 400


def modules() -> dict[str, Path]:
    """Module name -> file, for every module of the product's packages."""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def imports(path: Path, name: str, known: set[str]) -> set[str]:
    """The product modules ``name`` imports (anywhere in the file, except under
    ``if TYPE_CHECKING:``), resolved to the longest known module name."""
    tree = ast.parse(path.read_text())
    skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
               and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            targets.update(f"{base}.{alias.name}" for alias in node.names)
            targets.add(base)
    resolved = set()
    for target in targets:
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target and target != name:
            resolved.add(target)
    return resolved


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph``, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_circle_among_the_products_modules() -> None:
    mods = modules()
    # a package's __init__ is imported with any of its modules: only explicit imports count
    graph = {name: {t for t in imports(path, name, set(mods))
                    if not name.startswith(t + ".") and not t.startswith(name + ".")}
             for name, path in mods.items()}
    assert graph["agents.processor"], "the import graph is empty: the parser is broken"
    assert cycle(graph) is None, f"import circle: {' -> '.join(cycle(graph) or [])}"


def test_the_cycle_finder_finds_one() -> None:
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set()}) is None


def test_no_product_file_over_400_lines() -> None:
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines())
             for p in modules().values()}
    assert len(sizes) > 30
    assert {f: n for f, n in sizes.items() if n > MAX_LINES} == {}


def test_nothing_refers_to_a_file_outside_the_repository() -> None:
    """Whoever clones the repository has only the repository: the contract is ``schemas/`` and
    ``docs/contract.md``, not a design brief next to it."""
    outside = ("../" + "shared", "DESIGN" + ".md")  # split, so this file does not match itself
    suffixes = {".py", ".md", ".cfg", ".toml", ".yaml", ".yml", ".sql", ".sh", ".json"}
    found = []
    for path in ROOT.rglob("*"):
        parts = path.relative_to(ROOT).parts
        if (path.suffix not in suffixes and path.name not in ("Makefile", "Dockerfile")) \
                or not path.is_file() or parts[0].startswith(".") \
                or parts[0] in ("var", "test-artifacts", "node_modules") \
                or parts[:2] == ("bench", "results") or parts[:2] == ("dbt", "target"):
            continue
        text = path.read_text(errors="replace")
        found += [str(path.relative_to(ROOT)) for needle in outside if needle in text]
    assert found == []
