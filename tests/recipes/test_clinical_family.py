"""The clinical family on real PTB-XL: fold splits, train-only labs, metrics, checkpoints, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from biomodal.errors import ConfigError, DataError
from biomodal.recipes import load, load_recipe, run
from biomodal.recipes.families import get_family
from biomodal.recipes.schema import SHIPPED_DIR

RECIPE = SHIPPED_DIR / "clinical" / "ptbxl_ecg_report.yaml"
SHORT = [
    "trainer.max_steps=4",
    "trainer.batch_size=32",
    "trainer.val_every=2",
    "trainer.warmup_steps=0",
    "modalities.labs={encoder: labs_mlp, params: {hidden: [16]}}",
    "model.embed_dim=16",
    "eval.plots=false",
    "data.supervised_epochs=2",
]
FOLDS = {"train": {1, 2, 3, 4, 5, 6}, "val": {7}, "test": {8}}


def _root(shared_data: Path) -> Path:
    return shared_data / "ecg" / "ptbxl"


def _prepare(shared_data: Path, *over: str):
    rec = load_recipe(RECIPE, [*SHORT, f"data.root={_root(shared_data)}", *over])
    return rec, get_family("clinical").prepare(rec, Path("."))


@pytest.fixture(scope="module")
def tiny_run(shared_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("ptbxl") / "run"
    metrics = run(RECIPE, overrides=[*SHORT, f"data.root={_root(shared_data)}"], out=out)
    return out, metrics


@pytest.mark.realdata
def test_splits_follow_strat_fold_and_keep_patients_apart(shared_data):
    from biomodal.io import read_ptbxl_index

    _, p = _prepare(shared_data)
    eds = p.eval_datasets
    assert {s: len(d) for s, d in eds.items()} == {"train": 265, "val": 44, "test": 44}
    for split, ds in eds.items():
        assert set(ds.obs["strat_fold"]) == FOLDS[split] and (ds.obs["split"] == split).all()
    ids = [set(d.obs.index) for d in eds.values()]
    patients = [set(d.obs["patient_id"]) for d in eds.values()]
    for i in range(3):
        for j in range(i + 1, 3):
            assert not ids[i] & ids[j] and not patients[i] & patients[j]
    assert sum(len(s) for s in ids) == 353  # every record of folds 1-8 once
    # PTB-XL's folds guarantee it: no patient of the full subset has records in two folds
    index = read_ptbxl_index(_root(shared_data))
    assert index.groupby("patient_id")["strat_fold"].nunique().max() == 1
    assert p.group_key == "patient_id" and p.unit == "records"
    # one record has an empty report: kept, its report masked
    empty = index.index[index["report_clean"].str.strip() == ""]
    assert len(empty) == 1
    split = next(s for s, d in eds.items() if str(empty[0]) in d.obs.index)
    ds = eds[split]
    i = list(ds.obs.index).index(str(empty[0]))
    item = ds[i]
    assert item["report_mask"].item() is False and item["ecg"].shape == (12, 1000)
    assert item["ecg"].dtype.is_floating_point and item["labs"].shape == (8,)
    other = eds["train"][0]
    assert isinstance(other["report"], str) and other["report"] and "ecg_mask" not in other
    y = p.targets["superclass"]
    assert y.names == ["NORM", "MI", "STTC", "CD", "HYP"]
    assert y.values["test"].shape == (44, 5) and y.values["train"].sum(0).tolist()[0] > 100
    feats = p.features["ecg_features"]("train", "ecg")
    assert feats.shape == (265, 12 * 14 + 1) and np.isfinite(feats).all()
    with pytest.raises(ConfigError, match="ecg modality"):
        p.features["ecg_features"]("train", "report")


@pytest.mark.realdata
def test_labs_standardised_with_training_folds_only(shared_data):
    from biomodal.io import ptbxl_labs, read_ptbxl_index

    _, p = _prepare(shared_data)
    labs = p.preprocessors["labs"]
    index = read_ptbxl_index(_root(shared_data))
    train = index["strat_fold"].isin(FOLDS["train"]).to_numpy()
    table = ptbxl_labs(index)
    np.testing.assert_allclose(labs.mean_, np.nanmean(table.values[train], axis=0), rtol=1e-6)
    assert labs.n_observed_.tolist() == np.isfinite(table.values[train]).sum(0).tolist()
    assert not np.allclose(labs.mean_, np.nanmean(table.values, axis=0))  # all rows would differ
    assert p.input_specs["labs"] == {"in_features": 4} and p.input_specs["ecg"] == {"leads": 12}
    z = p.eval_datasets["train"]._data["labs"].numpy()
    observed = z[:, 4:] < 0.5
    for j in range(4):
        assert abs(z[observed[:, j], j].mean()) < 1e-4  # zero mean on the training rows
    assert (z[:, 4:][:, 2] == 1).sum() > 100  # height is mostly missing: real missingness


@pytest.mark.realdata
def test_short_run_metrics_and_checkpoint_roundtrip(tiny_run, shared_data, tmp_path):
    out, m = tiny_run
    assert m["protocols"] == ["retrieval", "zero_shot", "multilabel_probe"] and "errors" not in m
    assert m["n_test"] == 44 and m["unit"] == "records"
    for pair in ("ecg_to_report", "report_to_ecg"):
        r = m["retrieval"][pair]
        assert r["n"] == 44 and r["chance@1"] == pytest.approx(1 / 44) and 0 <= r["recall@10"] <= 1
        assert 0 <= r["untrained_recall@10"] <= 1 and r["untrained_median_rank"] >= 1
    z = m["zero_shot"]
    assert set(z["per_class"]) == {"NORM", "MI", "STTC", "CD", "HYP"} and z["chance"] == 0.5
    assert 0 <= z["macro_auroc"] <= 1 and "note" not in z
    assert 0 <= z["untrained_macro_auroc"] <= 1 and set(z["untrained_per_class"]) == set(z["per_class"])
    probe = m["probe"]["superclass"]
    for key in ("macro_auroc", "untrained_macro_auroc", "features_macro_auroc", "trained_encoder_macro_auroc",
                "untrained_encoder_macro_auroc", "supervised_ecg_macro_auroc"):  # fmt: skip
        assert 0 <= probe[key] <= 1, key
    assert probe["features_name"] == "ecg_features" and probe["n_train"] == 265
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["zero_shot"]["macro_auroc"] == pytest.approx(z["macro_auroc"])
    model = load(out / "model.pt")
    assert set(model.preprocessors) == {"ecg", "report", "labs"}
    assert model.preprocessors["report"].source == "report"
    prepared = model.family.prepare(model.recipe, tmp_path, preprocessors=model.preprocessors)
    fresh = get_family("clinical").prepare(model.recipe, tmp_path)
    np.testing.assert_array_equal(prepared.preprocessors["labs"].mean_, fresh.preprocessors["labs"].mean_)
    assert prepared.preprocessors["ecg"].state_dict() == fresh.preprocessors["ecg"].state_dict()
    from biomodal.eval import embed

    emb = embed(model, prepared.eval_datasets["test"], progress=False)
    assert emb["ecg"].shape == (44, 16) and np.isfinite(emb["ecg"]).all()


@pytest.mark.realdata
def test_statements_text_marks_zero_shot_as_not_zero_shot(shared_data):
    rec, p = _prepare(shared_data, "data.text=statements")
    assert p.info["text_from_labels"] is True and p.preprocessors["report"].source == "statements"
    spec = next(s for s in rec.eval.protocols if s.name == "zero_shot")
    assert spec.params["text_from_labels"] is True
    assert "normal ECG" in p.eval_datasets["train"].texts()[0]
    defaults = get_family("clinical").default_protocols({}, {"text": "statements"})
    zs = next(d for d in defaults if d["name"] == "zero_shot")
    assert zs["params"]["text_from_labels"] is True and zs["params"]["prompts"]["NORM"] == ["normal ECG"]


@pytest.mark.realdata
def test_bad_folds_and_folders_are_named(shared_data, tmp_path):
    root = f"data.root={_root(shared_data)}"
    with pytest.raises(ConfigError, match=r"strat_fold 7 is listed in both val and test"):
        load_recipe(RECIPE, [root, "data.folds={train: [1, 2], val: [7], test: [7, 8]}"])
    with pytest.raises(ConfigError, match=r"strat_fold 2 is listed twice in train"):
        load_recipe(RECIPE, [root, "data.folds={train: [1, 2, 2], test: [8]}"])
    with pytest.raises(ConfigError, match=r"data\.folds\.test: strat_fold 11 is not one of"):
        load_recipe(RECIPE, [root, "data.folds={train: [1], test: [11]}"])
    with pytest.raises(ConfigError, match=r"data\.sampling_rate"):
        load_recipe(RECIPE, [root, "data.sampling_rate=250"])
    with pytest.raises(DataError, match=r"data\.folds\.test: strat_fold \[9\] hold no records"):
        _prepare(shared_data, "data.folds={train: [1, 2], val: [7], test: [9]}")
    with pytest.raises(DataError, match=r"data\.root: PTB-XL folder .*nowhere does not exist"):
        get_family("clinical").prepare(load_recipe(RECIPE, [f"data.root={tmp_path / 'nowhere'}"]), tmp_path)
    (tmp_path / "ptbxl_database.csv").write_text("ecg_id\n")
    with pytest.raises(DataError, match=r"not a PTB-XL folder: scp_statements\.csv not found"):
        get_family("clinical").prepare(load_recipe(RECIPE, [f"data.root={tmp_path}"]), tmp_path)
    with pytest.raises(ConfigError, match=r"modalities \['xray'\]"):
        _prepare(shared_data, "modalities.xray={encoder: ecg_resnet1d}")
