"""Survival evaluation on real survival data shipped by lifelines and scikit-survival."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from biomodal.errors import ConfigError, DataError
from biomodal.eval import survival_analysis, survival_evaluation

pytest.importorskip("lifelines")


def _split(n, strat, seed=0):
    from sklearn.model_selection import train_test_split

    return train_test_split(np.arange(n), test_size=0.3, random_state=seed, stratify=strat)


@pytest.fixture(scope="module")
def gbsg2():
    from lifelines.datasets import load_gbsg2

    g = load_gbsg2()
    x = pd.get_dummies(g.drop(columns=["time", "cens"]), drop_first=True).to_numpy(float)
    return x, g["time"].to_numpy(float), g["cens"].to_numpy(int)


def test_rossi_recidivism_covariates_predict_held_out_arrest():
    from lifelines.datasets import load_rossi

    r = load_rossi()
    x = r.drop(columns=["week", "arrest"]).to_numpy(float)
    tr, te = _split(len(r), r["arrest"])
    week, arrest = r["week"].to_numpy(float), r["arrest"].to_numpy(int)
    res = survival_evaluation(
        x[tr], week[tr], arrest[tr], x[te], week[te], arrest[te], n_components=None, n_bootstrap=200
    )
    m = res.metrics
    assert m["n_test"] == len(te) and m["n_events_test"] == int(arrest[te].sum())
    assert 0.6 < m["c_index"] < 0.75  # the published Cox model on rossi has c ~0.64
    assert m["c_index_ci_low"] < m["c_index"] < m["c_index_ci_high"]
    assert m["logrank_p"] < 0.05 and set(m["groups"]) == {"low risk", "high risk"}
    assert m["groups"]["high risk"]["events"] / m["groups"]["high risk"]["n"] > (
        m["groups"]["low risk"]["events"] / m["groups"]["low risk"]["n"]
    )


def test_gbsg2_pca_pipeline_and_nothing_fitted_on_held_out(gbsg2):
    x, t, e = gbsg2
    tr, te = _split(len(x), e)
    kw = dict(n_components=5, n_bootstrap=100)
    res = survival_evaluation(x[tr], t[tr], e[tr], x[te], t[te], e[te], **kw)
    assert res.metrics["c_index"] > 0.6 and res.metrics["logrank_p"] < 0.01
    assert res.metrics["n_components"] == 5
    # more, different held-out subjects: the original ones get the same risks (to BLAS rounding)
    extra = np.concatenate([te, tr[:50]])
    res2 = survival_evaluation(x[tr], t[tr], e[tr], x[extra], t[extra], e[extra], **kw)
    np.testing.assert_allclose(res2.risk_test[: len(te)], res.risk_test, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(res2.group_test[: len(te)], res.group_test)
    clusters = survival_evaluation(
        x[tr], t[tr], e[tr], x[te], t[te], e[te], groups="cluster", n_groups=3, **kw
    )
    assert set(clusters.metrics["groups"]) <= {"cluster 0", "cluster 1", "cluster 2"}
    assert sum(g["n"] for g in clusters.metrics["groups"].values()) == len(te)


def test_sksurv_breast_cancer_expression():
    sd = pytest.importorskip("sksurv.datasets")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x, y = sd.load_breast_cancer()
    genes = [c for c in x.columns if c.startswith("X")]
    expr, t, e = x[genes].to_numpy(float), y["t.tdm"], y["e.tdm"]
    assert expr.shape == (198, 76)
    scores = []
    for seed in range(3):
        tr, te = _split(len(expr), e, seed)
        res = survival_evaluation(
            expr[tr], t[tr], e[tr], expr[te], t[te], e[te], n_components=None, n_bootstrap=0
        )
        scores.append(res.metrics["c_index"])
    assert np.mean(scores) > 0.6  # 76 prognostic genes carry metastasis-free survival signal


def test_anndata_interface_writes_obs_and_uns(gbsg2, tmp_path):
    import anndata as ad

    x, t, e = gbsg2
    tr, _ = _split(len(x), e)
    split = np.full(len(x), "test", dtype=object)
    split[tr] = "train"
    obs = pd.DataFrame({"time": t, "event": e, "split": split}, index=[f"p{i}" for i in range(len(x))])
    a = ad.AnnData(np.zeros((len(x), 0), np.float32), obs=obs)
    a.obsm["X_pca"] = x
    a.obs.loc["p0", "time"] = np.nan  # a subject without follow-up is left out
    out = survival_analysis(a, basis="X_pca", n_components=4, n_bootstrap=50, copy=True)
    assert "survival" not in a.uns and "survival" in out.uns
    held = out.obs["split"] == "test"
    assert out.obs.loc[held & out.obs["time"].notna(), "survival_risk"].notna().all()
    assert out.obs.loc[~held, "survival_risk"].isna().all()
    assert out.uns["survival"]["c_index"] > 0.55
    out.write_h5ad(tmp_path / "s.h5ad")  # the results are storable
    assert survival_analysis(a, basis="X_pca", n_components=4, n_bootstrap=0) is None and "survival" in a.uns
    with pytest.raises(DataError, match="basis 'X_nope'"):
        survival_analysis(a, basis="X_nope")

    from biomodal.pl.survival import kaplan_meier

    kaplan_meier(out.uns["survival"], tmp_path / "km.png", title="gbsg2")
    assert (tmp_path / "km.png").stat().st_size > 1000


def test_outcome_errors():
    x = np.random.default_rng(0).normal(size=(20, 3))
    t, e = np.linspace(1, 20, 20), np.tile([0, 1], 10)
    with pytest.raises(DataError, match="durations must be finite and > 0"):
        survival_evaluation(x, -t, e, x, t, e)
    with pytest.raises(DataError, match="0 \\(censored\\) or 1"):
        survival_evaluation(x, t, e * 2, x, t, e)
    with pytest.raises(DataError, match="events"):
        survival_evaluation(x, t, np.zeros(20), x, t, e)


def test_survival_protocol_through_the_context(gbsg2):
    from biomodal.eval.protocols import EvalContext, get_protocol

    x, t, e = gbsg2
    tr, te = _split(len(x), e)
    rng = np.random.default_rng(0)
    noise = {s: rng.normal(size=(len(i), 4)) for s, i in (("train", tr), ("test", te))}
    emb = {s: {"labs": x[i][:, :4], "ecg": noise[s]} for s, i in (("train", tr), ("test", te))}
    obs = {s: pd.DataFrame({"time": t[i], "event": e[i]}) for s, i in (("train", tr), ("test", te))}
    raw = {"train": x[tr], "test": x[te]}
    ctx = EvalContext(split="test", embeddings=emb, obs=obs, modalities=("labs", "ecg"),
                      features={"raw": lambda s, m: raw[s] if m == "labs" else noise[s]})  # fmt: skip
    info = get_protocol("survival")
    cfg = info.parse({"bases": ["labs", "ecg", "joint"], "n_components": 3, "n_bootstrap": 50})
    res = info.fn(ctx, cfg)
    m = res.metrics
    assert {"labs", "ecg", "joint", "raw_labs", "raw_ecg", "raw_joint"} <= set(m)
    assert m["labs"]["c_index"] > m["ecg"]["c_index"]  # covariates beat noise
    assert 0.35 < m["ecg"]["c_index"] < 0.65
    assert any("survival" in line for line in info.markdown(m))
    with pytest.raises(ConfigError, match="bases"):
        info.fn(ctx, info.parse({"bases": ["xray"]}))
    with pytest.raises(ConfigError, match="no column 'os'"):
        info.fn(ctx, info.parse({"duration_key": "os"}))
