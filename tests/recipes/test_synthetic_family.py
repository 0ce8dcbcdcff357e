"""The synthetic family and Symile's XOR data: generator, recipe validation, a short end-to-end run."""

from __future__ import annotations

import numpy as np
import pytest

from biomodal.datasets.xor import make_xor, xor_pair_dependence
from biomodal.errors import ConfigError
from biomodal.recipes import load, load_recipe, run


def test_xor_generator():
    d = make_xor(4000, 8, seed=1)
    assert d["a"].shape == d["b"].shape == d["c"].shape == (4000, 8)
    assert set(np.unique(d["a"])) == {0.0, 1.0}
    assert np.array_equal(d["c"], np.logical_xor(d["a"], d["b"]).astype(np.float32))
    # every pair is independent: bit correlations are sampling noise (~ 1/sqrt(n))
    assert max(xor_pair_dependence(d).values()) < 0.06
    again = make_xor(4000, 8, seed=1)
    assert all(np.array_equal(d[k], again[k]) for k in "abc")
    noisy = make_xor(20000, 8, noise=0.1, seed=2)
    flipped = noisy["c"] != np.logical_xor(noisy["a"], noisy["b"])
    assert flipped.mean() == pytest.approx(0.1, abs=0.01)
    mix = make_xor(20000, 4, p_xor=0.5, seed=3)  # the paper's mixture: c = a where not XOR
    assert mix["is_xor"].mean() == pytest.approx(0.5, abs=0.02)
    assert np.array_equal(mix["c"][~mix["is_xor"]], mix["a"][~mix["is_xor"]])
    assert xor_pair_dependence(mix)["a-c"] > 0.3  # pairwise information appears
    for bad in ({"noise": 0.7}, {"p_xor": 1.5}, {"bits": 0}):
        with pytest.raises(ConfigError):
            make_xor(10, **{"bits": 4, **bad})


def test_recipe_and_family_defaults():
    rec = load_recipe("clinical/symile_xor")
    assert rec.data.family == "synthetic" and list(rec.modalities) == ["v_a", "v_b", "v_c"]
    assert rec.eval.protocols[0].name == "k_candidate"
    bare = load_recipe({"data": {"family": "synthetic"}, "trainer": {"max_steps": 1}})
    assert list(bare.modalities) == ["v_a", "v_b", "v_c"]
    assert bare.eval.protocols[0].parsed().targets == ["v_c"]
    with pytest.raises(ConfigError, match="bits"):
        load_recipe({"data": {"family": "synthetic", "bitz": 3}})
    with pytest.raises(ConfigError):
        load_recipe({"data": {"family": "synthetic", "generator": "and"}})


QUICK = [
    "data.bits=6",
    "data.n_train=2000",
    "data.n_val=400",
    "data.n_test=500",
    "trainer.max_steps=160",
    "trainer.val_every=40",
]


def _protocol(score):
    return (
        f"eval.protocols=[{{name: k_candidate, params: {{targets: [v_c], k: 5, draws: 3, score: {score}}}}}]"
    )


def test_symile_solves_xor_and_clip_stays_at_chance(tmp_path):
    sym = run("clinical/symile_xor", overrides=[*QUICK, _protocol("mip")], out=tmp_path / "symile")
    clip = run("clinical/symile_xor", overrides=[*QUICK, "loss={name: clip}", _protocol("pairwise")],
               out=tmp_path / "clip")  # fmt: skip
    s, c = sym["k_candidate"]["v_c"], clip["k_candidate"]["v_c"]
    assert s["chance"] == c["chance"] == pytest.approx(0.2)
    assert s["accuracy"] > 0.8 * s["ceiling"], s
    assert abs(c["accuracy"] - 0.2) < 0.06, c
    # the checkpoint reloads with its (identity) preprocessors and rebuilds the data
    model = load(tmp_path / "symile" / "model.pt")
    assert model.preprocessors["v_a"].input_spec() == {"in_features": 6}
    prepared = model.family.prepare(model.recipe, tmp_path / "symile", preprocessors=model.preprocessors)
    assert len(prepared.eval_datasets["test"]) == 500
    with pytest.raises(ConfigError, match="not generated"):
        run({"data": {"family": "synthetic", "n_train": 20, "n_val": 0, "n_test": 20},
             "modalities": {"ecg": {"encoder": "mlp"}, "v_a": {"encoder": "mlp"}},
             "trainer": {"max_steps": 1, "progress": False}}, out=tmp_path / "bad")  # fmt: skip
