"""End-to-end recipe runs on generated data (short CPU runs) and checkpoint reuse."""

from __future__ import annotations

import json
from pathlib import Path

import anndata as ad
import numpy as np
import pytest

from biomodal.cli import main
from biomodal.errors import CheckpointError, DataError
from biomodal.recipes import load, run
from biomodal.recipes.checkpoint import embed_h5ad
from biomodal.recipes.schema import load_recipe

FAST = [
    "data.demo.small=true",
    "data.demo.n_donors=3",
    "data.demo.sections_per_donor=1",
    "data.tile_um=32",
    "data.mpp=1.0",
    "data.genes.n_top_genes=40",
    "modalities.histology.params={channels: [8, 16, 32, 32]}",
    "model.embed_dim=16",
    "trainer.max_steps=12",
    "trainer.batch_size=32",
    "trainer.warmup_steps=2",
    "trainer.val_every=6",
    "trainer.ckpt_every=6",
    "trainer.log_every=3",
    "trainer.progress=false",
    "eval.pca_components=16",
    "eval.knn_k=5",
]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("run")
    metrics = run("spatial/demo", overrides=FAST, out=out)
    return out, metrics


def test_metrics_contract(demo_run):
    out, metrics = demo_run
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk["retrieval"].keys() == metrics["retrieval"].keys()
    n_test = metrics["n_test"]
    for direction in ("histology_to_expression", "expression_to_histology"):
        r = on_disk["retrieval"][direction]
        for k in (1, 5, 10):
            assert 0.0 <= r[f"recall@{k}"] <= 1.0
            assert r[f"chance@{k}"] == pytest.approx(min(k, n_test) / n_test)
        assert r["n"] == n_test
        assert 1 <= r["median_rank"] <= n_test
    e = on_disk["expression"]
    for key in ("pearson_mean", "baseline_pearson_mean", "knn_pearson_mean", "colour_histogram_pearson_mean"):
        assert -1.0 <= e[key] <= 1.0
    assert on_disk["probe"]["tissue_type"]["histology"]["chance_uniform"] == pytest.approx(1 / 5)
    assert on_disk["train"]["steps"] == 12


def test_run_directory_contents(demo_run):
    out, _ = demo_run
    for name in ("metrics.json", "metrics.md", "recipe.yaml", "model.pt", "metrics.csv"):
        assert (out / name).is_file(), name
    for plot in ("training_curves.png", "umap_histology.png", "recall_at_k.png", "expression_over_slide.png"):
        assert (out / "plots" / plot).stat().st_size > 1000, plot
    assert "chance@1" in (out / "metrics.md").read_text()
    # the resolved recipe records where the generated data lives and re-validates
    rec = load_recipe(out / "recipe.yaml")
    assert Path(rec.data.demo.root).is_dir()
    assert not list(out.glob("**/*.tmp*")), "no temporary files may be left behind"


def test_splits_are_by_donor(demo_run):
    out, metrics = demo_run
    import pandas as pd

    manifest = pd.read_csv(Path(load_recipe(out / "recipe.yaml").data.demo.root) / "manifest.csv")
    donors = manifest.groupby("split")["donor"].apply(set)
    assert donors["train"].isdisjoint(donors["test"])
    assert metrics["n_test"] < metrics["n_train"] + metrics["n_test"]


def test_checkpoint_roundtrip_reproduces_metrics(demo_run, tmp_path):
    out, metrics = demo_run
    model = load(out / "model.pt")
    assert model.preprocessors["expression"].var_names_
    assert set(model.preprocessors) == {"histology", "expression"}
    assert not model.training
    again = json.loads(json.dumps(_evaluate(out, tmp_path)))
    for direction in ("histology_to_expression", "expression_to_histology"):
        assert again["retrieval"][direction] == pytest.approx(metrics["retrieval"][direction])
    assert again["expression"]["pearson_mean"] == pytest.approx(metrics["expression"]["pearson_mean"])


def _evaluate(out: Path, dest: Path) -> dict:
    assert main(["eval", str(out / "model.pt"), "--out", str(dest)]) == 0
    return json.loads((dest / "metrics.json").read_text())


def test_embed_cli_writes_scanpy_readable_h5ad(demo_run, tmp_path):
    out, _ = demo_run
    root = Path(load_recipe(out / "recipe.yaml").data.demo.root)
    section = sorted(root.glob("*.h5ad"))[0]
    dest = tmp_path / "emb.h5ad"
    assert main(["embed", str(out / "model.pt"), str(section), "-o", str(dest)]) == 0
    a = ad.read_h5ad(dest)
    assert a.obsm["X_biomodal_histology"].shape == (a.n_obs, 16)
    norms = np.linalg.norm(a.obsm["X_biomodal_expression"], axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-4)


def test_embed_refuses_mismatched_panel(demo_run, tmp_path, capsys):
    out, _ = demo_run
    model = load(out / "model.pt")
    root = Path(load_recipe(out / "recipe.yaml").data.demo.root)
    section = ad.read_h5ad(sorted(root.glob("*.h5ad"))[0])
    dropped = list(model.preprocessors["expression"].var_names_[:3])
    bad = section[:, ~section.var_names.isin(dropped)].copy()
    bad.uns["spatial"]["slide_path"] = str(root / Path(section.uns["spatial"]["slide_path"]).name)
    src = tmp_path / "bad.h5ad"
    bad.write_h5ad(src)
    dest = tmp_path / "never.h5ad"
    with pytest.raises(DataError) as exc:
        embed_h5ad(out / "model.pt", src, dest)
    assert dropped[0] in str(exc.value)
    assert main(["embed", str(out / "model.pt"), str(src), "-o", str(dest)]) == 2  # the CLI reports it
    assert dropped[0] in capsys.readouterr().err
    assert not dest.exists()


def test_load_rejects_non_recipe_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load(tmp_path / "missing.pt")
    import torch

    bogus = tmp_path / "bogus.pt"
    torch.save({"format": "something-else"}, bogus)
    with pytest.raises(CheckpointError, match=str(bogus)):
        load(bogus)


def test_cli_run_override_error_names_key(tmp_path, capsys):
    assert main(["run", "spatial/demo", "--set", "trainer.max_stepz=3", "--out", str(tmp_path)]) == 2
    assert "max_stepz" in capsys.readouterr().err


def test_demo_data_cli_and_reuse(tmp_path):
    from biomodal.recipes.families._spatial_io import demo_dataset as _demo_dataset
    from biomodal.recipes.families.spatial import DemoConfig

    root = tmp_path / "demo"
    assert main(["demo-data", str(root), "--donors", "3", "--sections-per-donor", "1", "--small"]) == 0
    manifest = (root / "manifest.csv").read_text().splitlines()
    assert len(manifest) == 1 + 3
    stamp = (root / "manifest.csv").stat().st_mtime_ns
    cfg = DemoConfig(n_donors=3, sections_per_donor=1, small=True)
    ds = _demo_dataset(root, cfg)
    assert (root / "manifest.csv").stat().st_mtime_ns == stamp, "matching data must be reused, not rewritten"
    assert len(ds.sections) == 3
    _demo_dataset(root, DemoConfig(n_donors=3, sections_per_donor=1, small=True, seed=1))
    assert (root / "manifest.csv").stat().st_mtime_ns != stamp, "different parameters must regenerate"
