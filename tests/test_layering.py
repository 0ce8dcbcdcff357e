"""Layering guard: lower layers of biomodal never import higher ones.

The import graph is built from the source with :mod:`ast` (nothing is imported), so
it also sees imports inside functions, ``TYPE_CHECKING`` blocks, relative imports,
``importlib.import_module("literal")`` / ``__import__("literal")`` /
``import_optional("literal", ...)`` calls and the lazy-export maps
(``_MAP = {name: "submodule"}`` passed to ``biomodal._exports.lazy_exports``).

The layers, low to high, are documented in ``docs/architecture.md``::

    base < io < pp < data < nn < losses < train < eval < pl < recipes < cli
                     datasets: may import base, io, pp; imported only by recipes and cli

A module may import its own layer and any lower layer. ``datasets`` (demo-data
generators and public-dataset preparers) is a side branch: it produces data the
way io does and may use io/pp to do it, but the library proper (data ... pl) must
not depend on demo generators, so only recipes and the CLI may import it.
Importing the root package ``biomodal`` itself (its ``__init__`` only sets the
version and lazy subpackage access) is neutral: every submodule import runs it anyway.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "biomodal"

ORDER = ("base", "io", "pp", "data", "nn", "losses", "train", "eval", "pl", "recipes", "cli")
#: Top-level modules of the package and their layer (a new top-level module must be added here).
TOP_MODULES = {
    "errors": "base",
    "_registry": "base",
    "_exports": "base",
    "_lazy": "base",
    "_anndata": "base",
    "_atomic": "base",
    "_suggest": "base",
    "modalities": "base",
    "cli": "cli",
    "_cli_commands": "cli",
    "__init__": "cli",
}
SUBPACKAGES = {*ORDER[1:-1], "datasets"}


def allowed_layers(layer: str) -> set[str]:
    """Layers that modules of ``layer`` may import."""
    if layer == "datasets":
        return {"base", "io", "pp", "datasets"}
    allowed = set(ORDER[: ORDER.index(layer) + 1])
    if layer in ("recipes", "cli"):
        allowed.add("datasets")
    return allowed


#: Known violations ``(importer module, imported module)`` with why they are tolerated for now.
#: Each entry is reported to the lead; remove it once the import is moved. The test fails on a
#: stale entry, so this list cannot outlive the violation it excuses.
ALLOWED_VIOLATIONS: dict[tuple[str, str], str] = {}


@dataclass(frozen=True)
class Edge:
    """``src`` imports ``dst`` at ``path:line``."""

    src: str
    dst: str
    path: str
    line: int


def module_name(path: Path, root: Path, package: str) -> str:
    """Dotted name of the module in ``path`` (``__init__.py`` -> the package)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([package, *parts])


def _resolve_relative(module: str, is_pkg: bool, level: int, name: str | None) -> str:
    base = module.split(".") if is_pkg else module.split(".")[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join([*base, name] if name else base)


def _literal_str(node: ast.AST) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


_DYNAMIC = {"import_module", "__import__", "import_optional"}


def imports_of(path: Path, module: str, modules: set[str]) -> list[tuple[str, int]]:
    """Modules (of ``modules``, or their package) imported anywhere in ``path``, with line numbers."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_pkg = path.name == "__init__.py"
    out: list[tuple[str, int]] = []
    dicts: dict[str, ast.Dict] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict):
            for t in node.targets:
                if isinstance(t, ast.Name):
                    dicts[t.id] = node.value
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve_relative(module, is_pkg, node.level, node.module) if node.level else node.module
            if not base:
                continue
            for a in node.names:  # `from pkg import submodule` imports the submodule
                sub = f"{base}.{a.name}"
                out.append((sub if sub in modules else base, node.lineno))
        elif isinstance(node, ast.Call):
            fn = node.func
            fname = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", None)
            if fname in _DYNAMIC and node.args and (lit := _literal_str(node.args[0])):
                out.append((lit, node.lineno))
            elif fname == "lazy_exports" and len(node.args) >= 2:
                mapping = node.args[1]
                if isinstance(mapping, ast.Name):
                    mapping = dicts.get(mapping.id, mapping)
                if isinstance(mapping, ast.Dict):
                    package = module if is_pkg else module.rsplit(".", 1)[0]
                    for v in mapping.values:
                        if (lit := _literal_str(v)) is not None:
                            out.append((f"{package}.{lit}", v.lineno))
    return out


def build_graph(root: Path, package: str) -> tuple[list[Edge], set[str]]:
    """Every import edge between modules of ``package`` (sources under ``root``)."""
    files = {module_name(p, root, package): p for p in sorted(root.rglob("*.py"))}
    modules = set(files)
    edges: list[Edge] = []
    for mod, path in files.items():
        for target, line in imports_of(path, mod, modules):
            if target == package or not target.startswith(package + "."):
                continue  # third-party, or the neutral root package
            edges.append(Edge(mod, target, str(path.relative_to(root.parent)), line))
    return edges, modules


def layer_of(module: str, package: str) -> str:
    """Layer of a dotted module name; raises for a module that has none yet."""
    parts = module.split(".")[1:]
    if not parts:
        return "cli"
    head = parts[0]
    if len(parts) == 1 and head in TOP_MODULES:
        return TOP_MODULES[head]
    if head in SUBPACKAGES:
        return head
    raise KeyError(f"{module} has no layer: add it to TOP_MODULES/SUBPACKAGES and docs/architecture.md")


def violations(edges: list[Edge], package: str) -> list[Edge]:
    """Edges from a module to a layer it may not import."""
    return [e for e in edges if layer_of(e.dst, package) not in allowed_layers(layer_of(e.src, package))]


def _fmt(e: Edge, package: str) -> str:
    src, dst = layer_of(e.src, package), layer_of(e.dst, package)
    return f"{e.path}:{e.line}: {e.src} ({src}) imports {e.dst} ({dst})"


# --------------------------------------------------------------------------- the real package


@pytest.fixture(scope="module")
def graph() -> tuple[list[Edge], set[str]]:
    return build_graph(ROOT, "biomodal")


def test_every_module_has_a_layer(graph):
    edges, modules = graph
    missing = []
    for m in sorted(modules | {e.dst for e in edges}):
        try:
            layer_of(m, "biomodal")
        except KeyError as exc:
            missing.append(str(exc))
    assert not missing, "\n".join(missing)


def test_lower_layers_never_import_higher_ones(graph):
    edges, _ = graph
    bad = [e for e in violations(edges, "biomodal") if (e.src, e.dst) not in ALLOWED_VIOLATIONS]
    assert not bad, "layering violations (see docs/architecture.md):\n" + "\n".join(
        _fmt(e, "biomodal") for e in bad
    )


def test_allow_list_is_not_stale(graph):
    edges, _ = graph
    found = {(e.src, e.dst) for e in violations(edges, "biomodal")}
    stale = sorted(set(ALLOWED_VIOLATIONS) - found)
    assert not stale, f"fixed violations still allow-listed (remove them): {stale}"


def test_imports_resolve_to_existing_modules(graph):
    """Every biomodal import and lazy export names a module that exists (catches typos in _MAP)."""
    edges, modules = graph
    missing = [f"{e.path}:{e.line}: {e.dst}" for e in edges if e.dst not in modules]
    assert not missing, "imports of modules that do not exist:\n" + "\n".join(missing)


# --------------------------------------------------------------------------- the test of the test


def _write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_parser_finds_planted_violations(tmp_path):
    pkg = tmp_path / "biomodal"
    _write(pkg, "__init__.py", "")
    _write(pkg, "errors.py", "")
    _write(
        pkg,
        "io/__init__.py",
        '_MAP = {"read": "reader"}\n__getattr__, __dir__ = lazy_exports(__name__, _MAP)\n',
    )
    _write(
        pkg,
        "io/reader.py",
        "from biomodal.errors import DataError\n\n\ndef f():\n    from ..train import fit\n",
    )
    _write(pkg, "pp/__init__.py", "")
    _write(pkg, "pp/genes.py", "import importlib\n\nM = importlib.import_module('biomodal.eval.metrics')\n")
    _write(pkg, "nn/__init__.py", "")
    _write(pkg, "nn/heads.py", "from biomodal import losses\nfrom . import other\n")
    _write(pkg, "nn/other.py", "X = __import__('biomodal.nn.heads')\n")
    _write(pkg, "losses/__init__.py", "")
    _write(pkg, "losses/clip.py", "from biomodal.train.config import TrainConfig\nimport biomodal.nn.heads\n")
    _write(pkg, "train/__init__.py", "from biomodal.datasets import make_demo\n")
    _write(pkg, "eval/__init__.py", "")
    _write(
        pkg,
        "eval/metrics.py",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import biomodal.pl.plots\n",
    )
    _write(pkg, "pl/__init__.py", "")
    _write(pkg, "pl/plots.py", "import biomodal.eval.metrics\nimport numpy\n")
    _write(pkg, "datasets/__init__.py", "from biomodal.pp import genes\nfrom biomodal.data import x\n")
    _write(pkg, "data/__init__.py", "")
    _write(
        pkg, "recipes/__init__.py", "from biomodal.datasets import make_demo\nfrom biomodal.cli import main\n"
    )
    _write(pkg, "cli.py", "from biomodal.recipes import run\n")

    edges, modules = build_graph(pkg, "biomodal")
    assert "biomodal.io.reader" in modules and "biomodal.io" in modules
    assert Edge("biomodal.io", "biomodal.io.reader", "biomodal/io/__init__.py", 1) in edges  # lazy map
    found = {(e.src, e.dst, e.line) for e in violations(edges, "biomodal")}
    assert found == {
        ("biomodal.io.reader", "biomodal.train", 5),  # relative import inside a function
        ("biomodal.pp.genes", "biomodal.eval.metrics", 3),  # importlib.import_module literal
        ("biomodal.nn.heads", "biomodal.losses", 1),  # `from pkg import subpackage`; nn < losses
        ("biomodal.losses.clip", "biomodal.train.config", 1),  # losses may not import train
        ("biomodal.train", "biomodal.datasets", 1),  # datasets is for recipes and cli only
        ("biomodal.eval.metrics", "biomodal.pl.plots", 3),  # TYPE_CHECKING imports count too
        ("biomodal.datasets", "biomodal.data", 2),  # datasets sits beside io/pp, below data
        ("biomodal.recipes", "biomodal.cli", 2),
    }
    # Allowed directions produce no finding: nn -> nn (relative, __import__), losses -> nn,
    # pl -> eval, recipes -> datasets, cli -> recipes, io -> errors, datasets -> pp.
    with pytest.raises(KeyError, match="has no layer"):
        layer_of("biomodal.newthing", "biomodal")
