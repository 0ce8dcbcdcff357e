"""The fMRI family: generated cross-subject data end to end, real maps, top-1 among n, targets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from biomodal.errors import ConfigError, DataError

pytest.importorskip("nibabel")

ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "data.synthetic={n_subjects: 3, n_train_stimuli: 120, n_test_stimuli: 40, seed: 0}",
    "data.transfer_subjects=[sub-03]",
    "trainer.max_steps=60",
    "trainer.val_every=30",
    "trainer.batch_size=32",
]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from biomodal.recipes import run

    out = tmp_path_factory.mktemp("fmri_run")
    cache = out / "cache"
    sets = [*TINY, f"data.targets.cache_dir={cache}"]
    metrics = run(ROOT / "recipes" / "fmri" / "cross_subject.yaml", out=out / "run", overrides=sets)
    return out / "run", metrics, cache


def test_cross_subject_recipe_retrieves_far_above_chance(tiny_run):
    run_dir, m, _ = tiny_run
    t = m["top1_among_n"]
    assert t["n"] == 40 and t["chance"] == pytest.approx(1 / 40) and t["draws"] == 30
    assert t["groups"] == 2 and set(t["per_group"]) == {"sub-01", "sub-02"}  # sub-03 is left out
    assert t["brain_to_stimulus"] > 4 * t["chance"] and t["stimulus_to_brain"] > 4 * t["chance"]
    assert t["baselines"]["untrained"]["brain_to_stimulus"] < 3 * t["chance"]
    assert t["baselines"]["ridge"]["brain_to_stimulus"] > 2 * t["chance"]
    assert m["n_test"] == 80  # 2 subjects x 40 shared stimuli, repeats averaged
    assert (run_dir / "metrics.json").is_file() and "top-1 among n" in (run_dir / "metrics.md").read_text()


def test_stimulus_split_zscore_on_training_trials_and_target_cache(tiny_run):
    from biomodal.recipes.checkpoint import load

    run_dir, _, cache = tiny_run
    model = load(run_dir / "model.pt")
    pre = model.preprocessors["fmri"]
    assert pre.subjects == ["sub-01", "sub-02"] and pre.adapters == "per_subject"
    assert model.encoders["fmri"].voxels == [len(pre.masks["sub-01"]), len(pre.masks["sub-02"])]
    prepared = model.family.prepare(model.recipe, run_dir, preprocessors=model.preprocessors)
    assert prepared.info["targets"]["cache_hit"] is True and len(list(cache.glob("targets_*.npz"))) == 1
    obs = {s: d.obs for s, d in prepared.eval_datasets.items()}
    stim = {s: set(o["stimulus"]) for s, o in obs.items()}
    assert (
        not stim["train"] & stim["test"]
        and not stim["val"] & stim["test"]
        and not stim["train"] & stim["val"]
    )
    assert stim["test"] == {str(i) for i in range(120, 160)}  # the shared stimuli of stimuli.tsv
    # z-scoring statistics come from training trials only: 2 repeats of each training stimulus
    for s in pre.subjects:
        n_train_items = int((obs["train"]["subject"] == s).sum())
        assert pre.scalers[s].n_fit_ == 2 * n_train_items
    tr = prepared.eval_datasets["train"].features("fmri")
    assert np.abs(tr[:, 1:].mean(0)).max() < 1e-4  # trained columns centred on training data


def test_new_subject_curve_runs_and_reports_three_methods(tiny_run):
    from biomodal.recipes.checkpoint import load
    from biomodal.recipes.families._fmri_transfer import new_subject_curve

    run_dir, _, _ = tiny_run
    model = load(run_dir / "model.pt")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    prepared = model.family.prepare(model.recipe, run_dir, preprocessors=model.preprocessors)
    res = new_subject_curve(model, prepared, fractions=(0.1, 1.0), steps=10, n=40, draws=3)
    assert res["subject"] == "sub-03" and [p["n_train"] for p in res["curve"]][1] > res["curve"][0]["n_train"]
    for point in res["curve"]:
        assert {"shared", "scratch", "ridge"} <= set(point)
        assert point["shared"]["n"] == 40 and 0 <= point["shared"]["brain_to_stimulus"] <= 1
    after = model.state_dict()
    assert all(np.array_equal(after[k].numpy(), before[k].numpy()) for k in before)  # model untouched


def test_config_errors():
    from biomodal.recipes import load_recipe

    base = {"name": "x", "data": {"family": "fmri", "source": "synthetic"}, "trainer": {"max_steps": 1}}
    with pytest.raises(ConfigError, match=r"held-out subjects|no adapter of their own"):
        load_recipe({**base, "data": {**base["data"], "split": "subject"}})
    with pytest.raises(ConfigError, match=r"need data.mask: common"):
        load_recipe({**base, "data": {**base["data"], "adapters": "shared", "split": "subject"}})
    with pytest.raises(ConfigError, match=r"data.files: list the image files"):
        load_recipe({**base, "data": {"family": "fmri"}})
    rec = load_recipe(base)
    assert [p.name for p in rec.eval.protocols] == ["top1_among_n"]
    assert set(rec.modalities) == {"fmri", "image"}


def test_top1_among_n_scores():
    from biomodal.recipes.families._fmri_eval import top1_among_n

    rng = np.random.default_rng(0)
    z = rng.normal(size=(50, 8))
    stim = np.arange(50)
    perfect = top1_among_n(z, z, stim, n=20, draws=5)
    assert (
        perfect["brain_to_stimulus"]
        == 1.0
        == perfect["stimulus_to_brain"]
        == perfect["full_brain_to_stimulus"]
    )
    assert perfect["chance"] == pytest.approx(1 / 20) and perfect["n"] == 20
    rand = top1_among_n(rng.normal(size=(600, 8)), rng.normal(size=(600, 8)), np.arange(600), n=10, draws=200)
    assert rand["brain_to_stimulus"] == pytest.approx(0.1, abs=0.02)
    # two subjects' items of one stimulus share one target: n is the number of distinct stimuli
    dup = top1_among_n(np.vstack([z[:5], z[:5]]), np.vstack([z[:5], z[:5]]), np.tile(stim[:5], 2), n=300)
    assert dup["n"] == 5 and dup["n_items"] == 10 and dup["full_brain_to_stimulus"] == 1.0


def test_target_cache_key_follows_encoder_and_data(tmp_path):
    from biomodal.recipes.families._fmri_targets import stimulus_targets
    from biomodal.recipes.families.fmri import FmriTargets

    imgs = np.random.default_rng(0).random((6, 3, 16, 16)).astype(np.float32)
    np.save(tmp_path / "stimuli.npy", imgs)
    cfg = FmriTargets(encoder="cnn_small", params={"channels": [4, 8]}, cache_dir=str(tmp_path / "c"))
    a, ia = stimulus_targets(cfg, tmp_path, ["0", "1", "2"])
    b, ib = stimulus_targets(cfg, tmp_path, ["0", "1", "2"])
    assert not ia["cache_hit"] and ib["cache_hit"] and ia["cache"] == ib["cache"]
    np.testing.assert_array_equal(a, b)
    cfg2 = FmriTargets(
        encoder="cnn_small", params={"channels": [4, 8]}, seed=1, cache_dir=str(tmp_path / "c")
    )
    _, ic = stimulus_targets(cfg2, tmp_path, ["0", "1", "2"])
    np.save(tmp_path / "stimuli.npy", imgs[::-1].copy())
    _, idd = stimulus_targets(cfg, tmp_path, ["0", "1", "2"])
    assert len({ia["key"], ic["key"], idd["key"]}) == 3 and not idd["cache_hit"]
    with pytest.raises(DataError, match=r"stimulus ids up to 9 for 6 images"):
        stimulus_targets(cfg, tmp_path, ["9"])


@pytest.mark.realdata
def test_real_multisubject_maps_prepare(shared_data, tmp_path):
    from biomodal.recipes import load_recipe
    from biomodal.recipes.families import get_family

    sets = [f"data.targets.cache_dir={tmp_path / 'cache'}", "seed=3"]
    rec = load_recipe(ROOT / "recipes" / "fmri" / "multisubject_tasks.yaml", sets)
    assert Path(rec.data.root) == (shared_data / "fmri" / "multisubject").resolve()
    prepared = get_family("fmri").prepare(rec, tmp_path)
    eds = prepared.eval_datasets
    assert sum(len(d) for d in eds.values()) == 19
    subs = {s: set(d.obs["subject"]) for s, d in eds.items()}
    assert not subs["train"] & subs["test"] and not subs["val"] & subs["test"]  # split by subject
    pre = prepared.preprocessors["fmri"]
    assert pre.adapters == "shared" and pre.input_spec()["voxels"] == [len(pre.masks["subject_01"])]
    assert 40_000 < pre.input_spec()["voxels"][0] < 60_000  # the voxels inside every map
    assert pre.scalers["*"].n_fit_ == len(eds["train"])  # pooled z-scoring: training maps only
    assert set(eds["train"].obs["task"]) == {"words", "faces"}
    assert eds["test"].features("text").shape == (len(eds["test"]), 384)  # MiniLM captions


def test_generator_and_events_tables(tmp_path):
    import nibabel as nib

    from biomodal.datasets.fmri_synthetic import make_fmri_multisubject
    from biomodal.io import read_fmri
    from biomodal.recipes.families._fmri_data import read_trials
    from biomodal.recipes.families.fmri import FmriData

    m = make_fmri_multisubject(tmp_path, n_subjects=2, n_train_stimuli=10, n_test_stimuli=4, grid=(8, 9, 7))
    assert (
        make_fmri_multisubject(tmp_path, n_subjects=2, n_train_stimuli=10, n_test_stimuli=4, grid=(8, 9, 7))
        == m
    )
    a, b = (tmp_path / s / "betas.nii.gz" for s in ("sub-01", "sub-02"))
    assert "".join(nib.aff2axcodes(nib.load(a).affine)) == "RAS"
    assert "".join(nib.aff2axcodes(nib.load(b).affine)) == "LAS" and read_fmri(b).orientation == "RAS"
    assert m["voxels"]["sub-01"] != m["voxels"]["sub-02"] == read_fmri(b).n_voxels
    data = FmriData(files=[{"glob": "sub-*/betas.nii.gz", "events": "{stem}_events.tsv"}])
    with pytest.raises(DataError, match=r"no events table .*betas_events\.tsv"):
        read_trials(data, tmp_path)
    ev = (tmp_path / "sub-01" / "events.tsv").read_text().splitlines()
    for s in ("sub-01", "sub-02"):
        (tmp_path / s / "betas_events.tsv").write_text((tmp_path / s / "events.tsv").read_text())
    trials = read_trials(data, tmp_path)
    assert trials.subjects == ["sub-01", "sub-02"] and trials.x["sub-01"].shape[0] == len(ev) - 1
    (tmp_path / "sub-01" / "betas_events.tsv").write_text("\n".join(ev[:-1]) + "\n")
    with pytest.raises(DataError, match=r"betas_events\.tsv: has \d+ rows for the \d+ volumes"):
        read_trials(data, tmp_path)


def test_nsd_preparer_writes_events_per_session(tmp_path):
    import pandas as pd
    from scipy.io import savemat

    from biomodal.datasets.fmri_nsd import TRIALS_PER_SESSION, prepare_nsd_events

    rng = np.random.default_rng(0)
    n_trials = 2 * TRIALS_PER_SESSION
    subjectim = np.stack([rng.permutation(100)[:20] + 1, rng.permutation(100)[:20] + 1])  # 73k ids, 1-based
    order = rng.integers(1, 21, size=(1, n_trials))  # indices into each subject's 20 images, 1-based
    savemat(
        tmp_path / "nsd_expdesign.mat",
        {"masterordering": order, "subjectim": subjectim, "sharedix": [[5, 7]]},
    )
    res = prepare_nsd_events(tmp_path / "nsd_expdesign.mat", tmp_path / "root", subjects=(2,))
    assert res["subjects"] == {"subj02": 2}
    ev = pd.read_csv(tmp_path / "root" / "subj02" / "betas_session02_events.tsv", sep="\t")
    assert len(ev) == TRIALS_PER_SESSION and ev["volume"].tolist() == list(range(TRIALS_PER_SESSION))
    t = TRIALS_PER_SESSION + 3  # 4th trial of session 2
    assert ev["stimulus"][3] == subjectim[1, order[0, t] - 1] - 1
    stim = pd.read_csv(tmp_path / "root" / "stimuli.tsv", sep="\t")
    assert set(stim.loc[stim["shared"] == 1, "stimulus"]) <= {4, 6}
