"""A recipe with a frozen encoder trains on cached features and scores what the uncached run scores."""

from __future__ import annotations

import math

import pytest

from biomodal.recipes import run
from tests.recipes.test_run import FAST

FROZEN = [*FAST, "modalities.histology.freeze=true", "data.augment=false"]


def _flat(d: dict, prefix: str = "") -> dict[str, float]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[f"{prefix}{k}"] = float(v)
    return out


@pytest.mark.slow
def test_cached_recipe_equals_uncached(tmp_path):
    cache = tmp_path / "cache"
    cached = run("spatial/demo", overrides=[*FROZEN, f"output.feature_cache={cache}"], out=tmp_path / "a")
    assert len(list(cache.glob("histology-*.npy"))) >= 2  # train and test splits (val too)
    plain = run("spatial/demo", overrides=[*FROZEN, "modalities.histology.cache_features=false",
                                           f"output.feature_cache={cache}"], out=tmp_path / "b")  # fmt: skip
    a, b = _flat(cached), _flat(plain)
    compared = [k for k in a if k in b and not k.startswith("train.seconds") and "seconds" not in k]
    assert len(compared) > 20
    for k in compared:
        if math.isnan(a[k]) and math.isnan(b[k]):
            continue
        assert a[k] == pytest.approx(b[k], rel=1e-3, abs=1e-4), k
