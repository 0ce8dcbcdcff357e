"""Recipe sweeps (the batch-correction ablation runs through them)."""

from __future__ import annotations

import json

import pytest

from biomodal.errors import ConfigError
from biomodal.recipes import load_recipe, run
from biomodal.recipes.sweep import sweep_table
from tests.recipes.test_run import FAST


def test_sweep_table_keeps_transductive_post_hoc_metrics_in_their_own_columns():
    ran = ["retrieval", "batch_mixing"]  # columns come from the protocols each variant ran
    plain = {
        "protocols": ran,
        "retrieval": {"histology_to_expression": {"recall@1": 0.5}},
        "batch": {"joint": {"ilisi": 0.1}},
    }
    corrected = {
        "protocols": ran,
        "retrieval": {"histology_to_expression": {"recall@1": 0.25}},
        "batch": {"joint": {"ilisi": 0.1}, "joint_transductive_harmony": {"ilisi": 0.9}},
    }
    table = sweep_table({"none": plain, "harmony": corrected})
    lines = table.splitlines()
    assert lines[0] == "| variant | h->e R@1 | iLISI | iLISI (harmony, transd.) |"
    assert lines[2] == "| none | 0.500 | 0.100 |  |"
    assert lines[3] == "| harmony | 0.250 | 0.100 | 0.900 |"


def test_adversary_needs_two_training_batches(tmp_path):
    raw = load_recipe("spatial/demo", overrides=[*FAST, "batch_correction.adversarial.weight=0.1"]).to_dict()
    raw["data"]["batch_key"] = "donor"  # FAST has a single training donor
    with pytest.raises(ConfigError, match="batch_key 'donor'"):
        run(raw, out=tmp_path)


def test_bad_variant_fails_before_training(tmp_path):
    rec = load_recipe("spatial/batch_ablation")
    raw = rec.to_dict()
    raw["sweep"] = {"ok": [], "typo": ["batch_correction.samplr=within"]}
    with pytest.raises(ConfigError, match="samplr"):
        run(raw, out=tmp_path)
    assert not (tmp_path / "ok" / "metrics.json").exists()


@pytest.mark.slow
def test_sweep_runs_each_variant_on_shared_data(tmp_path):
    raw = load_recipe("spatial/demo", overrides=[*FAST, "data.demo.n_donors=4"]).to_dict()
    raw["data"]["batch_key"] = "donor"  # two training donors
    raw["sweep"] = {
        "none": [],
        "adversarial_within": ["batch_correction.adversarial.weight=0.2", "batch_correction.sampler=within"],
    }
    results = run(raw, out=tmp_path)
    assert list(results) == ["none", "adversarial_within"]
    for name in results:
        assert (tmp_path / name / "metrics.json").is_file()
    saved = json.loads((tmp_path / "sweep.json").read_text())
    assert saved.keys() == results.keys()
    assert "| adversarial_within |" in (tmp_path / "sweep.md").read_text()
    # the demo data were generated once, under the sweep directory, and shared
    assert len(list((tmp_path / "data").glob("*.h5ad"))) == 4
    assert not list((tmp_path / "none").glob("data"))
