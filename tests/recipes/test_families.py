"""Family plugins: dispatch on ``data.family``, a non-spatial family through the generic runner."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from biomodal.errors import CheckpointError, ConfigError
from biomodal.recipes import load, load_recipe, run
from biomodal.recipes.checkpoint import evaluate_checkpoint
from biomodal.recipes.families import get_family, list_families
from biomodal.recipes.families.spatial import SpatialData
from tests.recipes import _toy_family  # noqa: F401  (registers the "toy" family)

RECIPES = Path(__file__).resolve().parents[1] / ".." / "biomodal" / "recipes"


def test_family_defaults_to_spatial_for_old_recipes():
    old = load_recipe("spatial/demo")
    assert isinstance(old.data, SpatialData) and old.data.family == "spatial"
    explicit = load_recipe("spatial/demo", overrides=["data.family=spatial"])
    assert explicit.to_dict() == old.to_dict()
    assert load_recipe(old.to_dict()).to_dict() == old.to_dict()  # the resolved recipe round-trips
    assert "spatial" in list_families()


def test_unknown_family_did_you_mean():
    with pytest.raises(ConfigError, match=r"data.*unknown family 'spatail'.*Did you mean 'spatial'"):
        load_recipe({"data": {"family": "spatail"}})


def test_family_supplies_default_modalities_and_protocols():
    rec = load_recipe({"data": {"family": "toy"}, "trainer": {"max_steps": 1}})
    assert list(rec.modalities) == ["labs", "ecg"]
    assert [p.name for p in rec.eval.protocols] == ["retrieval", "probe"]
    with pytest.raises(ConfigError, match=r"data\.nn"):  # the toy family's own config is validated
        load_recipe({"data": {"family": "toy", "nn": 3}, "trainer": {"max_steps": 1}})


def test_spatial_shorthand_cannot_mix_with_explicit_protocols():
    with pytest.raises(ConfigError, match=r"eval\.top_genes"):
        load_recipe({"eval": {"protocols": ["retrieval"], "top_genes": 10}})


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy") / "run"
    recipe = {
        "name": "toy",
        "data": {"family": "toy", "n": 240},
        "model": {"embed_dim": 8},
        "trainer": {"max_steps": 60, "batch_size": 48, "lr": 0.01, "val_every": 20, "progress": False,
                    "early_stopping_patience": 5},
    }  # fmt: skip
    return out, run(recipe, out=out)


def test_non_spatial_family_runs_through_generic_runner(toy_run):
    out, metrics = toy_run
    r = metrics["retrieval"]["labs_to_ecg"]
    assert r["n"] == 60 and r["chance@1"] == pytest.approx(1 / 60)
    assert r["recall@5"] > 3 * r["chance@5"], r  # two views of one latent align
    assert set(metrics["retrieval"]) == {"labs_to_ecg", "ecg_to_labs"}
    assert metrics["probe"]["sign"]["labs"]["balanced_accuracy"] > 0.7
    assert metrics["unit"] == "subjects" and metrics["protocols"] == ["retrieval", "probe"]
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["retrieval"]["labs_to_ecg"]["recall@1"] == pytest.approx(r["recall@1"])
    # early stopping followed the retrieval protocol's validation metric (ks [1, 5] -> recall@1)
    header = (out / "val_metrics.csv").read_text().splitlines()[0]
    assert "val/recall@1_mean" in header


def test_toy_checkpoint_roundtrip_and_validation(toy_run, tmp_path):
    out, metrics = toy_run
    model = load(out / "model.pt")
    assert model.family is get_family("toy")
    assert set(model.preprocessors) == {"labs", "ecg"}
    again = evaluate_checkpoint(out / "model.pt", out=tmp_path / "eval")
    assert again["retrieval"]["labs_to_ecg"]["recall@5"] == pytest.approx(
        metrics["retrieval"]["labs_to_ecg"]["recall@5"], abs=1e-6
    )
    assert not (out / "eval").exists() or (out / "metrics.json").is_file()

    import torch

    ckpt = torch.load(out / "model.pt", weights_only=True)
    ckpt["extra"]["preprocessors"]["ecg"]["mean"] = [0.0] * 4  # a panel that no longer fits the encoder
    bad = tmp_path / "bad.pt"
    torch.save(ckpt, bad)
    with pytest.raises(CheckpointError, match=r"modality 'ecg'.*in_features"):
        load(bad)


def test_old_spatial_checkpoint_extra_is_upgraded():
    fam = get_family("spatial")
    old = {
        "recipe": {},
        "genes": {"format": "x", "var_names": ["A", "B", "C"]},
        "dataset": {"tile_um": 72.0, "tile_px": 48, "mpp": 1.5},
        "batch_categories": ["a"],
    }
    new = fam.upgrade_checkpoint(old)
    assert new["preprocessors"]["histology"] == {"tile_um": 72.0, "tile_px": 48, "mpp": 1.5}
    assert new["input_specs"] == {"expression": {"in_features": 3}}
    assert fam.upgrade_checkpoint(new) is new


@pytest.mark.parametrize("module", ["runner.py", "_build.py", "checkpoint.py", "sweep.py", "_evaluate.py"])
def test_generic_recipe_modules_name_no_modality(module):
    from biomodal.modalities import MODALITIES

    text = (RECIPES / module).read_text()
    code = re.sub(r'"""[\s\S]*?"""', "", text)  # docstrings may give examples
    found = [m for m in MODALITIES if re.search(rf"['\"]{m}['\"]", code)]
    assert not found, f"{module} names modalities {found}: only families and protocols may"


def test_one_failing_protocol_does_not_lose_the_others(tmp_path):
    from biomodal.eval.protocols import ProtocolConfig, list_protocols, register_protocol

    if "_test_fails" not in list_protocols():

        @register_protocol("_test_fails", config=ProtocolConfig)
        def _fails(ctx, cfg):
            raise ValueError("deliberate failure")

    recipe = {
        "data": {"family": "toy", "n": 120},
        "eval": {"plots": False, "protocols": ["_test_fails", "retrieval"]},
        "trainer": {"max_steps": 5, "batch_size": 24, "progress": False},
    }
    metrics = run(recipe, out=tmp_path / "run")
    assert metrics["errors"] == {"_test_fails": "ValueError: deliberate failure"}
    assert "labs_to_ecg" in metrics["retrieval"] and metrics["protocols"] == ["retrieval"]
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["errors"]


def test_recipe_reaches_loss_stages_and_momentum_distillation(tmp_path):
    import csv

    recipe = {
        "data": {"family": "toy", "n": 120},
        "model": {"embed_dim": 8, "distill": {"alpha": 0.3, "momentum": 0.9}},
        "loss": [{"name": "clip", "until_step": 6}, {"name": "clip", "params": {"logit_scale": 5.0}}],
        "eval": {"plots": False, "protocols": ["retrieval"]},
        "trainer": {"max_steps": 12, "batch_size": 24, "log_every": 1, "progress": False},
    }
    out = tmp_path / "run"
    run(recipe, out=out)
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    stages = [float(r["loss_stage"]) for r in rows]
    assert stages[0] == 0 and stages[-1] == 1 and stages == sorted(stages)  # switched once, logged
    assert "distill" in rows[0]
    model = load(out / "model.pt")  # rebuilt with the same stages and teacher
    assert model.teacher is not None
    with pytest.raises(ConfigError, match="until_step"):
        load_recipe({**recipe, "loss": [{"name": "clip"}, {"name": "siglip"}]})


def test_context_carries_the_loss_name_and_an_encoder_of_raw_inputs(toy_run):
    import numpy as np
    import torch

    from biomodal.recipes._evaluate import eval_covariates, make_context

    out, _ = toy_run
    model = load(out / "model.pt")
    prepared = model.family.prepare(model.recipe, out, preprocessors=model.preprocessors)
    ctx = make_context(model.recipe, model, prepared, "test")
    assert ctx.loss == model.recipe.loss.name
    raw = next(iter(torch.utils.data.DataLoader(prepared.eval_datasets["test"], batch_size=7)))["ecg"]
    model.train()
    z = ctx.encode("ecg", raw)  # eval mode for the pass, the caller's mode afterwards
    assert model.training
    np.testing.assert_allclose(z, ctx.emb("test", "ecg")[:7], rtol=1e-4, atol=1e-5)
    # encoder features before the head are baselines, distinct from the normalised head output
    enc = ctx.feature("trained_encoder", "test", "ecg")
    assert enc.shape[0] == ctx.emb("test", "ecg").shape[0]
    assert not np.allclose(np.linalg.norm(enc, axis=1), 1.0)
    assert eval_covariates(model) == ()  # batch codes are never passed at evaluation
