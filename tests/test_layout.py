"""The package layout holds: the import graph of adapter_hub/ and registry/, read from the source with
every import counted (inside functions too; `if TYPE_CHECKING:` blocks are not run, so they do not
count), has no circle; adapter_hub's packages import only downwards (LAYERS); the registry reaches
into adapter_hub in one place only (loading a LoraAdapter); the modules the fast paths need import
without torch; and no module is past the size that means two ideas."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("adapter_hub", "registry")
# adapter_hub's packages from the bottom up: a module may import its own package and anything on a
# lower layer, never a higher one (or a sibling on its own layer).
LAYERS = [
    {"adapter_hub", "adapter_hub.core", "adapter_hub.metrics", "adapter_hub.stats"},
    {"adapter_hub.models", "adapter_hub.data"},
    {"adapter_hub.lora"},
    {"adapter_hub.ops", "adapter_hub.evaluation"},
    {"adapter_hub.training"},
    {"adapter_hub.continual"},
    {"adapter_hub.bench"},
    {"adapter_hub.ui"},
    {"adapter_hub.cli"},
]
# The registry's one edge into adapter_hub: Registry.load returns a LoraAdapter (imported when called).
REGISTRY_REACHES = {("registry.api", "adapter_hub.core.adapter")}
MAX_LINES = 450  # the bound; ../shared/ARCHITECTURE.md: past ~400 lines a module is two ideas


def modules() -> dict[str, Path]:
    found = {}
    for top in PACKAGES:
        for path in (ROOT / top).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _lazy_map(path: Path) -> dict[str, str]:
    """A package's PEP 562 table (`_LAZY = {name: module}`), read from its source."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "_LAZY" for t in node.targets):
            return ast.literal_eval(node.value)
    return {}


def _runtime_nodes(tree: ast.AST):
    """Every node except those under `if TYPE_CHECKING:`."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING":
            stack.extend(node.orelse)
            continue
        yield node
        stack.extend(ast.iter_child_nodes(node))


def import_graph() -> dict[str, set[str]]:
    known = modules()
    lazy = {pkg: _lazy_map(known[pkg]) for pkg in PACKAGES}
    graph: dict[str, set[str]] = {name: set() for name in known}
    for name, path in known.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in _runtime_nodes(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative import
                    base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
                for alias in node.names:
                    if f"{base}.{alias.name}" in known:
                        targets.append(f"{base}.{alias.name}")  # a submodule
                    elif base in lazy and alias.name in lazy[base]:
                        targets.append(lazy[base][alias.name])  # a lazily exported name: its real module
                    else:
                        targets.append(base)
            for target in targets:
                while target and target not in known and target.split(".")[0] in PACKAGES:
                    target = target.rpartition(".")[0]  # `import a.b.c` where c is an attribute
                if target in known and target != name:
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
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

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def layer_of(module: str) -> tuple[int, str] | None:
    """(layer, package) of an adapter_hub module: its longest-named package in LAYERS."""
    for depth in range(module.count(".") + 1, 0, -1):
        prefix = ".".join(module.split(".")[:depth])
        for level, packages in enumerate(LAYERS):
            if prefix in packages:
                return level, prefix
    return None


def test_the_graph_reads_imports_inside_functions_and_lazy_names():
    """The reader itself: it must see what the rules below are about, or they pass for nothing."""
    graph = import_graph()
    assert "adapter_hub.core.adapter" in graph["registry.api"]  # imported inside Registry.load
    assert "adapter_hub.bench.driver" in graph["adapter_hub.cli.bench_cmds"]  # inside a click command
    assert "adapter_hub.core.progress" in graph["adapter_hub.cli.main"]  # `from adapter_hub.core import progress`
    assert not graph["adapter_hub"]  # the top package's names load lazily; TYPE_CHECKING imports do not run
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_circles():
    assert cycles(import_graph()) == []


def test_adapter_hub_imports_only_downwards():
    wrong = []
    for module, targets in import_graph().items():
        mine = layer_of(module)
        if mine is None:
            continue
        for target in targets:
            theirs = layer_of(target)
            if theirs is not None and theirs[1] != mine[1] and theirs[0] >= mine[0]:
                wrong.append(f"{module} -> {target}")
    assert wrong == []


def test_every_adapter_hub_module_has_a_layer():
    assert [m for m in modules() if m.startswith("adapter_hub") and layer_of(m) is None] == []


def test_the_registry_reaches_into_adapter_hub_in_one_place():
    edges = {(m, t) for m, targets in import_graph().items() if m.startswith("registry")
             for t in targets if t.startswith("adapter_hub")}
    assert edges == REGISTRY_REACHES


@pytest.mark.parametrize("module", ["registry", "registry.api", "adapter_hub.models.names", "adapter_hub.data",
                                    "adapter_hub.core.config", "adapter_hub.core.errors", "adapter_hub.bench.summary",
                                    "adapter_hub.bench.report", "adapter_hub.cli"])
def test_fast_paths_import_no_torch(module):
    code = f"import sys, {module}; print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "NO-TORCH"


def test_no_module_is_two_ideas():
    long = {name: n for name, path in modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_the_readme_layout_lists_every_package_in_import_order():
    """README's Layout section names each adapter_hub package once, top of the import order first."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Layout"):]
    listed = [f"adapter_hub.{name}" for name in re.findall(r"^- `adapter_hub/(\w+)/`", section, re.M)]
    packages = {f"adapter_hub.{p.parent.name}" for p in (ROOT / "adapter_hub").glob("*/__init__.py")}
    assert sorted(listed) == sorted(packages)
    levels = [layer_of(name)[0] for name in listed]
    assert levels == sorted(levels, reverse=True)
