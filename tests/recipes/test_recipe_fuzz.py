"""Property test: mutated shipped recipes load, or fail with ConfigError naming the key.

Every shipped recipe (``recipes/**/*.yaml``) is mutated as a careless edit would: a key
dropped, renamed or retyped, a value out of range, sections moved between splits. Loading
must either succeed or raise :class:`~biomodal.errors.ConfigError` whose message names the
mutated key (or, for moved sections, the split rule broken), never another exception.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from biomodal.errors import ConfigError
from biomodal.recipes.schema import SHIPPED_DIR, load_recipe

RECIPES = {
    str(p.relative_to(SHIPPED_DIR)): yaml.safe_load(p.read_text())
    for p in sorted(SHIPPED_DIR.rglob("*.yaml"))
}
SPLITS = ["train", "val", "test"]
ODD_VALUES = [
    None, "", "x", "-1", 0, -1, -1e9, 1e12, 2**63, 0.5, -0.5, math.nan, math.inf, -math.inf,
    True, False, [], [0], [-5, 5], {}, {"a": 1}, "${HOME}", "../..",
]  # fmt: skip


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path of a nested recipe (dict keys and list positions)."""
    out = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    for k, v in items:
        out.append((*prefix, k))
        out.extend(_paths(v, (*prefix, k)))
    return out


def _parent(raw: dict, path: tuple) -> Any:
    node = raw
    for p in path[:-1]:
        node = node[p]
    return node


def _named(message: str, path: tuple, extra: tuple[str, ...] = ()) -> bool:
    words = [str(p) for p in path if isinstance(p, str)] + list(extra)
    return any(w and w in message for w in words) or not words


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, dict, str, tuple, tuple[str, ...]]:
    name = draw(st.sampled_from(sorted(RECIPES)))
    raw = copy.deepcopy(RECIPES[name])
    kind = draw(st.sampled_from(["drop", "rename", "retype", "range", "shuffle", "section_swap"]))
    paths = _paths(raw)
    path = draw(st.sampled_from(paths))
    parent, key = _parent(raw, path), path[-1]
    extra: tuple[str, ...] = ()
    if kind == "drop":
        if isinstance(parent, list):
            parent.pop(key)
        else:
            del parent[key]
        extra = ("required", "needs", "at least", "missing")
    elif kind == "rename" and isinstance(parent, dict):
        new = draw(st.sampled_from([f"{key}s", f"{key}_", str(key)[:-1] or "k", str(key).upper()]))
        parent[new] = parent.pop(key)
        path = (*path[:-1], new)
    elif kind in ("retype", "rename"):
        parent[key] = draw(st.sampled_from(ODD_VALUES))
    elif kind == "range":
        value = parent[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            parent[key] = draw(st.sampled_from(ODD_VALUES))
        else:
            parent[key] = draw(st.sampled_from([0, -1, -abs(value) - 1, value * 1e9, math.nan, 0.5]))
    elif kind in ("shuffle", "section_swap"):
        sections = (raw.get("data") or {}).get("sections") or []
        for sec in sections:
            if isinstance(sec, dict):
                sec["split"] = draw(st.sampled_from([*SPLITS, "holdout"]))
        if kind == "section_swap" and len(sections) > 1:
            i, j = draw(st.permutations(range(len(sections))))[:2]
            sections[i], sections[j] = sections[j], sections[i]
        path = ("data", "sections", "split")
        extra = ("split", "section", "donor", "train", "test")
    return name, raw, kind, path, extra


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_shipped_recipes_load_unmutated(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    load_recipe(copy.deepcopy(RECIPES[name]))


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_recipe_loads_or_names_the_key(case):
    name, raw, kind, path, extra = case
    try:
        load_recipe(raw)
    except ConfigError as exc:
        msg = str(exc)
        assert _named(msg, path, extra), f"{name} {kind} {path}: the message does not name the key: {msg}"
    # any other exception propagates and fails the property


def test_fuzz_catches_foreign_exceptions(monkeypatch):
    """The property can fail: an exception that is not a ConfigError is reported."""
    import biomodal.recipes.schema as schema

    def boom(*args, **kwargs):
        raise KeyError("x")

    monkeypatch.setattr(schema.Recipe, "model_validate", boom)
    with pytest.raises(KeyError):
        load_recipe(copy.deepcopy(next(iter(RECIPES.values()))))
    assert Path(SHIPPED_DIR).is_dir() and len(RECIPES) >= 5
