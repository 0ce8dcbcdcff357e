"""AnnData convention guard: public AnnData functions in pp, eval and pl follow scanpy.

The rule (see docs/architecture.md, "AnnData functions"), read off scanpy's
``pp.combat(adata, key="batch", *, covariates=None, inplace=True)`` and
``external.pp.harmony_integrate(adata, key, *, basis, adjusted_basis)``:

1. A public module-level function whose first parameter is one AnnData (named
   ``adata`` / ``..._adata``, annotated ``AnnData``, or documented as "AnnData, or ...")
   takes everything after it keyword-only, except at most two *grouping keys*:
   obs columns (or per-cell values) the computation is grouped by, named one of
   :data:`POSITIONAL_KEYS` (scanpy's ``key``/``batch_key``). No ``*args``.
2. If it writes into the AnnData (stores into ``obs``/``obsm``/``uns``/``layers``/``X``...
   of that argument, directly or through a module-level helper, or takes ``copy``),
   it takes keyword-only ``copy: bool = False``, names where results go with
   keyword-only ``key_added`` or ``adjusted_basis``, has no ``inplace``, and returns
   ``None`` when ``copy=False`` (modifying its argument) and the modified copy when
   ``copy=True`` (leaving its argument untouched): the last part is checked by calling it.
3. Functions that only read the AnnData (metrics) need neither ``copy`` nor ``key_added``.

Functions taking a *collection* of AnnData (``hvg_union(adatas, ...)``) are not
AnnData-first and are out of scope.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1] / "biomodal"
SCOPES = ("pp", "eval", "pl")

POSITIONAL_KEYS = frozenset({"key", "batch_key", "label_key", "groupby", "batch", "labels"})
SLOTS = frozenset({"X", "obs", "var", "obsm", "varm", "obsp", "varp", "uns", "layers", "raw"})
_CONTAINER = re.compile(r"(Sequence|list|List|Iterable|Collection|tuple|Mapping|dict)\[[^\]]*AnnData")


def _all_names(tree: ast.Module) -> set[str] | None:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "__all__" for t in node.targets):
            try:
                return set(ast.literal_eval(node.value))
            except ValueError:
                return None
    return None


def _documented_as_adata(fn: ast.FunctionDef, name: str) -> bool:
    doc = ast.get_docstring(fn) or ""
    m = re.search(r"^\s*" + re.escape(name) + r"\b[^\n]*\n(\s*[^\n]*)", doc, flags=re.M)
    if not m:
        return False
    head, first_line = m.group(0).splitlines()[0], m.group(1)
    typ = head.split(":", 1)[1] if ":" in head else ""
    return bool(re.match(r"\s*(an? )?AnnData\b", typ) or re.match(r"\s*(an? )?AnnData\b", first_line))


def is_adata_first(fn: ast.FunctionDef) -> bool:
    """Whether the first parameter of ``fn`` is one AnnData (by name, annotation or docstring)."""
    params = [*fn.args.posonlyargs, *fn.args.args]
    if not params:
        return False
    p = params[0]
    if re.search(r"(^|_)adata$", p.arg):
        return True
    ann = ast.unparse(p.annotation) if p.annotation is not None else ""
    if "AnnData" in ann:
        return not _CONTAINER.search(ann)
    return _documented_as_adata(fn, p.arg)


def _names_in(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _aliases(fn: ast.FunctionDef, first: str) -> set[str]:
    """``first`` plus local names assigned from expressions that use it (``a = adata.copy()``)."""
    aliases = {first}
    changed = True
    while changed:
        changed = False
        for node in ast.walk(fn):
            if isinstance(node, ast.Assign) and _names_in(node.value) & aliases:
                for t in node.targets:
                    if isinstance(t, ast.Name) and t.id not in aliases:
                        aliases.add(t.id)
                        changed = True
    return aliases


def _stores_into(fn: ast.FunctionDef, aliases: set[str]) -> bool:
    for node in ast.walk(fn):
        targets: list[ast.AST] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        elif isinstance(node, ast.Delete):
            targets = list(node.targets)
        for t in targets:
            if isinstance(t, ast.Subscript):
                t = t.value
            if isinstance(t, ast.Attribute) and t.attr in SLOTS and isinstance(t.value, ast.Name):
                if t.value.id in aliases:
                    return True
    return False


def _writers(functions: dict[str, ast.FunctionDef]) -> set[str]:
    """Module-level functions that write into their first argument (transitively through helpers)."""
    first = {n: ([*f.args.posonlyargs, *f.args.args] or [None])[0] for n, f in functions.items()}
    aliases = {n: _aliases(f, first[n].arg) for n, f in functions.items() if first[n] is not None}
    writers = {n for n in aliases if _stores_into(functions[n], aliases[n])}
    changed = True
    while changed:
        changed = False
        for n, al in aliases.items():
            if n in writers:
                continue
            for call in (c for c in ast.walk(functions[n]) if isinstance(c, ast.Call)):
                callee = getattr(call.func, "id", None)
                if callee in writers and call.args and _names_in(call.args[0]) & al:
                    writers.add(n)
                    changed = True
                    break
    return writers


def static_violations(path: Path, module: str) -> dict[str, list[str]]:
    """Convention problems of the public AnnData functions in ``path``, by qualified name."""
    tree = ast.parse(path.read_text(), filename=str(path))
    functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    public = _all_names(tree)
    writers = _writers(functions)
    out: dict[str, list[str]] = {}
    for name, fn in functions.items():
        if (public is not None and name not in public) or (public is None and name.startswith("_")):
            continue
        if not is_adata_first(fn):
            continue
        a = fn.args
        problems: list[str] = []
        positional = [p.arg for p in [*a.posonlyargs, *a.args][1:]]
        extra = [p for p in positional if p not in POSITIONAL_KEYS]
        if extra or len(positional) > 2:
            problems.append(
                f"parameters {positional} after the AnnData are positional; make them keyword-only "
                f"(only up to two grouping keys {sorted(POSITIONAL_KEYS)} may stay positional)"
            )
        if a.vararg is not None:
            problems.append(f"*{a.vararg.arg} after the AnnData")
        kwonly = {p.arg: d for p, d in zip(a.kwonlyargs, a.kw_defaults)}
        every = set(positional) | set(kwonly)
        if name in writers or "copy" in every or "key_added" in every:
            copy_default = kwonly.get("copy")
            if not (isinstance(copy_default, ast.Constant) and copy_default.value is False):
                problems.append("writes into the AnnData but has no keyword-only `copy: bool = False`")
            if not ({"key_added", "adjusted_basis"} & set(kwonly)):
                problems.append(
                    "writes into the AnnData but names no destination (`key_added`/`adjusted_basis`)"
                )
            if "inplace" in every:
                problems.append("has `inplace`; biomodal uses `copy` (return None, or the copy)")
        if problems:
            out[f"{module}.{name}"] = [f"{path.name}:{fn.lineno}: {p}" for p in problems]
    return out


def _modules(root: Path, package: str) -> dict[str, Path]:
    found = {}
    for scope in SCOPES:
        for p in sorted((root / scope).rglob("*.py")):
            parts = list(p.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = p
    return found


def writer_functions(root: Path, package: str) -> list[str]:
    """Qualified names of the public AnnData-first writers in the scopes."""
    names = []
    for module, path in _modules(root, package).items():
        tree = ast.parse(path.read_text())
        functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
        public = _all_names(tree)
        for n in sorted(_writers(functions)):
            if (public is None and not n.startswith("_")) or (public is not None and n in public):
                if is_adata_first(functions[n]):
                    names.append(f"{module}.{n}")
    return names


def _toy_adata() -> Any:
    import anndata as ad
    import pandas as pd

    rng = np.random.default_rng(0)
    n = 60
    obs = pd.DataFrame(
        {
            "batch": pd.Categorical(np.repeat(["a", "b"], n // 2)),
            "labels": pd.Categorical(np.tile(["x", "y", "z"], n // 3)),
            "time": rng.uniform(1, 10, n),
            "event": rng.integers(0, 2, n).astype(bool),
            "split": np.tile(["train", "train", "test"], n // 3),
        },
        index=[f"c{i}" for i in range(n)],
    )
    adata = ad.AnnData(X=np.log1p(rng.poisson(3.0, (n, 12)).astype(np.float64)), obs=obs)
    adata.obsm["X_pca"] = rng.normal(size=(n, 5)) + (obs["batch"] == "b").to_numpy()[:, None]
    return adata


def _state(adata: Any) -> tuple:
    return (
        sorted(adata.obs.columns),
        sorted(adata.obsm),
        sorted(adata.uns),
        sorted(adata.layers),
        np.asarray(adata.X).tobytes(),
    )


def runtime_violations(fn: Any) -> list[str]:
    """Call ``fn`` on a toy AnnData: ``None`` + modified argument, or the copy + untouched argument."""
    problems = []
    a = _toy_adata()
    before = _state(a)
    ret = fn(a)
    if ret is not None:
        problems.append(f"returned {type(ret).__name__} with copy=False (expected None)")
    if _state(a) == before:
        problems.append("copy=False did not modify the AnnData")
    b = _toy_adata()
    before = _state(b)
    ret = fn(b, copy=True)
    if ret is None or ret is b or not hasattr(ret, "obsm"):
        problems.append("copy=True did not return a new AnnData")
    if _state(b) != before:
        problems.append("copy=True modified its argument")
    return problems


# --------------------------------------------------------------------------- the real package


def test_public_anndata_functions_follow_scanpy():
    bad: dict[str, list[str]] = {}
    for module, path in _modules(ROOT, "biomodal").items():
        bad.update(static_violations(path, module))
    assert not bad, "AnnData convention violations:\n" + "\n".join(
        f"{k}: {p}" for k, v in sorted(bad.items()) for p in v
    )


def test_known_writers_are_detected():
    writers = set(writer_functions(ROOT, "biomodal"))
    assert {
        "biomodal.pp.batch.center_scale",
        "biomodal.pp.batch.harmony",
        "biomodal.pp.batch.combat",
    } <= writers


@pytest.mark.parametrize("qualname", writer_functions(ROOT, "biomodal"))
def test_writers_return_none_or_the_copy(qualname):
    from biomodal.errors import MissingDependencyError

    module, name = qualname.rsplit(".", 1)
    try:
        fn = getattr(importlib.import_module(module), name)
        problems = runtime_violations(fn)
    except MissingDependencyError as exc:
        pytest.skip(f"{qualname}: optional dependency missing ({exc})")
    assert not problems, f"{qualname}: " + "; ".join(problems)


# --------------------------------------------------------------------------- the test of the test

_PLANTED = '''
from collections.abc import Sequence
from anndata import AnnData

__all__ = ["bad_positional", "bad_inplace", "returns_self", "good", "reader", "via_helper",
           "collection", "annotated", "bad_no_dest"]


def _put(adata, value):
    adata.uns["x"] = value


def bad_positional(adata, basis="X_pca", copy=False):
    adata.obsm["out"] = adata.obsm[basis]


def bad_inplace(adata, *, key_added="k", inplace=True):
    adata.uns[key_added] = 1


def bad_no_dest(adata, *, copy=False):
    out = adata.copy() if copy else adata
    out.obs["flag"] = 1
    return out if copy else None


def returns_self(adata, *, key_added="k", copy=False):
    adata = adata.copy() if copy else adata
    adata.uns[key_added] = 1
    return adata


def good(adata, key="batch", *, key_added="k", copy=False):
    adata = adata.copy() if copy else adata
    adata.uns[key_added] = key
    return adata if copy else None


def reader(adata, batch, labels, *, basis="X_pca"):
    tmp = AnnData()
    tmp.obsm["x"] = adata.obsm[basis]  # writing into a local AnnData is not writing into the argument
    return 0.0


def via_helper(data, *, key_added="x", copy=False):
    """Write through a helper.

    Parameters
    ----------
    data
        AnnData, or an array.
    """
    data = data.copy() if copy else data
    _put(data, 1)
    return data if copy else None


def collection(adatas: Sequence[AnnData], n_top, flavor):
    return []


def annotated(x: "AnnData | None", n_top):
    return x
'''


def test_checker_finds_planted_violations(tmp_path):
    path = tmp_path / "planted.py"
    path.write_text(_PLANTED)
    found = static_violations(path, "planted")
    assert set(found) == {
        "planted.bad_positional",
        "planted.bad_inplace",
        "planted.bad_no_dest",
        "planted.annotated",
    }
    assert any("keyword-only" in p and "basis" in p for p in found["planted.bad_positional"])
    assert any("no keyword-only `copy" in p for p in found["planted.bad_positional"])
    assert any("names no destination" in p for p in found["planted.bad_positional"])
    assert any("`inplace`" in p for p in found["planted.bad_inplace"])
    assert any("names no destination" in p for p in found["planted.bad_no_dest"])
    assert any("n_top" in p for p in found["planted.annotated"])

    tree = ast.parse(_PLANTED)
    functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert {"via_helper", "good", "returns_self", "bad_positional"} <= _writers(functions)
    assert "reader" not in _writers(functions)

    spec = importlib.util.spec_from_file_location("planted", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["planted"] = mod
    try:
        spec.loader.exec_module(mod)
        assert runtime_violations(mod.good) == []
        assert runtime_violations(mod.via_helper) == []
        assert any("expected None" in p for p in runtime_violations(mod.returns_self))
    finally:
        del sys.modules["planted"]
