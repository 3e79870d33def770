"""The layout is the architecture: chain addons directly under addons/, libraries in named rooms,
no import cycles, and no addon importing another addon's module."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("addons", "reports")
CHAIN_ADDONS = {"gateway", "identity", "classify", "policy", "approvals", "forward", "masking", "audit"}
ROOMS = {"core", "config", "auth", "request", "phi", "holds", "ledger", "runtime", "cli"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """Every project module `path` imports, at any depth in the file (lazy imports count too)."""
    found: set[str] = set()
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            names = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for name in names:
            # The longest project module the name starts with (a symbol import resolves to its module).
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != me and name not in PACKAGES:
                found.add(name)
    return found


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node except those under `if TYPE_CHECKING:` (annotations only, never executed)."""
    out: list[ast.AST] = []
    todo = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            todo.extend(node.orelse)
            continue
        out.append(node)
        todo.extend(ast.iter_child_nodes(node))
    return out


def graph() -> dict[str, set[str]]:
    modules = all_modules()
    return {m: imports_of(p, modules) for m, p in modules.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_the_graph_finds_what_it_should() -> None:
    g = graph()
    assert "addons.core.context" in g["addons.policy"]
    assert "addons.phi.detect.detector" in g["addons.phi.operators"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles() -> None:
    assert cycles(graph()) == []


def test_no_addon_imports_another_addon() -> None:
    addon_modules = {f"addons.{n}" for n in CHAIN_ADDONS}
    bad = {m: sorted(deps & addon_modules) for m, deps in graph().items()
           if m != "addons.chain" and deps & addon_modules}
    assert bad == {}, f"only addons/chain.py may import chain addons: {bad}"


def test_addons_folder_holds_only_chain_addons_and_rooms() -> None:
    top = {p.stem for p in (ROOT / "addons").glob("*.py")} - {"__init__"}
    assert top == CHAIN_ADDONS | {"chain"}
    rooms = {p.name for p in (ROOT / "addons").iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert rooms <= ROOMS, rooms - ROOMS


def test_module_names_do_not_collide() -> None:
    # Two gateway modules with one short name (canonical vs canonical) read as one thing in
    # tracebacks and docs. The command-line tools are named after their ./run.sh commands.
    short: dict[str, list[str]] = {}
    for m in all_modules():
        if m.startswith("addons.") and not m.startswith("addons.cli."):
            short.setdefault(m.rpartition(".")[2], []).append(m)
    dup = {k: v for k, v in short.items() if len(v) > 1}
    assert dup == {}, dup
