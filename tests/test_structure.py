"""The package's layering (docs/DESIGN.md): commands on top, then the engine, then analysis,
interop and data, then models; nothing imports upward, and the only import cycle is the
registry's (registry -> models -> registry, so that importing `models` registers every family).
`cli.py` is a table of command modules, each with HELP, add_arguments and run."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "src" / "convzoo"

# layer -> the layers it may import (a module may always import within its own layer)
ALLOWED = {
    "errors": set(),
    "outputs": {"errors"},  # atomic writes and output-path checks, for every layer
    "untrusted": {"errors"},  # size checks of files a user downloaded, for every reader
    "layers": set(),
    "weights": {"outputs", "untrusted", "errors", "layers"},
    "hub": {"outputs", "untrusted", "errors", "weights", "interop", "registry", "data"},
    "registry": {"errors", "weights", "models", "hub"},
    "models": {"layers", "registry", "errors"},
    "recipes": {"errors"},
    "data": {"outputs", "untrusted", "errors"},
    "analysis": {"outputs", "untrusted", "errors", "registry", "weights", "data", "layers"},
    "interop": {"outputs", "untrusted", "errors", "registry", "weights", "data", "models", "layers"},
    "engine": {
        "outputs",
        "untrusted",
        "errors",
        "registry",
        "weights",
        "data",
        "analysis",
        "recipes",
        "models",
        "interop",
        "layers",
        "hub",
    },
    "serve": {
        "outputs",
        "untrusted",
        "errors",
        "registry",
        "weights",
        "data",
        "analysis",
        "engine",
        "interop",
        "hub",
    },
    "commands": {
        "outputs",
        "untrusted",
        "errors",
        "registry",
        "weights",
        "data",
        "analysis",
        "engine",
        "interop",
        "recipes",
        "hub",
        "serve",
        "models",
    },
    "cli": {"commands", "errors", "(pkg)"},
    "__main__": {"cli"},
    "(pkg)": {"registry", "weights"},
}


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "(pkg)"


def _module_name(path: Path) -> tuple[str, str]:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    is_pkg = parts[-1] == "__init__"
    if is_pkg:
        parts = parts[:-1]
    name = ".".join(parts)
    return name, name if is_pkg else name.rsplit(".", 1)[0]


def import_edges() -> list[tuple[str, str]]:
    """(importing module, imported convzoo module) for every import, at any depth in the file."""
    edges = []
    for path in sorted(PKG.rglob("*.py")):
        name, package = _module_name(path)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if node.module is None:  # `from . import x`: x is a module or a name of the package
                    edges += [(name, f"{target}.{a.name}") for a in node.names]
                else:
                    edges.append((name, target))
            elif isinstance(node, ast.Import):
                edges += [(name, a.name) for a in node.names]
    return [(a, b) for a, b in edges if b == "convzoo" or b.startswith("convzoo.")]


def test_no_upward_imports():
    bad = []
    for a, b in import_edges():
        la, lb = _layer(a), _layer(b)
        if lb == "__version__":
            continue
        if la != lb and lb not in ALLOWED.get(la, set()):
            bad.append(f"{a} imports {b} ({la} -> {lb})")
    assert not bad, "\n".join(bad)


def test_only_cycle_is_the_registry():
    """The registry imports lazily upward (`models`, to register every family; `hub`, to resolve a
    weights name): without those edges the layer graph has no cycle at all."""
    graph: dict[str, set[str]] = {}
    for a, b in import_edges():
        la, lb = _layer(a), _layer(b)
        if la != lb and lb != "__version__" and la != "registry":
            graph.setdefault(la, set()).add(lb)
    assert _layer_cycles(graph) == []
    registry_edges = {_layer(b) for a, b in import_edges() if _layer(a) == "registry"}
    assert registry_edges <= {"errors", "weights", "models", "hub"}


def _layer_cycles(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in graph.get(start, ()):
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    return sorted({tuple(sorted((a, b))) for a in graph for b in graph[a] if reaches(b, a, {b})})


def test_cycle_finder_finds_a_cycle():
    assert _layer_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [("a", "b"), ("a", "c"), ("b", "c")]
    assert _layer_cycles({"a": {"b"}, "b": {"c"}}) == []


def test_the_test_sees_imports():
    """The checker itself: it must find the edges it is meant to police."""
    edges = set(import_edges())
    assert ("convzoo.cli", "convzoo.commands") in edges
    assert ("convzoo.engine.train", "convzoo.analysis.curves") in edges  # an import inside a function
    assert ("convzoo.models.resnet", "convzoo.registry") in edges


def test_cli_is_a_table_of_command_modules():
    from convzoo import cli

    files = {p.stem for p in (PKG / "commands").glob("*.py") if not p.stem.startswith("_")}
    assert set(cli.COMMANDS) == files, "every command module is in the table, and only those"
    for name, module in cli.COMMANDS.items():
        assert module.__name__ == f"convzoo.commands.{name}"
        assert isinstance(module.HELP, str) and module.HELP
        assert callable(module.add_arguments) and callable(module.run)
    source = (PKG / "cli.py").read_text()
    assert "globals()" not in source


@pytest.mark.parametrize("name", ["train", "eval", "predict", "summary"])
def test_help_lists_each_command(name, capsys):
    from convzoo.cli import main

    with pytest.raises(SystemExit) as e:
        main([name, "--help"])
    assert e.value.code == 0
    assert "usage: convzoo" in capsys.readouterr().out


def test_every_import_names_an_existing_module():
    """Imports inside functions only fail when the function runs: check them all statically."""
    import importlib.util

    missing = []
    for a, b in import_edges():
        if b.split(".")[-1] == "__version__":
            continue
        if importlib.util.find_spec(b) is None:
            parent, _, name = b.rpartition(".")
            module = importlib.import_module(parent) if importlib.util.find_spec(parent) else None
            if module is None or not hasattr(module, name):
                missing.append(f"{a} imports {b}")
    assert not missing, "\n".join(missing)
