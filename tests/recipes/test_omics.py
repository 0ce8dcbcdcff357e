"""The omics family: generated tables (ids, row order, masks, scaler, errors) and the real ROSMAP files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from biomodal.errors import ConfigError, DataError, ReaderError
from biomodal.recipes import load, load_recipe, run
from biomodal.recipes.families import get_family

ROSMAP = "omics/rosmap"


def _tables(root: Path, n=60, seed=0, ids=True, drop_mirna=(), shuffle=True):
    """Two omics of n subjects sharing a latent; the label is its sign. Returns the raw frames."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 3))
    subj = [f"S{i:03d}" for i in range(n)]
    mrna = pd.DataFrame(z @ rng.normal(size=(3, 8)) + 0.1 * rng.normal(size=(n, 8)) + 5,
                        index=subj, columns=[f"g{j}" for j in range(8)])  # fmt: skip
    mirna = pd.DataFrame(z @ rng.normal(size=(3, 5)) + 0.1 * rng.normal(size=(n, 5)),
                         index=subj, columns=[f"mir{j}" for j in range(5)])  # fmt: skip
    labels = pd.Series(np.where(z[:, 0] > 0, "case", "ctrl"), index=subj, name="status")
    time = np.exp(1 - z[:, 0] + 0.3 * rng.normal(size=n))
    surv = pd.DataFrame({"time": time, "event": (rng.random(n) < 0.7).astype(int)}, index=subj)
    m2 = mirna.drop(index=list(drop_mirna))
    if shuffle:  # ids must be matched, not assumed in order
        m2 = m2.sample(frac=1.0, random_state=1)
    if ids:
        mrna.to_csv(root / "mrna.csv", index_label="subject")
        m2.to_csv(root / "mirna.tsv", sep="\t", index_label="subject")
        labels.to_csv(root / "labels.csv", index_label="subject")
        surv.to_csv(root / "clinical.csv", index_label="subject")
    else:  # MOGONET layout: no header, no ids, feature names in their own file
        np.savetxt(root / "1_tr.csv", mrna.to_numpy(), delimiter=",")
        np.savetxt(root / "2_tr.csv", mirna.to_numpy(), delimiter=",")
        np.savetxt(root / "labels_tr.csv", (labels == "case").to_numpy().astype(float))
        (root / "1_featname.csv").write_text("\n".join(mrna.columns) + "\n")
    return mrna, mirna, labels


def _recipe(root: Path, **data):
    base = {
        "name": "omics_gen",
        "data": {"family": "omics", "root": str(root), "holdout": 0.25, "val_fraction": 0.2,
                 "modalities": {"mrna": {"train": "mrna.csv"}, "mirna": {"train": "mirna.tsv"}},
                 "labels": {"train": "labels.csv"}, **data},
        "modalities": {"mrna": {"encoder": "mlp", "params": {"hidden": [16]}},
                       "mirna": {"encoder": "mlp", "params": {"hidden": [16]}}},
        "model": {"embed_dim": 8},
        "trainer": {"max_steps": 8, "batch_size": 16, "lr": 0.01, "progress": False, "device": "cpu",
                    "val_every": 4, "ckpt_every": 0},
        "eval": {"plots": False},
    }  # fmt: skip
    return base


def _prepare(recipe):
    rec = load_recipe(recipe)
    return get_family("omics").prepare(rec, Path("."))


def test_subject_id_matching_masks_and_train_only_scaling(tmp_path):
    mrna, mirna, _ = _tables(tmp_path, drop_mirna=("S003", "S010", "S011"))
    p = _prepare(_recipe(tmp_path))
    eds = p.eval_datasets
    assert {s: len(d) for s, d in eds.items()} == {"train": 36, "val": 9, "test": 15}
    everyone = pd.concat([d.obs for d in eds.values()])
    assert sorted(everyone.index) == sorted(mrna.index)  # every subject once, in one split
    for ds in eds.values():
        raw = p.preprocessors["mirna"].transform(mirna.reindex(ds.obs.index).to_numpy(), list(mirna.columns))
        have = ds.present["mirna"]
        assert np.allclose(ds.features("mirna")[have], raw[have], atol=1e-6)  # rows matched by id
        assert not have[ds.obs.index.isin(["S003", "S010", "S011"])].any()
        assert list(ds.obs["label"].cat.categories) == ["case", "ctrl"]
    missing_split = everyone.loc["S003", "split"]
    item = eds[missing_split][list(eds[missing_split].obs.index).index("S003")]
    assert item["mirna_mask"].item() is False and item["mrna"].shape == (8,) and "mrna_mask" not in item
    train = eds["train"].features("mrna")
    assert np.allclose(train.mean(0), 0, atol=1e-5) and np.allclose(train.std(0), 1, atol=1e-4)
    test = eds["test"].features("mrna")
    assert not np.allclose(test.mean(0), 0, atol=1e-3)  # test rows are only transformed
    assert p.preprocessors["mrna"].n_fit_ == 36
    assert p.input_specs == {"mrna": {"in_features": 8}, "mirna": {"in_features": 5}}
    # changing held-out values leaves the fitted scaler untouched
    test_ids = list(eds["test"].obs.index)
    mrna.loc[test_ids] += 100
    mrna.to_csv(tmp_path / "mrna.csv", index_label="subject")
    p2 = _prepare(_recipe(tmp_path))
    np.testing.assert_array_equal(p2.preprocessors["mrna"].center_, p.preprocessors["mrna"].center_)


def test_row_order_matching_mogonet_layout(tmp_path):
    mrna, mirna, labels = _tables(tmp_path, ids=False)
    rec = _recipe(tmp_path, modalities={"mrna": {"train": "1_tr.csv", "features": "1_featname.csv"},
                                        "mirna": {"train": "2_tr.csv"}},
                  labels={"train": "labels_tr.csv", "names": {"0": "ctrl", "1": "case"}})  # fmt: skip
    p = _prepare(rec)
    ds = p.eval_datasets["train"]
    assert ds.obs.index[0].startswith("train_") and p.preprocessors["mrna"].var_names_ == list(mrna.columns)
    assert p.preprocessors["mirna"].var_names_[0] == "2_tr:0"
    assert p.info["classes"] == ["ctrl", "case"]  # code order from the raw values 0, 1
    i = int(ds.obs.index[0].split("_")[1])
    assert ds.obs["label"].iloc[0] == labels.iloc[i]
    # unequal row counts cannot be matched by order
    np.savetxt(tmp_path / "2_tr.csv", mirna.to_numpy()[:-1], delimiter=",")
    with pytest.raises(DataError, match=r"equal row counts.*data.modalities.mirna.train \(2_tr.csv\): 59"):
        _prepare(rec)


def test_bad_tables_and_configs_are_named(tmp_path):
    _tables(tmp_path)
    with pytest.raises(ReaderError, match=r"nope\.csv.*data\.modalities\.mrna\.train"):
        _prepare(
            _recipe(tmp_path, modalities={"mrna": {"train": "nope.csv"}, "mirna": {"train": "mirna.tsv"}})
        )
    bad = pd.read_csv(tmp_path / "mrna.csv").astype({"g2": object})
    bad.loc[4, "g2"] = "high"
    bad.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DataError, match=r"bad.csv.*row 5, column 'g2'.*'high'"):
        _prepare(
            _recipe(tmp_path, modalities={"mrna": {"train": "bad.csv"}, "mirna": {"train": "mirna.tsv"}})
        )
    np.savetxt(tmp_path / "noid.csv", np.ones((60, 3)), delimiter=",")
    with pytest.raises(DataError, match=r"mirna\.train \(noid\.csv\) have no subject ids"):
        _prepare(
            _recipe(tmp_path, modalities={"mrna": {"train": "mrna.csv"}, "mirna": {"train": "noid.csv"}})
        )
    with pytest.raises(ConfigError, match="unknown modality 'rna'"):
        load_recipe(_recipe(tmp_path, modalities={"rna": {"train": "mrna.csv"}}))
    with pytest.raises(ConfigError, match="give all or none"):
        load_recipe(_recipe(tmp_path, modalities={"mrna": {"train": "mrna.csv", "test": "mrna.csv"},
                                                  "mirna": {"train": "mirna.tsv"}}))  # fmt: skip
    with pytest.raises(ConfigError, match=r"data\.holdout"):
        load_recipe(_recipe(tmp_path, holdout=1.5))
    rec = _recipe(tmp_path)
    rec["modalities"]["ecg"] = rec["modalities"].pop("mirna")
    with pytest.raises(ConfigError, match=r"modalities \['ecg'\] have no table"):
        _prepare(rec)


def test_test_files_parquet_h5ad_and_feature_order(tmp_path):
    import anndata as ad

    mrna, mirna, labels = _tables(tmp_path)
    tr, te = mrna.index[:45], mrna.index[45:]
    mrna.loc[tr].to_parquet(tmp_path / "mrna_tr.parquet")
    mrna.loc[te, mrna.columns[::-1]].to_parquet(tmp_path / "mrna_te.parquet")  # columns in another order
    ad.AnnData(mirna.loc[tr].to_numpy(np.float32), obs=pd.DataFrame(index=tr),
               var=pd.DataFrame(index=mirna.columns)).write_h5ad(tmp_path / "mirna_tr.h5ad")  # fmt: skip
    ad.AnnData(mirna.loc[te].to_numpy(np.float32), obs=pd.DataFrame(index=te),
               var=pd.DataFrame(index=mirna.columns)).write_h5ad(tmp_path / "mirna_te.h5ad")  # fmt: skip
    labels.loc[tr].to_csv(tmp_path / "lab_tr.csv", index_label="subject")
    labels.loc[te].to_csv(tmp_path / "lab_te.csv", index_label="subject")
    rec = _recipe(tmp_path, modalities={"mrna": {"train": "mrna_tr.parquet", "test": "mrna_te.parquet"},
                                        "mirna": {"train": "mirna_tr.h5ad", "test": "mirna_te.h5ad"}},
                  labels={"train": "lab_tr.csv", "test": "lab_te.csv", "column": "status"})  # fmt: skip
    p = _prepare(rec)
    assert list(p.eval_datasets["test"].obs.index) == list(te)  # the test files are the test split
    assert len(p.eval_datasets["train"]) + len(p.eval_datasets["val"]) == 45
    got = p.eval_datasets["test"].features("mrna")
    want = p.preprocessors["mrna"].transform(mrna.loc[te].to_numpy(), list(mrna.columns))
    np.testing.assert_allclose(got, want, atol=1e-6)  # reordered by feature name


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("omics")
    _tables(root, n=80, drop_mirna=("S005",))
    rec = _recipe(root, obs={"train": "clinical.csv"})
    rec["loss"] = {
        "name": "m3col",
        "params": {"modalities": ["mrna", "mirna"], "n_classes": 2, "embed_dim": 8},
    }
    survival = {"name": "survival", "params": {"n_components": 3, "n_bootstrap": 20}}
    rec["eval"]["protocols"] = ["classification", {"name": "retrieval", "params": {"ks": [1, 5]}}, survival]
    out = root / "run"
    return root, out, run(rec, out=out)


def test_tiny_recipe_runs_and_checkpoint_roundtrips(tiny_run, tmp_path):
    from biomodal.recipes.checkpoint import embed_h5ad
    from biomodal.recipes.families._omics_data import omics_anndata

    root, out, m = tiny_run
    assert m["unit"] == "subjects" and m["protocols"] == ["classification", "retrieval", "survival"]
    c = m["classification"]
    assert {"accuracy", "f1", "auroc", "methods", "chance_majority"} <= set(c) and c["n_test"] == 20
    assert {"raw_concat", "raw_mrna", "raw_mirna", "probe"} <= set(c["methods"])
    assert m["retrieval"]["mrna_to_mirna"]["chance@1"] == pytest.approx(1 / 20)
    assert 0 <= m["survival"]["joint"]["c_index"] <= 1 and "raw_joint" in m["survival"]
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["classification"]["auroc"] == pytest.approx(c["auroc"])
    model = load(out / "model.pt")
    assert set(model.preprocessors) == {"mrna", "mirna"}
    from biomodal.recipes.families.omics import predict_proba

    prepared = model.family.prepare(model.recipe, tmp_path, preprocessors=model.preprocessors)
    proba = predict_proba(model, prepared.eval_datasets["test"])
    assert proba.shape == (20, 2) and np.allclose(proba.sum(1), 1)
    # AnnData in and out: raw tables in obsm, embeddings back in obsm["X_biomodal_<name>"]
    mrna = pd.read_csv(root / "mrna.csv", index_col=0)
    mirna = pd.read_csv(root / "mirna.tsv", sep="\t", index_col=0).reindex(mrna.index)  # S005: NaN row
    omics_anndata({"mrna": mrna, "mirna": mirna}).write_h5ad(tmp_path / "new.h5ad")
    emb = embed_h5ad(out / "model.pt", tmp_path / "new.h5ad", tmp_path / "emb.h5ad")
    assert emb.obsm["X_biomodal_mrna"].shape == (80, 8)
    assert np.isnan(emb.obsm["X_biomodal_mirna"][mrna.index.get_loc("S005")]).all()  # not encoded
    assert np.isfinite(emb.obsm["X_biomodal_mirna"][mrna.index != "S005"]).all()


@pytest.mark.realdata
def test_rosmap_real_files(shared_data):
    rec = load_recipe(ROSMAP + "_m3col")
    assert Path(rec.data.modalities["mrna"].train) == shared_data / "omics" / "rosmap" / "1_tr.csv"
    p = get_family("omics").prepare(rec, Path("."))
    eds = p.eval_datasets
    assert {s: len(d) for s, d in eds.items()} == {"train": 145, "val": 26, "test": 74}
    assert p.info["classes"] == ["control", "AD"]
    counts = {s: d.obs["label"].value_counts().to_dict() for s, d in eds.items()}
    assert counts["test"] == {"AD": 38, "control": 36}  # stratified (127 AD / 118 control overall)
    assert p.preprocessors["mrna"].var_names_[0] == "ENSG00000161896.6"
    assert p.preprocessors["mirna"].var_names_[0] == "hsa-let-7b"
    assert all(v == {"in_features": 200} for v in p.input_specs.values())
    for m in ("mrna", "methylation", "mirna"):
        assert np.allclose(eds["train"].features(m).mean(0), 0, atol=1e-5)
    other = get_family("omics").prepare(load_recipe(ROSMAP + "_m3col", ["seed=1"]), Path("."))
    assert set(other.eval_datasets["test"].obs.index) != set(eds["test"].obs.index)  # seeded split
