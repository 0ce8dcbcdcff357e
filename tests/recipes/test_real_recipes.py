"""Recipes on real file layouts: the shipped her2st recipe and arbitrary legacy-ST sections."""

from __future__ import annotations

import json

import pytest
import yaml

from biomodal.recipes import run
from biomodal.recipes.schema import SHIPPED_DIR
from tests.io.st_helpers import make_legacy_st

SHORT = [
    "trainer.max_steps=6",
    "trainer.batch_size=32",
    "trainer.warmup_steps=1",
    "trainer.ckpt_every=3",
    "trainer.progress=false",
    "data.tile_um=48",
    "data.mpp=1.5",
    "modalities.histology.params={channels: [8, 16, 32, 32]}",
    "model.embed_dim=16",
    "eval.pca_components=16",
    "eval.knn_k=5",
    "eval.plots=false",
]


@pytest.mark.realdata
@pytest.mark.slow
def test_her2st_recipe_trains_on_c2_and_reports_c3(shared_data, tmp_path):
    root = shared_data / "spatial" / "her2st"
    recipe = SHIPPED_DIR / "spatial" / "her2st.yaml"
    metrics = run(recipe, overrides=[*SHORT, f"data.root={root}"], out=tmp_path)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    # every selected C3 spot that has a counts row (182 selected, 2 without a row)
    assert saved["n_test"] == metrics["n_test"] == 180
    r = saved["retrieval"]["histology_to_expression"]
    assert r["n"] == saved["n_test"]
    assert r["chance@1"] == pytest.approx(1 / saved["n_test"])
    for key in ("pearson_mean", "baseline_pearson_mean", "colour_histogram_pearson_mean", "knn_pearson_mean"):
        assert key in saved["expression"]
    # mpp was estimated from the 200 um spot pitch and recorded with the model's spec
    recipe = yaml.safe_load((tmp_path / "recipe.yaml").read_text())
    assert [s["name"] for s in recipe["data"]["sections"]] == ["C2", "C3"]


@pytest.mark.slow
def test_other_legacy_st_sections_need_no_code(tmp_path):
    sections = []
    for i, (name, split) in enumerate([("A1", "train"), ("A2", "train"), ("B1", "test")]):
        make_legacy_st(tmp_path / "st" / name, n_x=9, n_y=8, n_genes=30, seed=i, px_per_step=120.0)
        sections.append(
            {
                "name": name,
                "donor": name[0],
                "split": split,
                "counts": f"{name}/counts.tsv.gz",
                "spots": f"{name}/spots.tsv",
                "image": f"{name}/image.jpg",
            }
        )
    recipe = yaml.safe_load((SHIPPED_DIR / "spatial" / "her2st.yaml").read_text())
    recipe["data"]["root"] = str(tmp_path / "st")
    recipe["data"]["sections"] = sections
    recipe["data"]["genes"]["n_top_genes"] = 20
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(recipe))
    metrics = run(path, overrides=SHORT, out=tmp_path / "run")
    assert metrics["n_test"] == 9 * 8 - 1  # the first spot of each section is not selected
    assert metrics["retrieval"]["expression_to_histology"]["n"] == metrics["n_test"]
