"""The package's import contract, checked from the source (no import of archdsl needed, none executed).

Every module's AST is walked, function-level and ``TYPE_CHECKING`` imports included, and these must hold:

* no import cycle between archdsl modules;
* every import points to the same or a lower layer (below), and folders of one layer never import each
  other (the leaf modules of the bottom layer may use each other);
* no module over 600 lines;
* torch, triton and graphviz are imported only where listed in ``HEAVY`` (``"lazy"``: only inside a function,
  so importing the module does not load them);
* ``archc check``, ``list``, ``summary``, ``compile``, ``render`` and ``fmt`` run without importing torch (in a
  subprocess, as a user runs them).

The same layering is declared for import-linter in pyproject.toml ``[tool.importlinter]`` (``lint-imports``,
run by scripts/test.sh); a test below keeps the two declarations equal.
"""
from __future__ import annotations

import ast
import json
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pytest

from helpers import ROOT

PACKAGE = ROOT / "archdsl"
MAX_LINES = 600

# Top to bottom. A unit is the first name below ``archdsl`` (a folder or a module); "__init__" is the package
# itself (archdsl/__init__.py). Units of one layer are independent, except in the leaf layer.
LAYERS: list[tuple[str, ...]] = [
    ("__main__",),
    ("__init__",),
    ("cli", "notebook", "hub", "export", "summarize"),
    # pickling by spec (compiles through pipeline, builds through codegen); the design-space tools; the importer
    # (PyTorch models into specs, and the round trip that proves them)
    ("persist", "design", "sweep", "importer"),
    ("pipeline", "plugins"),
    ("render", "codegen", "backends"),
    ("passes",),
    ("lower",),
    ("lang", "ir"),
    ("ops",),
    ("source", "errors", "limits", "fsutil", "_version", "cachedir", "library"),
]
LEAF_LAYER = len(LAYERS) - 1
RANK = {unit: i for i, units in enumerate(LAYERS) for unit in units}

# Where the heavy optional dependencies may be imported: module -> "any" (module level allowed) or "lazy"
# (only inside a function: the module itself stays importable, and fast, without them).
HEAVY: dict[str, dict[str, str]] = {
    "torch": {
        "archdsl": "lazy",                      # archdsl.build(..., backends=...)
        "archdsl.cli.commands": "lazy",         # archc deploy --weights
        "archdsl.cli.design": "lazy",           # archc migrate writes a state_dict
        "archdsl.design": "lazy",               # migrate: the checkpoint read and the target's initialization
        "archdsl.sweep.measure": "lazy",        # archc sweep --measure times built models
        "archdsl.hub": "lazy",                  # reading state-dict files, pretrained weights
        "archdsl.plugins": "lazy",              # a user op's shape/params inferred on the meta device
        "archdsl.export": "lazy",               # ONNX export of a built model
        "archdsl.summarize": "lazy",            # archdsl.summary traces and runs the module
        "archdsl.importer.roundtrip": "lazy",   # the round trip builds, loads and runs both models
        "archdsl.importer.trace": "lazy",       # archc import: fx tracing at two batch sizes
        "archdsl.importer.convert": "lazy",     # archc import: fx nodes and parameters
        "archdsl.importer.api": "lazy",         # archc import: the round trip (build, load, compare)
        "archdsl.importer.plugin": "lazy",      # archc import: recording constructor arguments
        "archdsl.importer.pywrite": "lazy",     # archc import: is a constructor argument a module, a tensor
        "archdsl.importer.concrete": "lazy",    # archc import: fx tracing with concrete shapes
        "archdsl.importer.tables": "lazy",      # archc import: a buffer's values against a generator's table
        "archdsl.cli.importer": "lazy",         # archc import: building the source model
        "archdsl.codegen.build": "any",         # instantiating the generated module
        "archdsl.codegen.model_api": "any",     # timm's model API of built networks (checkpointing, ...)
        "archdsl.codegen.deploy": "any",        # runtime deploy of a built module
        "archdsl.codegen.weights": "any",       # weight algebra of the deploy rewrites
        "archdsl.codegen.checkpoint": "any",    # the one checkpoint reader (deploy, build(weights=), hub)
        "archdsl.backends.impl": "any",         # conv backends, tracing and timing
        "archdsl.backends.triton_dw": "any",    # the Triton kernels
    },
    "triton": {
        "archdsl.backends.triton_dw": "any",
    },
    "graphviz": {
        "archdsl.render.dot": "any",            # the only module that lays out with Graphviz
    },
}


@dataclass(frozen=True)
class Import:
    importer: str     # module name
    target: str       # the imported name, resolved to the deepest archdsl module (or the top-level package)
    line: int
    lazy: bool        # inside a function body

    def where(self) -> str:
        return f"{module_path(self.importer)}:{self.line}"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def module_path(name: str) -> str:
    return next(p.relative_to(ROOT).as_posix() for p, n in modules().items() if n == name)


@lru_cache(maxsize=1)
def modules() -> dict[Path, str]:
    return {p: module_name(p) for p in sorted(PACKAGE.rglob("*.py")) if "__pycache__" not in p.parts}


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _resolve(name: str, known: set[str]) -> str:
    """The deepest archdsl module that ``name`` (a dotted name under archdsl) is or lies in."""
    parts = name.split(".")
    while parts and ".".join(parts) not in known:
        parts.pop()
    return ".".join(parts) or "archdsl"


def imports_of(source: str, me: str, is_package: bool, known: set[str]
               ) -> tuple[list[Import], list[tuple[str, int, bool]]]:
    """(archdsl imports, other imports as (top-level name, line, lazy)) of module ``me`` with ``source``."""
    package = me if is_package else me.rpartition(".")[0]
    tree = ast.parse(source)
    internal: list[Import] = []
    external: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, lazy: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name == "archdsl" or alias.name.startswith("archdsl."):
                        internal.append(Import(me, _resolve(alias.name, known), child.lineno, inner))
                    else:
                        external.append((alias.name.split(".")[0], child.lineno, inner))
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base_parts = package.split(".")
                    if child.level > 1:
                        base_parts = base_parts[: len(base_parts) - (child.level - 1)]
                    base = ".".join(base_parts + ([child.module] if child.module else []))
                else:
                    base = child.module or ""
                if base == "archdsl" or base.startswith("archdsl."):
                    for alias in child.names:
                        full = f"{base}.{alias.name}"
                        target = full if full in known else _resolve(base, known)
                        internal.append(Import(me, target, child.lineno, inner))
                elif base and base != "__future__":
                    external.append((base.split(".")[0], child.lineno, inner))
            visit(child, inner)

    visit(tree, False)
    return internal, external


@lru_cache(maxsize=1)
def graph() -> tuple[list[Import], dict[str, list[tuple[str, int, bool]]]]:
    known = set(modules().values())
    internal: list[Import] = []
    external: dict[str, list[tuple[str, int, bool]]] = {}
    for path, name in modules().items():
        i, e = imports_of(path.read_text(encoding="utf-8"), name, _is_package(path), known)
        internal += i
        external[name] = e
    return internal, external


def unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


# ---------------------------------------------------------------------------------------------- the walker
def test_the_walker_sees_every_kind_of_import() -> None:
    """Relative (from a module and from a package), absolute, aliased, from-package-import-module and
    function-level imports all resolve to the module they load; anything else is an external import."""
    known = {"archdsl", "archdsl.ir", "archdsl.lang", "archdsl.lang.parser", "archdsl.errors", "archdsl.pkg",
             "archdsl.pkg.mod"}
    src = ("import os\nfrom . import errors\nfrom ..lang.parser import parse\nfrom .. import __version__\n"
           "import archdsl.ir as ir\nfrom archdsl.lang import parser\nfrom archdsl.lang import Name\n"
           "def f():\n    import torch.nn\n    from ..ir import Graph\n"
           "class C:\n    def g(self):\n        from . import mod\n")
    internal, external = imports_of(src, "archdsl.pkg.mod", False, known)
    assert [(i.target, i.line, i.lazy) for i in internal] == [
        ("archdsl.pkg", 2, False), ("archdsl.lang.parser", 3, False), ("archdsl", 4, False),
        ("archdsl.ir", 5, False), ("archdsl.lang.parser", 6, False), ("archdsl.lang", 7, False),
        ("archdsl.ir", 10, True), ("archdsl.pkg.mod", 13, True)]
    assert external == [("os", 1, False), ("torch", 9, True)]
    # in a package's __init__, "." is the package itself
    internal, _ = imports_of("from . import mod\nfrom .. import errors\n", "archdsl.pkg", True, known)
    assert [i.target for i in internal] == ["archdsl.pkg.mod", "archdsl.errors"]


# -------------------------------------------------------------------------------------------- the contract
def test_every_module_is_in_a_layer() -> None:
    unplaced = sorted({unit(m) for m in modules().values()} - set(RANK))
    assert not unplaced, f"archdsl units in no layer (add them to LAYERS here and in pyproject.toml): {unplaced}"


def test_no_import_cycle() -> None:
    """Tarjan's strongly connected components over the module graph; any component of 2+ modules is a cycle."""
    internal, _ = graph()
    edges: dict[str, set[str]] = {m: set() for m in modules().values()}
    for i in internal:
        if i.target != i.importer:
            edges[i.importer].add(i.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def strongconnect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                strongconnect(w)
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
                cycles.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(edges):
        if v not in index:
            strongconnect(v)
    detail = []
    for comp in cycles:
        members = set(comp)
        lines = [f"  {i.where()}: {i.importer} -> {i.target}" for i in internal
                 if i.importer in members and i.target in members and i.importer != i.target]
        detail.append(f"cycle of {len(comp)} modules: {', '.join(comp)}\n" + "\n".join(lines))
    assert not cycles, "\n".join(detail)


def test_imports_only_point_down() -> None:
    internal, _ = graph()
    bad = []
    for i in internal:
        a, b = unit(i.importer), unit(i.target)
        if a == b or a not in RANK or b not in RANK:
            continue  # within one folder/module (cycles are checked above); unplaced units fail their own test
        ra, rb = RANK[a], RANK[b]
        if rb > ra or (ra == rb == LEAF_LAYER):
            continue
        kind = "a higher layer" if rb < ra else "a sibling of the same layer"
        bad.append(f"{i.where()}: {i.importer} imports {i.target} ({kind}: {a} -> {b})")
    assert not bad, "imports that do not point down:\n" + "\n".join(dict.fromkeys(bad))


def test_no_module_over_600_lines() -> None:
    long = {p.relative_to(ROOT).as_posix(): n for p in modules()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


@pytest.mark.parametrize("dependency", sorted(HEAVY))
def test_heavy_dependencies_only_where_allowed(dependency: str) -> None:
    _, external = graph()
    allowed = HEAVY[dependency]
    bad = []
    for module, imports in external.items():
        for name, line, lazy in imports:
            if name != dependency:
                continue
            rule = allowed.get(module)
            if rule is None:
                bad.append(f"{module_path(module)}:{line}: {module} imports {dependency} (not allowed here)")
            elif rule == "lazy" and not lazy:
                bad.append(f"{module_path(module)}:{line}: {module} imports {dependency} at module level "
                           "(only inside a function here)")
    assert not bad, "\n".join(bad)


def test_pyproject_declares_the_same_layers() -> None:
    """[tool.importlinter]'s layers contract = LAYERS (less the package __init__, which it cannot name)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (contract,) = [c for c in config["contracts"] if c["type"] == "layers"]
    assert contract["containers"] == ["archdsl"]
    declared = [tuple(part.strip().strip("()") for part in layer.replace(":", "|").split("|"))
                for layer in contract["layers"]]
    assert declared == [units for units in LAYERS if units != ("__init__",)]
    for layer in contract["layers"][:-1]:
        assert ":" not in layer, f"layer {layer!r}: siblings above the leaf layer must be independent (a | b)"


# ------------------------------------------------------------------------------- the CLI's lazy imports
PROBE = """
import json, runpy, sys
sys.argv = ["archc", *sys.argv[1:]]
code = 0
try:
    runpy.run_module("archdsl", run_name="__main__", alter_sys=True)
except SystemExit as e:
    code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
heavy = sorted(m for m in ("torch", "triton", "torchvision", "timm") if m in sys.modules)
print("\\nPROBE " + json.dumps({"code": code, "heavy": heavy}))
"""


@pytest.mark.parametrize("args", [
    ["check", "specs/resnet.arch"],
    ["list", "specs/resnet.arch"],
    ["summary", "specs/resnet.arch:resnet18"],
    ["compile", "specs/resnet.arch:resnet18", "-o", "{tmp}/r18.py"],
    ["render", "specs/resnet.arch:resnet18", "-o", "{tmp}/r18.svg", "--depth", "1"],
    ["fmt", "--diff", "specs/resnet.arch"],
], ids=["check", "list", "summary", "compile", "render", "fmt"])
def test_torch_free_commands_do_not_import_torch(args: list[str], tmp_path: Path) -> None:
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args]
    r = subprocess.run([sys.executable, "-c", PROBE, *argv], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    last = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ""
    assert last.startswith("PROBE "), (r.stdout[-2000:], r.stderr[-2000:])
    result = json.loads(last[len("PROBE "):])
    assert result == {"code": 0, "heavy": []}, (result, r.stderr[-2000:])
    if args[0] == "render":
        assert (tmp_path / "r18.svg").read_text().lstrip().startswith(("<?xml", "<svg"))
    if args[0] == "compile":
        assert "class Resnet18(nn.Module)" in (tmp_path / "r18.py").read_text()
