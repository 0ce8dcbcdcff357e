"""Bad inputs through the ``biomodal`` CLI: exit code, one line naming the file or key, nothing lost.

Each case of issue 15 a user can hit from the command line: the command exits non-zero with
exactly one ``biomodal: error:`` line on stderr (no traceback) that names the file or key;
nothing half-written is left behind and nothing already saved is changed.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from biomodal.cli import main
from tests.io.st_helpers import make_legacy_st

ROOT = Path(__file__).resolve().parents[1]


def _fails(capsys, argv: list[str], *names: str, code: int | None = None) -> str:
    """Run the CLI; assert a non-zero exit and one error line naming ``names``; return that line."""
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("biomodal: error:")]
    assert rc != 0 and (code is None or rc == code), (rc, err)
    assert "Traceback" not in err, err
    assert len(lines) == 1, err
    for name in names:
        assert str(name) in lines[0], (name, lines[0])
    return lines[0]


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------ a small legacy-ST recipe
@pytest.fixture
def st_recipe(tmp_path: Path) -> tuple[Path, dict]:
    sections = []
    for i, (name, split) in enumerate([("S1", "train"), ("S2", "train"), ("S3", "test")]):
        make_legacy_st(tmp_path / name, n_x=7, n_y=6, n_genes=30, seed=i, px_per_step=120.0)
        sections.append(
            {
                "name": name,
                "split": split,
                "donor": f"d{i}",
                "counts": f"{name}/counts.tsv.gz",
                "spots": f"{name}/spots.tsv",
                "image": f"{name}/image.jpg",
            }
        )
    recipe = {
        "name": "st",
        "data": {
            "source": "legacy_st",
            "root": str(tmp_path),
            "sections": sections,
            "tile_um": 64,
            "mpp": 2.0,
            "genes": {"n_top_genes": 20},
            "augment": False,
        },
        "model": {"embed_dim": 8},
        "trainer": {"max_steps": 2, "batch_size": 16, "progress": False},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path, recipe


def _assert_not_trained(out: Path) -> None:
    """The run failed before training: no checkpoint, no metrics."""
    assert not (out / "checkpoints").exists() or not any((out / "checkpoints").iterdir())
    assert not (out / "model.pt").exists() and not (out / "metrics.json").exists()


def test_all_zero_counts_name_the_count_file(st_recipe, tmp_path, capsys):
    path, _ = st_recipe
    counts = tmp_path / "S2" / "counts.tsv.gz"
    table = pd.read_csv(counts, sep="\t", index_col=0)
    with gzip.open(counts, "wt") as f:
        (table * 0).to_csv(f, sep="\t")
    line = _fails(
        capsys, ["run", path, "--out", tmp_path / "run"], counts, "every count of the section is zero", code=2
    )
    assert "IndexError" not in line
    _assert_not_trained(tmp_path / "run")


def test_spots_outside_the_image_blame_the_spot_table(st_recipe, tmp_path, capsys):
    path, _ = st_recipe
    spots = tmp_path / "S1" / "spots.tsv"
    tab = pd.read_csv(spots, sep="\t")
    tab[["pixel_x", "pixel_y"]] += 50_000
    tab.to_csv(spots, sep="\t", index=False)
    line = _fails(capsys, ["run", path, "--out", tmp_path / "run"], spots, "outside the image", code=2)
    assert "counts.tsv.gz" not in line.split(":")[2]
    _assert_not_trained(tmp_path / "run")


def test_corrupt_image_fails_before_training_with_the_file_named(st_recipe, tmp_path, capsys):
    path, _ = st_recipe
    image = tmp_path / "S3" / "image.jpg"
    image.write_bytes(image.read_bytes()[:400])  # header kept, pixel data cut
    _fails(capsys, ["run", path, "--out", tmp_path / "run"], image)
    _assert_not_trained(tmp_path / "run")


@pytest.mark.parametrize(
    ("override", "key"),
    [("eval.ks=[0, 5]", "ks"), ("data.tile_um=0.5", "data.tile_um"), ("data.mpp=-1", "data.mpp")],
)
def test_out_of_range_values_are_refused_at_load(st_recipe, tmp_path, capsys, override, key):
    path, _ = st_recipe
    line = _fails(capsys, ["run", path, "--out", tmp_path / "run", "--set", override], key, code=2)
    assert "allowed" in line or "expected" in line or "greater than" in line or "must be" in line
    assert not (tmp_path / "run").exists()


def test_h5ad_with_duplicated_spot_ids_is_refused(tmp_path, capsys):
    import anndata as ad
    from PIL import Image

    Image.new("RGB", (400, 400), (220, 180, 200)).save(tmp_path / "he.png")
    rng = np.random.default_rng(0)
    files = []
    for name in ("A", "B"):
        a = ad.AnnData(rng.poisson(3, (20, 30)).astype(np.float32))
        a.obs_names = [f"spot{i % 10}" for i in range(20)] if name == "A" else [f"s{i}" for i in range(20)]
        a.var_names = [f"g{j}" for j in range(30)]
        a.obsm["spatial"] = rng.uniform(100, 300, (20, 2))
        a.uns["spatial"] = {"slide_path": str(tmp_path / "he.png"), "mpp": 1.0}
        a.write_h5ad(tmp_path / f"{name}.h5ad")
        files.append(tmp_path / f"{name}.h5ad")
    recipe = {
        "data": {
            "source": "h5ad",
            "sections": [
                {"name": "A", "split": "train", "path": str(files[0])},
                {"name": "B", "split": "test", "path": str(files[1])},
            ],
        },
        "trainer": {"max_steps": 2, "progress": False},
    }
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    _fails(capsys, ["run", tmp_path / "r.yaml", "--out", tmp_path / "run"], files[0], "spot ids", code=2)
    _assert_not_trained(tmp_path / "run")


def test_embed_without_a_slide_path_suggests_a_flag_that_exists(tmp_path, capsys):
    import anndata as ad

    from biomodal.errors import MissingMetadataError
    from biomodal.io import read_h5ad

    a = ad.AnnData(np.ones((4, 3), np.float32))
    a.obsm["spatial"] = np.full((4, 2), 10.0)
    a.write_h5ad(tmp_path / "x.h5ad")
    with pytest.raises(MissingMetadataError, match="--slide") as info:
        read_h5ad(tmp_path / "x.h5ad")
    flag = "--slide"
    assert flag in str(info.value)
    with pytest.raises(SystemExit):
        main(["embed", "--help"])
    assert flag in capsys.readouterr().out


# ------------------------------------------------------------------ unwritable outputs
@pytest.mark.parametrize("target", ["/proc/biomodal-x", "file/sub"])
def test_unwritable_out_is_one_line(tmp_path, capsys, target):
    (tmp_path / "file").write_text("not a folder")
    out = target if target.startswith("/") else tmp_path / target
    _fails(capsys, ["demo-data", out, "--small", "--donors", "2", "--sections-per-donor", "1"], out)
    rec = {
        "data": {"family": "toy", "n": 60},
        "eval": {"plots": False},
        "trainer": {"max_steps": 2, "batch_size": 24, "progress": False},
    }
    (tmp_path / "toy.yaml").write_text(yaml.safe_dump(rec))
    from tests.recipes import _toy_family  # noqa: F401  (registers "toy")

    _fails(capsys, ["run", tmp_path / "toy.yaml", "--out", out], out)
    assert (tmp_path / "file").read_text() == "not a folder"


def test_negative_spot_pitch_writes_nothing(tmp_path, capsys):
    out = tmp_path / "demo"
    _fails(capsys, ["demo-data", out, "--spot-pitch-um", "-5", "--small"], "spot_pitch_um", code=2)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def _limited(argv: list[str], cwd: Path, limit_bytes: int) -> subprocess.CompletedProcess:
    """Run the CLI in a subprocess with a file-size limit (``ulimit -f``), SIGXFSZ ignored."""
    code = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit_bytes}, {limit_bytes}))\n"
        "from tests.recipes import _toy_family\n"
        "from biomodal.cli import main\n"
        f"sys.exit(main({[str(a) for a in argv]!r}))\n"
    )
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def _one_error_line(proc: subprocess.CompletedProcess, *names: str) -> None:
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("biomodal: error:")]
    assert proc.returncode not in (0, -25), proc.stderr  # -25: killed by SIGXFSZ
    assert "Traceback" not in proc.stderr and len(lines) == 1, proc.stderr
    for name in names:
        assert name in lines[0], lines[0]


def test_demo_data_out_of_space_keeps_the_existing_dataset(tmp_path):
    out = tmp_path / "demo"
    args = ["demo-data", str(out), "--small", "--donors", "2", "--sections-per-donor", "1"]
    assert main(args) == 0
    before = _tree(out)
    proc = _limited([*args, "--seed", "3"], tmp_path, 150 * 1024)
    _one_error_line(proc, str(out), "File too large")
    assert _tree(out) == before  # the complete old dataset is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["demo"]  # no staging folder left
    fresh = _limited(["demo-data", str(tmp_path / "new"), "--small"], tmp_path, 150 * 1024)
    _one_error_line(fresh)
    assert not (tmp_path / "new").exists()  # no orphan TIFFs without a manifest


def test_run_out_of_space_is_one_line(tmp_path):
    rec = {
        "name": "toy",
        "data": {"family": "toy", "n": 120},
        "model": {"embed_dim": 8},
        "eval": {"plots": False},
        "trainer": {"max_steps": 4, "batch_size": 24, "ckpt_every": 2, "progress": False},
    }
    (tmp_path / "toy.yaml").write_text(yaml.safe_dump(rec))
    proc = _limited(["run", str(tmp_path / "toy.yaml"), "--out", str(tmp_path / "run")], tmp_path, 2048)
    _one_error_line(proc, str(tmp_path / "run"), "cannot write")
    assert not (tmp_path / "run" / "model.pt").exists()
    assert not [p for p in (tmp_path / "run").rglob("*.tmp*")]  # no half-written temporary files


# ------------------------------------------------------------------ checkpoints
@pytest.fixture(scope="module")
def toy_run(tmp_path_factory) -> Path:
    from biomodal.recipes import run
    from tests.recipes import _toy_family  # noqa: F401

    out = tmp_path_factory.mktemp("toy") / "run"
    run(
        {
            "name": "toy",
            "data": {"family": "toy", "n": 120},
            "model": {"embed_dim": 8},
            "eval": {"plots": False},
            "trainer": {"max_steps": 4, "batch_size": 24, "progress": False},
        },
        out=out,
    )
    return out


@pytest.mark.parametrize(
    ("kind", "says"),
    [
        ("truncated", "looks truncated"),
        ("random", "not a PyTorch checkpoint"),
        ("empty", "empty"),
        ("flipped", "fails its checksum"),
    ],
)
def test_damaged_model_pt_is_named_and_never_suggests_unsafe_loading(toy_run, tmp_path, capsys, kind, says):
    data = (toy_run / "model.pt").read_bytes()
    bad = tmp_path / "model.pt"
    if kind == "truncated":
        bad.write_bytes(data[: len(data) // 2])
    elif kind == "random":
        bad.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "empty":
        bad.write_bytes(b"")
    else:
        raw = bytearray(data)
        raw[len(raw) // 2 : len(raw) // 2 + 32] = bytes(
            b ^ 0xFF for b in raw[len(raw) // 2 : len(raw) // 2 + 32]
        )
        bad.write_bytes(bytes(raw))
    line = _fails(capsys, ["eval", bad, "--out", tmp_path / "ev"], bad, says, code=2)
    assert "weights_only" not in line and "Errno 22" not in line
    assert not (tmp_path / "ev").exists()


def test_checkpoint_with_an_edited_invalid_recipe_names_the_file(toy_run, tmp_path, capsys):
    import torch

    ckpt = torch.load(toy_run / "model.pt", weights_only=True)
    ckpt["extra"]["recipe"]["trainer"]["max_steps"] = -3
    edited = tmp_path / "edited.pt"
    torch.save(ckpt, edited)
    line = _fails(capsys, ["eval", edited, "--out", tmp_path / "ev"], edited, "max_steps", code=2)
    assert "<dict>" not in line


def test_checkpoint_pointing_at_other_demo_data_never_regenerates(tmp_path):
    from biomodal.errors import CheckpointError
    from biomodal.recipes.families import get_family
    from biomodal.recipes.schema import load_recipe

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    recipe = load_recipe(
        {"data": {"demo": {"small": True, "root": str(elsewhere)}}, "trainer": {"max_steps": 1}}
    )
    with pytest.raises(CheckpointError, match=rf"{elsewhere}: the checkpoint's recipe reads demo data"):
        get_family("spatial").prepare(recipe, tmp_path / "ev", preprocessors={"expression": object()})
    assert list(elsewhere.iterdir()) == []  # nothing generated


def test_eval_of_a_good_checkpoint_still_works_and_keeps_the_run(toy_run, tmp_path, capsys):
    before = _tree(toy_run)
    assert main(["eval", str(toy_run / "model.pt"), "--out", str(tmp_path / "ev")]) == 0
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert _tree(toy_run) == before


@pytest.fixture(scope="module")
def spatial_run(tmp_path_factory) -> tuple[Path, Path]:
    from biomodal.recipes import run

    root = tmp_path_factory.mktemp("st")
    sections = []
    for i, (name, split) in enumerate([("S1", "train"), ("S2", "train"), ("S3", "test")]):
        make_legacy_st(root / name, n_x=7, n_y=6, n_genes=30, seed=i, px_per_step=120.0)
        sections.append({"name": name, "split": split, "donor": f"d{i}", "counts": f"{name}/counts.tsv.gz",
                         "spots": f"{name}/spots.tsv", "image": f"{name}/image.jpg", "mpp": 2.0})  # fmt: skip
    retrieval = {"name": "retrieval", "params": {"pairs": [["histology", "expression"]]}}
    recipe = {
        "data": {
            "source": "legacy_st",
            "root": str(root),
            "sections": sections,
            "tile_um": 64,
            "mpp": 2.0,
            "genes": {"n_top_genes": 20},
            "augment": False,
        },
        "model": {"embed_dim": 8},
        "eval": {"plots": False, "protocols": [retrieval]},
        "trainer": {"max_steps": 2, "batch_size": 16, "progress": False},
    }
    run(recipe, out=root / "run")
    return root, root / "run" / "model.pt"


def test_embed_without_a_slide_path_then_with_the_suggested_flag(spatial_run, tmp_path, capsys):
    from biomodal import io

    root, model = spatial_run
    section = io.read(root / "S3" / "counts.tsv.gz", reader="legacy_st", spots=root / "S3" / "spots.tsv",
                      image=root / "S3" / "image.jpg", mpp=2.0)  # fmt: skip
    del section.uns["spatial"]["slide_path"]
    section.write_h5ad(tmp_path / "noslide.h5ad")
    dest = tmp_path / "emb.h5ad"
    line = _fails(capsys, ["embed", model, tmp_path / "noslide.h5ad", "-o", dest], "noslide.h5ad", "--slide")
    assert "pass slide=" not in line and not dest.exists()
    argv = ["embed", model, tmp_path / "noslide.h5ad", "-o", dest, "--slide", root / "S3" / "image.jpg"]
    assert main([str(a) for a in argv]) == 0
    import anndata as ad

    assert ad.read_h5ad(dest).obsm["X_biomodal_histology"].shape == (section.n_obs, 8)
