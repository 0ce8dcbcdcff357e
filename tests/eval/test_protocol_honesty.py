"""batch_mixing and spatial_probe report only what they measured: no bio metrics without labels,
scib PCR only against a reference, post-hoc correction under transductive keys with its
downstream cost measured, probes on spatial blocks with chance beside."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from biomodal.eval.protocols import EvalContext, Target, get_protocol
from biomodal.recipes.sweep import sweep_table


def _ctx(seed: int = 0, n: int = 120, **kw) -> EvalContext:
    """Two modalities sharing a signal, a batch offset in both, labels from the signal."""
    rng = np.random.default_rng(seed)
    emb, obs, tgt, coords = {}, {}, {}, {}
    w, direction = rng.normal(size=(4, 10)), rng.normal(size=8)
    for split in ("train", "test"):
        s = rng.normal(size=(n, 4))
        batch = np.tile(["b0", "b1"], n // 2)
        shift = np.where(batch == "b0", 0.35, -0.35)[:, None] * direction  # batches overlap in part
        a = np.c_[s, s] + shift + 0.1 * rng.normal(size=(n, 8))
        b = np.c_[s, -s] + shift + 0.1 * rng.normal(size=(n, 8))
        emb[split] = {"histology": a.astype(np.float32), "expression": b.astype(np.float32)}
        obs[split] = pd.DataFrame({"sample": batch, "label": np.where(s[:, 0] > 0, "x", "y")})
        tgt[split] = (s @ w + 0.1 * rng.normal(size=(n, 10))).astype(np.float32)
        coords[split] = np.c_[np.arange(n) % 12, np.arange(n) // 12].astype(float) * 100
    return EvalContext(
        "test",
        emb,
        obs,
        ("histology", "expression"),
        targets={"expression": Target(tgt, [f"g{i}" for i in range(10)])},
        coords=coords,
        batch_key="sample",
        group_key="sample",
        **kw,
    )


def _run(name: str, ctx: EvalContext, **params):
    info = get_protocol(name)
    cfg = info.parse(params)
    return info.fn(ctx, cfg).metrics, info, cfg


def test_no_labels_means_no_bio_metrics_and_the_reason_is_recorded():
    res, *_ = _run("batch_mixing", _ctx())  # no label_keys
    assert "no label column" in res["bio_skipped"] and res["label_key"] is None
    assert not {"nmi", "ari", "asw_label", "clisi", "bio_mean_unscaled"} & set(res["joint"])
    assert "ilisi" in res["joint"]
    labelled, *_ = _run("batch_mixing", _ctx(label_keys=["label"]))
    assert "bio_skipped" not in labelled and 0 <= labelled["joint"]["nmi"] <= 1
    partial = _ctx(label_keys=["label"])
    partial.obs["test"].loc[:59, "label"] = "unlabelled"  # e.g. one of two sections has labels
    some, *_ = _run("batch_mixing", partial)
    assert some["bio_scored_on"].startswith("60 labelled items")
    assert {"nmi", "ilisi", "bio_mean_unscaled", "overall_unscaled"} <= set(some["joint"])


def test_pcr_uses_the_untrained_model_as_x_pre_when_there_is_one():
    plain, *_ = _run("batch_mixing", _ctx(label_keys=["label"]))
    assert plain["pcr_reference"].startswith("none")
    noise = {s: np.random.default_rng(1).normal(size=(120, 8)) for s in ("train", "test")}
    ctx = _ctx(label_keys=["label"], features={"untrained": lambda split, m: noise[split]})
    res, *_ = _run("batch_mixing", ctx)
    assert res["pcr_reference"].startswith("untrained")
    # the untrained reference has no batch structure, so the trained embedding cannot improve on it
    assert res["joint"]["pcr"] == pytest.approx(0.0, abs=1e-9)


def test_harmony_is_transductive_with_its_own_keys_and_downstream_metrics():
    ctx = _ctx(label_keys=["label"], post_hoc="harmony")
    res, info, cfg = _run("batch_mixing", ctx, n_components=4, top_k=10)
    assert "joint_corrected" not in res
    corrected, plain = res["joint_transductive_harmony"], res["joint"]
    assert corrected["ilisi"] > plain["ilisi"] + 0.2  # harmony mixes the two batches
    down = res["transductive_harmony"]
    assert set(down["retrieval"]) == {"histology_to_expression", "expression_to_histology"}
    assert down["retrieval"]["histology_to_expression"]["n"] == 120
    assert -1 <= down["pearson_mean"] <= 1 and down["hest_modality"] == "histology"
    assert "transductive" in res["post_hoc_note"]
    cols = dict(info.headline(cfg, {"batch": res}))
    assert cols["batch.joint.ilisi"] == "iLISI"
    assert cols["batch.joint_transductive_harmony.ilisi"] == "iLISI (harmony, transd.)"
    assert "batch.transductive_harmony.pearson_mean" in cols
    # a sweep keeps the corrected figures out of the uncorrected columns
    none, _, _ = _run("batch_mixing", _ctx(label_keys=["label"]), n_components=4, top_k=10)
    table = sweep_table(
        {
            "none": {"batch": none, "protocols": ["batch_mixing"]},
            "harmony": {"batch": res, "protocols": ["batch_mixing"]},
        }
    )
    header, _, row_none, row_h = table.splitlines()[:4]
    labels = [c.strip() for c in header.split("|")[1:-1]]
    cells_none = [c.strip() for c in row_none.split("|")[1:-1]]
    cells_h = [c.strip() for c in row_h.split("|")[1:-1]]
    i, j = labels.index("iLISI"), labels.index("iLISI (harmony, transd.)")
    assert float(cells_none[i]) == pytest.approx(none["joint"]["ilisi"], abs=1e-3)
    assert float(cells_h[i]) == pytest.approx(plain["ilisi"], abs=1e-3)  # same embedding, uncorrected
    assert float(cells_h[j]) == pytest.approx(corrected["ilisi"], abs=1e-3) and cells_none[j] == ""


def test_spatial_probe_scores_blocks_with_chance_and_baselines():
    rng = np.random.default_rng(0)
    ctx = _ctx(label_keys=["label"], features={"noise": lambda s, m: rng.normal(size=(120, 8))})
    ctx.obs["test"].loc[:9, "label"] = "unlabelled"
    res, info, _ = _run("spatial_probe", ctx, n_blocks=6, n_folds=3, baselines=["noise", "absent"])
    lab = res["label"]
    assert res["split"] == "test" and lab["histology"]["n"] == 110  # unlabelled items left out
    assert lab["histology"]["chance_balanced"] == pytest.approx(0.5)
    assert lab["histology"]["balanced_accuracy"] > 0.85
    assert lab["noise:histology"]["balanced_accuracy"] < 0.75
    assert "absent" in lab["skipped_baselines"]
    assert info.markdown(res)[0].startswith("| spatial-block probe: label")


def test_hest_reports_pearson_within_each_held_out_section_beside_the_pooled_one():
    ctx, rng = _ctx(), np.random.default_rng(7)
    for split in ("train", "test"):  # genes that differ only between sections, which the embeddings show
        b0 = (ctx.obs[split]["sample"] == "b0").to_numpy()
        ctx.targets["expression"].values[split] = (rng.normal(size=(120, 10)) + 3.0 * b0[:, None]).astype(
            "f4"
        )
    res, *_ = _run("hest_expression", ctx, modality="histology", n_components=8, top_k=10, baselines=[])
    assert res["n_groups"] == 2  # group_label defaults to "group"
    # pooled over both sections, Pearson rewards telling the sections apart; within them there is nothing
    assert res["pearson_mean"] > 0.7 and abs(res["pearson_mean_within_group"]) < 0.2


def test_moran_gene_selection_and_moran_of_measured_and_predicted_expression():
    pytest.importorskip("squidpy")
    from biomodal.eval.protocols.expression import evaluated_columns
    from biomodal.eval.spatial_autocorr import morans_i

    ctx = _ctx()
    for split in ("train", "test"):  # g0..g2 vary smoothly over the tissue; the others are noise
        xy = ctx.coords[split]
        values = np.random.default_rng(3).normal(size=(120, 10))
        values[:, :3] = np.sin(xy[:, :1] / 300.0) * np.array([3.0, 2.0, 1.0]) + 0.1 * values[:, :3]
        values[:, 3:] *= 5.0  # the most variable genes have no spatial structure
        ctx.targets["expression"].values[split] = values.astype("f4")
    by_var = evaluated_columns(ctx, "expression", 3)
    by_moran = evaluated_columns(ctx, "expression", 3, by="moran")
    assert by_moran == ["g0", "g1", "g2"] and not set(by_var) & set(by_moran)
    mi = morans_i(ctx.targets["expression"].values["test"], ctx.coords["test"], ctx.obs["test"]["sample"])
    assert (mi[:3] > 0.5).all() and (np.abs(mi[3:]) < 0.2).all()
    res, *_ = _run(
        "hest_expression",
        ctx,
        modality="histology",
        n_components=8,
        top_k=3,
        genes_by="moran",
        moran=True,
        baselines=[],
    )
    assert set(res["moran_i_per_gene"]) == {"g0", "g1", "g2"}
    assert res["moran_i_measured_mean"] > 0.5 and res["genes_selected_by"].startswith("moran")


def test_downstream_figures_after_harmony_do_not_depend_on_held_out_expression_embeddings():
    """The corrected image features of a spot must not move with its expression embedding.

    Correcting the joint embedding and splitting it did (Harmony clusters on both modalities):
    HEST r on the corrected image block changed with the held-out expression embeddings.
    """
    hest = []
    for seed in (1, 2):
        ctx = _ctx(label_keys=["label"], post_hoc="harmony")
        ctx.embeddings["test"]["expression"] = np.random.default_rng(seed).normal(size=(120, 8)).astype("f4")
        res, *_ = _run("batch_mixing", ctx, n_components=8, top_k=10)
        hest.append(res["transductive_harmony"]["pearson_mean"])
    assert hest[0] == pytest.approx(hest[1], abs=1e-9)
