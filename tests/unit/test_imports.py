"""The import graph: every module imports, no cycles, and the data path walks one way.

The graph is read from the source (every `import`, at module level, inside functions and under
`TYPE_CHECKING`, plus module names given to `importlib` as strings), so an import hidden in a function counts
like any other. Layers, lowest first: models → training → export → inference → serve | label. A module may
import its own layer and those below; serve and label are siblings and import neither each other nor anything
above them. Outside the layers: the foundation (`langadapt`, `errors`, `paths`, `console`), which any module may
import and which imports only itself, and the entry points (`cli`, `client`), which nothing imports.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from functools import cache
from pathlib import Path

import langadapt

PACKAGE = "langadapt"
LAYERS = {"models": 0, "training": 1, "export": 2, "inference": 3, "serve": 4, "label": 4}
FOUNDATION = {PACKAGE, f"{PACKAGE}.errors", f"{PACKAGE}.paths", f"{PACKAGE}.console"}
ENTRY_POINTS = {f"{PACKAGE}.cli", f"{PACKAGE}.client"}

# Imports that break the rules in files whose owners are changing them now, as
#     ("langadapt.<source>", "langadapt.<target>"): "TODO(issue 10): <what to do>",
# Remove an entry when it is fixed: the test fails on an entry that no longer occurs. None at present.
KNOWN_EXCEPTIONS: dict[tuple[str, str], str] = {}


@cache
def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name)."""
    root = Path(langadapt.__file__).parent
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = [PACKAGE, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _resolve(name: str) -> str | None:
    """The package module `name` names: itself, else the module that defines it (`a.b.attr` → `a.b`)."""
    while name and name not in modules():
        name = name.rpartition(".")[0]
    return name or None


def _targets(node: ast.AST, module: str) -> list[str]:
    """The package modules one AST node imports."""
    if isinstance(node, ast.Import):
        return [name.name for name in node.names]
    if isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            package = module if modules()[module].name == "__init__.py" else module.rpartition(".")[0]
            anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
            base = ".".join([*anchor, base] if base else anchor)
        return [f"{base}.{name.name}" if f"{base}.{name.name}" in modules() else base for name in node.names]
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in modules():
        return [node.value]  # importlib.import_module("langadapt....") in a lazy export table
    return []


@cache
def graph() -> dict[str, dict[str, int]]:
    """module → {imported package module: line of the first such import}."""
    edges: dict[str, dict[str, int]] = {}
    for module, path in modules().items():
        out: dict[str, int] = {}
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            for target in _targets(node, module):
                resolved = _resolve(target) if target.startswith(PACKAGE) else None
                if resolved and resolved != module:
                    out.setdefault(resolved, getattr(node, "lineno", 0))
        edges[module] = out
    return edges


def cycles(edges: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, {}):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
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

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def layer(module: str) -> int | None:
    """The layer of a module; None outside the layers."""
    parts = module.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None


def violation(source: str, target: str) -> str | None:
    """Why `source` may not import `target`, or None when it may."""
    if target in ENTRY_POINTS:
        return f"{target} is an entry point: nothing imports it"
    if source in ENTRY_POINTS or target in FOUNDATION:
        return None
    if source in FOUNDATION:
        return "the foundation imports only the foundation"
    low, high = layer(source), layer(target)
    assert low is not None and high is not None, (source, target)
    if high > low:
        return f"{source.split('.')[1]} (layer {low}) imports the higher layer {target.split('.')[1]} (layer {high})"
    if high == low and source.split(".")[1] != target.split(".")[1]:
        return "serve and label are siblings: neither imports the other"
    return None


def violations() -> dict[tuple[str, str], str]:
    return {
        (source, target): f"{source} imports {target} (line {line}): {why}"
        for source, targets in graph().items()
        for target, line in targets.items()
        if (why := violation(source, target)) is not None
    }


def test_every_module_is_in_a_layer_or_named_outside_them() -> None:
    outside = {m for m in modules() if layer(m) is None}
    assert outside == FOUNDATION | ENTRY_POINTS
    assert {m.split(".")[1] for m in modules() if layer(m) is not None} == set(LAYERS)


def test_the_graph_reads_every_kind_of_import() -> None:
    edges = graph()
    assert "langadapt.models.kinds" in edges["langadapt.models.manifest"]  # module level
    assert "langadapt.models.base" in edges["langadapt.export.fused"]  # inside a function
    assert "langadapt.inference.routing" in edges["langadapt.inference.backends"]  # under TYPE_CHECKING
    assert "langadapt.export.swappable" in edges["langadapt.export"]  # a string for importlib
    assert "langadapt.label.job" in edges["langadapt.label"]  # a package's lazy attribute
    assert cycles({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}) == [["a", "b", "c"]]


def test_no_import_cycles() -> None:
    found = cycles(graph())
    assert not found, "import cycles (hidden in functions or not): " + "; ".join(" ↔ ".join(c) for c in found)


def test_imports_follow_the_layers() -> None:
    found = violations()
    new = sorted(why for key, why in found.items() if key not in KNOWN_EXCEPTIONS)
    assert not new, "imports against the layer order:\n" + "\n".join(new)
    fixed = sorted(f"{s} → {t}" for s, t in KNOWN_EXCEPTIONS if (s, t) not in found)
    assert not fixed, f"known exceptions that no longer occur, remove them: {fixed}"
    assert all(what.startswith("TODO(issue 10): ") for what in KNOWN_EXCEPTIONS.values())


def test_every_module_imports_in_a_fresh_interpreter() -> None:
    """Import every module (optional extras aside) in one new process, so no import order hides a problem."""
    names = sorted(m for m in modules() if not m.endswith("__main__"))
    code = "\n".join(
        [
            "import importlib, sys",
            "failed = []",
            f"for name in {names!r}:",
            "    try:",
            "        importlib.import_module(name)",
            "    except ModuleNotFoundError as err:",
            f"        if (err.name or '').split('.')[0] == {PACKAGE!r}:",
            "            failed.append(f'{name}: {err!r}')",
            "    except Exception as err:",
            "        failed.append(f'{name}: {err!r}')",
            "print('\\n'.join(failed))",
        ]
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert not result.stdout.strip(), f"modules that fail to import:\n{result.stdout}"
