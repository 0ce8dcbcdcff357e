"""The MoRE demo recipe: X-ray + ECG + report + labs on generated patients, every N-modality loss."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from biomodal.errors import ConfigError, DataError
from biomodal.recipes import load, load_recipe, run
from biomodal.recipes.families import get_family
from biomodal.recipes.schema import SHIPPED_DIR

RECIPE = SHIPPED_DIR / "clinical" / "more_demo.yaml"
SHORT = [
    "data.generated.n_train=64",
    "data.generated.n_val=16",
    "data.generated.n_test=40",
    "data.generated.ecg_bank_size=1",
    "data.generated.reports=builtin",
    "data.generated.image_px=32",
    "modalities.xray.params.tile_px=32",
    "trainer.max_steps=3",
    "trainer.batch_size=16",
    "trainer.val_every=2",
    "trainer.warmup_steps=0",
    "model.embed_dim=16",
]
PAIRS = {
    f"{a}_to_{b}"
    for a in ("xray", "ecg", "report", "labs")
    for b in ("xray", "ecg", "report", "labs")
    if a != b
}


@pytest.fixture(scope="module")
def clip_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("more") / "run"
    return out, run(RECIPE, overrides=SHORT, out=out)


def test_prepared_splits_missing_modalities_and_train_only_labs():
    rec = load_recipe(RECIPE, SHORT)
    p = get_family("clinical").prepare(rec, Path("."))
    eds = p.eval_datasets
    assert {s: len(d) for s, d in eds.items()} == {"train": 64, "val": 16, "test": 40}
    assert p.unit == "patients" and p.group_key == "patient_id"
    ids = [set(d.obs["patient_id"]) for d in eds.values()]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert p.input_specs["xray"] == {"in_chans": 1, "tile_px": 32} and p.input_specs["ecg"] == {"leads": 12}
    item = eds["train"][0]
    assert item["xray"].dtype.is_floating_point is False and tuple(item["xray"].shape) == (1, 32, 32)
    assert item["ecg"].shape == (12, 1000) and isinstance(item["report"], str)
    present = np.stack([eds["train"].present[m] for m in ("xray", "ecg", "report", "labs")], 1)
    assert present.sum(1).min() >= 2 and (~present).any()
    assert any(k.endswith("_mask") for k in item) or not (~present[0]).any()
    train_labs = rec.data.generated  # the standardiser saw the training patients only
    assert train_labs.n_train == 64
    z = eds["train"]._data["labs"].numpy()
    obs = z[:, 7:] < 0.5
    assert abs(z[:, 0][obs[:, 0]].mean()) < 1e-4  # zero mean on training rows
    assert abs(eds["test"]._data["labs"].numpy()[:, 0].mean()) > 1e-4
    assert p.targets["conditions"].names == ["cardiomegaly", "pleural_effusion", "atrial_fibrillation",
                                              "myocardial_infarction"]  # fmt: skip
    assert p.features["ecg_features"]("test", "ecg").shape[0] == 40


def test_short_run_every_protocol_and_checkpoint(clip_run, tmp_path):
    out, m = clip_run
    assert "errors" not in m and set(m["protocols"]) >= {"zero_shot", "retrieval", "k_candidate"}
    z = m["zero_shot"]
    assert z["class_modality"] == {"cardiomegaly": "xray", "pleural_effusion": "xray",
                                   "atrial_fibrillation": "ecg", "myocardial_infarction": "ecg"}  # fmt: skip
    assert set(z["per_class"]) == set(z["untrained_per_class"]) and 0 <= z["macro_auroc"] <= 1
    assert set(m["retrieval"]) >= PAIRS
    r = m["retrieval"]["xray_to_ecg"]
    assert r["n"] < 40 and r["chance@1"] == pytest.approx(1 / r["n"])  # only patients with both
    assert set(m["k_candidate"]) == {"xray", "ecg", "report", "labs"}
    assert m["k_candidate"]["ecg"]["score"] == "pairwise" and m["k_candidate"]["ecg"]["chance"] == 0.1
    model = load(out / "model.pt")
    assert set(model.preprocessors) == {"xray", "ecg", "report", "labs"}
    prepared = model.family.prepare(model.recipe, tmp_path, preprocessors=model.preprocessors)
    from biomodal.eval import embed

    emb = embed(model, prepared.eval_datasets["test"], progress=False)
    has = prepared.eval_datasets["test"].present["xray"]
    assert np.isfinite(emb["xray"][has]).all() and np.isnan(emb["xray"][~has]).all()


@pytest.mark.parametrize(("loss", "score"), [("symile", "mip"), ("gram", "gram")])
def test_n_modality_losses_run_with_missing_modalities(loss, score, tmp_path):
    m = run(RECIPE, overrides=[*SHORT, f"loss.name={loss}", "trainer.max_steps=2"], out=tmp_path / loss)
    assert "errors" not in m
    assert all(r["score"] == score for r in m["k_candidate"].values())
    assert all(0 <= r["accuracy"] <= 1 for r in m["k_candidate"].values())


def test_bad_generated_settings_are_named(tmp_path):
    with pytest.raises(ConfigError, match="mri"):
        rec = load_recipe(RECIPE, [*SHORT, "modalities.mri={encoder: mlp}"])
        get_family("clinical").prepare(rec, tmp_path)
    rec = load_recipe(RECIPE, [*SHORT, f"data.generated.reports={tmp_path / 'nope'}"])
    with pytest.raises(DataError, match="nope"):
        get_family("clinical").prepare(rec, tmp_path)
    with pytest.raises(ConfigError, match="by_modality"):
        load_recipe(RECIPE, [*SHORT, "eval.protocols=[{name: zero_shot, params: {prompts: {a: [x], b: [y]}, "
                                     "by_modality: {xray: [a]}}}]"])  # fmt: skip
