"""Generated MoRE-style patients: each modality shows its conditions, missingness, real IU sentences."""

from __future__ import annotations

import numpy as np
import pytest

from biomodal.datasets._cxr_synth import chest_images
from biomodal.datasets._ecg_synth import ecg_from_bank, simulate_ecg_bank
from biomodal.datasets._report_synth import compose_reports, sentence_pools
from biomodal.datasets.clinical_synthetic import CONDITIONS, LAB_NAMES, MODALITIES, make_clinical_patients
from biomodal.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def bank():
    return simulate_ecg_bank(1, sampling_rate=100, seed=0)


@pytest.fixture(scope="module")
def patients(bank):
    return make_clinical_patients(300, seed=3, ecg_bank_size=1)


def _auc(score: np.ndarray, y: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, score))


def test_xray_heart_width_and_effusion_are_visible():
    n = 40
    ctr = np.r_[np.full(n, 0.4), np.full(n, 0.62)]
    im = chest_images(ctr, np.zeros(2 * n), np.zeros(2 * n, int), px=64, seed=0).astype(float)
    assert im.shape == (2 * n, 1, 64, 64) and im.dtype == np.float64
    # the heart is bright: a wider heart brightens the lower lung fields beside the mediastinum
    band = im[:, 0, 38:50, 40:56].mean(axis=(1, 2))
    assert band[n:].mean() > band[:n].mean() + 10
    eff = chest_images(np.full(n, 0.4), np.full(n, 0.4), np.full(n, 2), px=64, seed=1).astype(float)
    base = chest_images(np.full(n, 0.4), np.zeros(n), np.zeros(n, int), px=64, seed=1).astype(float)
    bottom = (slice(None), 0, slice(40, 50), slice(10, 26))  # the right lung's base (image left)
    assert eff[bottom].mean() > base[bottom].mean() + 10
    with pytest.raises(ValueError, match="px=16"):
        chest_images(ctr, np.zeros(2 * n), np.zeros(2 * n, int), px=16)


def test_ecg_states_show_rhythm_and_morphology(bank):
    assert bank["signals"].shape == (4, 12, 1600) and bank["state"].tolist() == [
        [0, 0],
        [1, 0],
        [0, 1],
        [1, 1],
    ]
    af = np.array([0, 1, 0, 1] * 5)
    mi = np.array([0, 0, 1, 1] * 5)
    x, hr = ecg_from_bank(bank, af, mi, np.ones(20), seed=0)
    assert x.shape == (20, 12, 1000) and np.isfinite(x).all()
    assert ((hr[af == 1] > 90) & (hr[af == 1] < 140)).all() and (hr[af == 0] < 90).all()
    # inverted T waves after MI: lead II's T wave (its largest positive deflection) flips
    lead2 = x[:, 1]
    skew = ((lead2 - lead2.mean(1, keepdims=True)) ** 3).mean(1)
    assert skew[mi == 0].mean() > skew[mi == 1].mean()
    with pytest.raises(DataError, match="rate factors"):
        ecg_from_bank(bank, af, mi, np.full(20, 3.0))


def test_patients_modalities_carry_their_conditions(patients):
    d = patients
    n = 300
    assert d["xray"].shape == (n, 1, 64, 64) and d["xray"].dtype == np.uint8
    assert d["ecg"].shape == (n, 12, 1000) and d["labs"].shape == (n, len(LAB_NAMES))
    assert d["conditions"].shape == (n, 4) and len(d["report"]) == n
    y = {c: d["conditions"][:, j] for j, c in enumerate(CONDITIONS)}
    assert all(0.1 < v.mean() < 0.6 for v in y.values())
    labs = d["labs"]
    ok = np.isfinite(labs[:, 2])
    assert _auc(labs[ok, 2], y["cardiomegaly"][ok]) > 0.8  # NT-proBNP follows the heart size
    ok = np.isfinite(labs[:, 3])
    assert _auc(labs[ok, 3], y["myocardial_infarction"][ok]) > 0.8  # troponin
    ok = np.isfinite(labs[:, 4])
    assert _auc(labs[ok, 4], y["atrial_fibrillation"][ok]) > 0.8  # heart rate
    mentions = np.array(["cardiomegaly" in r or "enlarged" in r for r in d["report"]])
    assert mentions[y["cardiomegaly"] == 1].mean() > 3 * mentions[y["cardiomegaly"] == 0].mean()
    af_text = np.array(["atrial fibrillation" in r for r in d["report"]])
    assert (
        af_text[y["atrial_fibrillation"] == 0].sum() == 0
        and af_text[y["atrial_fibrillation"] == 1].mean() > 0.6
    )
    present = np.stack([d["present"][m] for m in MODALITIES], 1)
    assert present.sum(1).min() >= 2 and 0.6 < present[:, 3].mean() < 0.8  # labs missing ~30%
    assert (d["obs"][[f"has_{m}" for m in MODALITIES]].to_numpy() == present).all()


def test_same_seed_same_patients_other_seed_others():
    a = make_clinical_patients(20, seed=1, ecg_bank_size=1)
    b = make_clinical_patients(20, seed=1, ecg_bank_size=1)
    c = make_clinical_patients(20, seed=2, ecg_bank_size=1)
    assert np.array_equal(a["xray"], b["xray"]) and a["report"] == b["report"]
    np.testing.assert_allclose(a["ecg"], b["ecg"], rtol=1e-6, atol=1e-6)
    assert not np.array_equal(a["xray"], c["xray"])


@pytest.mark.parametrize(
    ("kw", "match"),
    [({"n": 0}, "n=0"), ({"min_present": 5}, "min_present"), ({"missing": {"mri": 0.1}}, "mri"),
     ({"missing": {"ecg": 1.0}}, "ecg"), ({"prevalence": 1.0}, "prevalence")],
)  # fmt: skip
def test_bad_settings_are_named(kw, match):
    args = {"n": 10, **kw}
    with pytest.raises(ConfigError, match=match):
        make_clinical_patients(args.pop("n"), ecg_bank_size=1, **args)


@pytest.mark.realdata
def test_report_sentences_come_from_real_iu_reports_by_mesh(shared_data):
    pools = sentence_pools(shared_data / "reports" / "iu_xray")
    assert len(pools["cardiomegaly"]["pos"]) >= 20 and len(pools["pleural_effusion"]["pos"]) >= 20
    assert all("effusion" in s for s in pools["pleural_effusion"]["pos"])
    assert not any(s.startswith("no ") for s in pools["pleural_effusion"]["pos"])
    assert any("normal" in s for s in pools["cardiomegaly"]["neg"])
    assert not any("effusion" in s or "heart" in s for s in pools["filler"]["pos"])
    rep = compose_reports({"cardiomegaly": np.array([1, 0]), "pleural_effusion": np.array([0, 1])}, pools,
                          mention=1.0, seed=0)  # fmt: skip
    assert any(s in rep[0] for s in pools["cardiomegaly"]["pos"])
    assert any(s in rep[1] for s in pools["pleural_effusion"]["pos"])


def test_missing_reports_folder_is_named(tmp_path):
    with pytest.raises(DataError, match="not a folder"):
        sentence_pools(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"no \.xml"):
        sentence_pools(tmp_path / "empty")
