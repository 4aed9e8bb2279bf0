"""The package's layering (docs/DESIGN.md): commands on top, then the engine, then the factory
(models with weights), the hub, analysis, interop and data, then the registry and models;
nothing imports upward. The import graph of modules (imports inside functions included) has
one cycle, the registry's (registry -> models -> registry, so that importing `models` registers
every family), and no module imports another's private name. `cli.py` is a table of command
modules, each with HELP, add_arguments and run."""

from __future__ import annotations

import ast
import io
import sys
import tokenize
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "src" / "convzoo"

# the layers below the systems: models, their weights and data, and what every layer uses
MODEL_LAYERS = frozenset(
    {"outputs", "untrusted", "errors", "registry", "weights", "data", "analysis", "models", "interop"}
    | {"layers", "hub", "factory"}
)

# layer -> the layers it may import (a module may always import within its own layer)
ALLOWED = {
    "errors": set(),
    "outputs": {"errors"},  # atomic writes and output-path checks, for every layer
    "untrusted": {"errors"},  # size checks of files a user downloaded, for every reader
    "layers": set(),
    "weights": {"outputs", "untrusted", "errors", "layers"},
    "hub": {"outputs", "untrusted", "errors", "weights", "interop", "data"},
    # the one place that loads weights into a model by name: registry + hub (+ interop through it)
    "factory": {"errors", "registry", "weights", "hub"},
    "registry": {"errors", "models"},  # a leaf: names -> builders (models, to register them)
    "models": {"layers", "registry", "errors"},
    "recipes": {"errors", "untrusted"},  # untrusted: the nesting limit of a YAML recipe
    # weights: a shard index holds at most the class count a WeightSpec may (MAX_CLASSES)
    "data": {"outputs", "untrusted", "errors", "weights"},
    "analysis": {"outputs", "untrusted", "errors", "registry", "weights", "data", "layers"},
    "interop": {"outputs", "untrusted", "errors", "registry", "weights", "data", "models", "layers"},
    # what training and inference both stand on: device, precision, processes, loaders
    "engine": {"outputs", "untrusted", "errors", "hub", "data"},
    "inference": MODEL_LAYERS | {"engine"},
    # validation is inference: training may use it, never the reverse
    "training": MODEL_LAYERS | {"engine", "inference", "recipes"},
    "serve": MODEL_LAYERS - {"models", "layers"} | {"engine", "inference"},
    "commands": MODEL_LAYERS - {"layers"} | {"engine", "inference", "training", "recipes", "serve"},
    "cli": {"commands", "errors", "(pkg)"},
    "__main__": {"cli"},
    "(pkg)": {"factory", "registry", "weights"},
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


# Module import edges left out of the cycle checks. Each must still exist (a stale entry fails
# the test) and says why it stays.
CYCLE_ALLOWED = {
    # importing `models` registers every family; the registry's lookups load it on first use,
    # and each model file imports `register` from the registry
    ("convzoo.registry", "convzoo.models"): "registration",
}

# Private names (`_x`) imported across modules that remain, each with why. Each must still
# occur (a stale entry fails the test).
PRIVATE_ALLOWED: dict[tuple[str, str], str] = {}


def _modules() -> set[str]:
    return {_module_name(p)[0] for p in PKG.rglob("*.py")}


def module_graph() -> dict[str, set[str]]:
    """Module -> the convzoo modules it imports (at any depth in the file). `from pkg import name`
    counts as an import of the module `pkg.name` when there is one, else of `pkg`."""
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for a, b in import_edges():
        while b not in modules and "." in b:
            b = b.rsplit(".", 1)[0]
        if b in modules and b != a:
            graph[a].add(b)
    # models/__init__.py imports every family with importlib (so that adding a file adds a
    # family): edges the syntax tree does not show
    graph["convzoo.models"] |= {m for m in modules if m.startswith("convzoo.models.")}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (each a set of nodes that
    import one another in a circle), sorted: Tarjan's algorithm."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def _without_allowed(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    return {a: {b for b in bs if (a, b) not in CYCLE_ALLOWED} for a, bs in graph.items()}


def test_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": {"c"}}) == []
    assert cycles({"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"c"}}) == [["a", "b"], ["c", "d"]]


def test_no_import_cycle_between_modules():
    """Circles inside a package count too: only the allowed edges are left out."""
    graph = module_graph()
    stale = [edge for edge in CYCLE_ALLOWED if edge[1] not in graph.get(edge[0], set())]
    assert not stale, f"allowed edges that no longer exist (remove them from CYCLE_ALLOWED): {stale}"
    assert cycles(_without_allowed(graph)) == []
    registration = {"convzoo.registry", "convzoo.models", "convzoo.models.resnet"}
    assert any(registration <= set(c) for c in cycles(graph)), "the checker sees the registry's cycle"


def test_no_import_cycle_between_layers():
    graph: dict[str, set[str]] = {}
    for a, bs in _without_allowed(module_graph()).items():
        for b in bs:
            if _layer(a) != _layer(b):
                graph.setdefault(_layer(a), set()).add(_layer(b))
    assert cycles(graph) == []


def test_the_registry_is_a_leaf():
    """names -> builders; weights are loaded by the factory above it."""
    graph = module_graph()
    assert graph["convzoo.registry"] <= {"convzoo.errors", "convzoo.models"}
    assert "convzoo.hub" in graph["convzoo.factory"] and "convzoo.registry" in graph["convzoo.factory"]


def private_imports() -> list[tuple[str, str]]:
    """(importing module, `module._name`) for each private name one convzoo module takes from
    another: `from .mod import _x`, or `mod._x` where `mod` names an imported convzoo module.
    A private module of the same package (`commands/_common.py`) is its siblings' to import."""
    modules = _modules()
    found = []
    for path in sorted(PKG.rglob("*.py")):
        name, package = _module_name(path)
        tree = ast.parse(path.read_text())
        bound: dict[str, str] = {}  # local name -> the convzoo module it is bound to
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                target = _resolve(node, package)
                if not target.startswith("convzoo"):
                    continue
                for a in node.names:
                    if f"{target}.{a.name}" in modules:
                        bound[a.asname or a.name] = f"{target}.{a.name}"
                        if target != package and _private(a.name):
                            found.append((name, f"{target}.{a.name}"))
                    elif _private(a.name) and target != name:
                        found.append((name, f"{target}.{a.name}"))
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.startswith("convzoo.") and a.asname:
                        bound[a.asname] = a.name
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                module = bound.get(node.value.id)
                if module and module != name and _private(node.attr):
                    found.append((name, f"{module}.{node.attr}"))
    return sorted(set(found))


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _resolve(node: ast.ImportFrom, package: str) -> str:
    if not node.level:
        return node.module or ""
    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def test_no_private_name_crosses_a_module():
    found = private_imports()
    stale = [p for p in PRIVATE_ALLOWED if p not in found]
    assert not stale, f"allowed private imports that no longer exist (remove them): {stale}"
    bad = [f"{a} imports {b}" for a, b in found if (a, b) not in PRIVATE_ALLOWED]
    assert not bad, "\n".join(bad)


def test_private_import_checker_sees_them(tmp_path, monkeypatch):
    """The checker itself, on a small package: each form is found, the allowed ones are not."""
    pkg = tmp_path / "convzoo"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("_x = 1\ny = 2\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "_common.py").write_text("z = 1\n")
    (pkg / "sub" / "b.py").write_text(
        "from ..a import _x, y\nfrom .. import a\nfrom . import _common\n\n"
        "def f():\n    from ..a import _x as w\n    return a._x + a.y + _common.z + w\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "PKG", pkg)
    assert private_imports() == [("convzoo.sub.b", "convzoo.a._x")]
    (pkg / "sub" / "b.py").write_text("from .. import a\n\nprint(a._x)\n")
    assert private_imports() == [("convzoo.sub.b", "convzoo.a._x")]
    (pkg / "sub" / "b.py").write_text("from .. import a\n\nprint(a.y)\n")
    assert private_imports() == []


def test_the_test_sees_imports():
    """The checker itself: it must find the edges it is meant to police."""
    edges = set(import_edges())
    assert ("convzoo.cli", "convzoo.commands") in edges
    assert ("convzoo.training.train", "convzoo.analysis.curves") in edges  # an import inside a function
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


# where a function-level import of a convzoo module is the rule (fast `--help`), needing no reason
LAZY_FREE = ("commands/", "cli.py")


def _is_convzoo_import(node: ast.AST) -> bool:
    if isinstance(node, ast.ImportFrom):
        return bool(node.level) or (node.module or "").split(".")[0] == "convzoo"
    return isinstance(node, ast.Import) and any(a.name.split(".")[0] == "convzoo" for a in node.names)


def _function_imports(tree: ast.AST) -> list[ast.stmt]:
    """The imports of convzoo modules inside a function body (at any depth below it)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            found += [n for n in ast.walk(node) if _is_convzoo_import(n)]
    return sorted(set(found), key=lambda n: n.lineno)


def _lazy_reasons(source: str) -> dict[int, str]:
    """Line -> the reason a `# lazy: why` comment on that line gives."""
    reasons = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT and tok.string.startswith("# lazy:"):
            reasons[tok.start[0]] = tok.string.removeprefix("# lazy:").split("# noqa")[0].strip()
    return reasons


def unexplained_lazy_imports(pkg: Path) -> list[str]:
    """`file:line: import` for each function-level import of a convzoo module outside commands/
    and cli.py whose first line has no `# lazy: why` comment (with a why)."""
    bad = []
    for path in sorted(pkg.rglob("*.py")):
        rel = path.relative_to(pkg).as_posix()
        if rel.startswith(LAZY_FREE):
            continue
        source = path.read_text()
        reasons = _lazy_reasons(source)
        lines = source.splitlines()
        for node in _function_imports(ast.parse(source)):
            if not reasons.get(node.lineno):
                bad.append(f"{rel}:{node.lineno}: {lines[node.lineno - 1].strip()}")
    return bad


def test_function_level_imports_say_why():
    """A convzoo module imported inside a function is imported at the top of the module, unless
    that buys something (start-up time of `convzoo --help` or of a light command, an optional
    extra, the registry's registration cycle), said on the import's line: `# lazy: why`."""
    bad = unexplained_lazy_imports(PKG)
    assert not bad, "import these at the top, or say why not with `# lazy: why`:\n" + "\n".join(bad)


def test_lazy_import_checker_sees_them(tmp_path):
    """The checker itself, on a small package: each unexplained form is found, the rest are not."""
    pkg = tmp_path / "convzoo"
    (pkg / "commands").mkdir(parents=True)
    (pkg / "commands" / "run.py").write_text("def run():\n    from ..a import x\n")
    (pkg / "cli.py").write_text("def main():\n    from . import commands\n")
    (pkg / "a.py").write_text(
        "from .b import top\n"
        "import convzoo.b\n\n\n"
        "def f():\n"
        "    import os\n"
        "    from .b import why  # lazy: an optional extra\n"
        "    from .b import empty  # lazy:\n"
        "    from . import b\n"
        "    import convzoo.b as c\n\n"
        "    def g():\n"
        "        from ..x import (  # lazy: a cycle\n"
        "            y,\n"
        "        )\n"
        "        from .. import z  # noqa: F401\n\n"
        "class K:\n"
        "    async def m(self):\n"
        "        from .b import k\n"
    )
    assert unexplained_lazy_imports(pkg) == [
        "a.py:8: from .b import empty  # lazy:",
        "a.py:9: from . import b",
        "a.py:10: import convzoo.b as c",
        "a.py:16: from .. import z  # noqa: F401",
        "a.py:20: from .b import k",
    ]
