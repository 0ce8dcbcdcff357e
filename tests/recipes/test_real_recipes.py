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
    "eval.plots=false",
]
#: the recipe's protocols, small (the frozen ImageNet baseline has its own test)
PROTOCOLS = (
    "eval.protocols=["
    "{name: retrieval, params: {ks: [1, 10]}},"
    "{name: hest_expression, params: {modality: histology, n_components: 16, top_k: 20,"
    " baselines: [untrained, colour_histogram]}},"
    "{name: knn_expression, params: {k: 5, top_k: 20}},"
    "{name: spatial_probe, params: {labels: [label], modalities: [histology], n_blocks: 6, n_folds: 3,"
    " baselines: [colour_histogram]}}]"
)


@pytest.mark.realdata
@pytest.mark.slow
def test_her2st_recipe_trains_on_two_patients_and_reports_a1(shared_data, tmp_path):
    root = shared_data / "spatial" / "her2st"
    recipe = SHIPPED_DIR / "spatial" / "her2st.yaml"
    over = [*SHORT, PROTOCOLS, "trainer.val_every=3", f"data.root={root}"]
    metrics = run(recipe, overrides=over, out=tmp_path)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    # every selected A1 spot that has a counts row (348 selected, 2 without a row)
    assert saved["n_test"] == metrics["n_test"] == 346
    assert saved["n_train"] == 325 + 187  # A2 + C2
    r = saved["retrieval"]["histology_to_expression"]
    assert r["n"] == saved["n_test"] and r["chance@1"] == pytest.approx(1 / saved["n_test"])
    for key in ("pearson_mean", "baseline_pearson_mean", "colour_histogram_pearson_mean", "knn_pearson_mean"):
        assert -1 <= saved["expression"][key] <= 1
    # A1's pathologist labels reach the tissue-type probe (classes under 10 spots left out)
    probe = saved["spatial_probe"]["label"]
    assert probe["histology"]["n"] == 346 - 5 - 2  # "undetermined" ignored, 2 immune-infiltrate spots
    assert probe["histology"]["chance_balanced"] == pytest.approx(0.25)
    assert set(probe["dropped_small_classes"]) == {"immune infiltrate"}
    recipe = yaml.safe_load((tmp_path / "recipe.yaml").read_text())
    assert [s["name"] for s in recipe["data"]["sections"]] == ["A2", "C2", "C3", "A1"]


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
    metrics = run(path, overrides=[*SHORT, PROTOCOLS], out=tmp_path / "run")
    assert metrics["n_test"] == 9 * 8 - 1  # the first spot of each section is not selected
    assert metrics["retrieval"]["expression_to_histology"]["n"] == metrics["n_test"]
