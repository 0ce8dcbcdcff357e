"""read_visium, read_h5ad and estimate_mpp_from_spots: real files and generated edge cases."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from biomodal.errors import DataError, MissingMetadataError, ReaderError
from biomodal.io import estimate_mpp_from_spots, read_h5ad, read_legacy_st, read_visium
from tests.io.st_helpers import make_legacy_st, make_visium, write_10x_h5


def test_import_pulls_no_torch_or_scanpy():
    code = (
        "import sys, biomodal.io as m; m.read_visium; m.read_h5ad; "
        "assert 'torch' not in sys.modules, 'torch'; assert 'scanpy' not in sys.modules, 'scanpy'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------- mpp estimation
def _grid(n_x, n_y, spacing_px, angle_deg, rng, missing=0.0, jitter=0.0):
    xs, ys = np.meshgrid(np.arange(n_x), np.arange(n_y))
    arr = np.c_[xs.ravel(), ys.ravel()].astype(float)
    th = np.deg2rad(angle_deg)
    R = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    pix = arr @ R.T * spacing_px + 500 + rng.normal(0, jitter, arr.shape)
    keep = rng.random(len(arr)) >= missing
    return pix[keep], arr[keep]


def test_estimate_mpp_square_grid_ground_truth():
    rng = np.random.default_rng(1)
    pix, arr = _grid(30, 30, 256.0, 7.0, rng, missing=0.3, jitter=4.0)
    pix[:10] += rng.normal(0, 80, (10, 2))  # a few badly placed centres
    assert estimate_mpp_from_spots(pix, arr, pitch_um=200.0) == pytest.approx(200 / 256, rel=0.01)


def test_estimate_mpp_visium_hex_grid():
    # Visium: array_col steps of 2 along a row = 100 um; rows 100*sqrt(3)/2 apart, offset by one column.
    rows, cols = np.meshgrid(np.arange(20), np.arange(40))
    rows, cols = rows.ravel(), cols.ravel()
    ok = (rows % 2) == (cols % 2)
    rows, cols = rows[ok], cols[ok]
    px_per_um = 1.37
    pix = np.c_[cols * 50.0, rows * 100 * np.sqrt(3) / 2] * px_per_um
    got = estimate_mpp_from_spots(pix, np.c_[cols, rows], pitch_um=100.0)
    assert got == pytest.approx(1 / px_per_um, rel=1e-6)


@pytest.mark.parametrize(
    ("pix", "arr", "match"),
    [
        (np.zeros((1, 2)), np.zeros((1, 2)), "at least 2"),
        (np.zeros((3, 2)), np.zeros((3, 3)), r"\(n, 2\)"),
        (np.array([[0, 0], [1, np.nan]]), np.array([[0, 0], [1, 0]]), "NaN"),
        (np.array([[0, 0], [1, 1]]), np.array([[0, 0], [0, 0]]), "duplicated array"),
    ],
)
def test_estimate_mpp_bad_input(pix, arr, match):
    with pytest.raises(DataError, match=match):
        estimate_mpp_from_spots(pix, arr)


# --------------------------------------------------------------------------- Visium, real folder
def _positions(folder):
    pos = pd.read_csv(folder / "spatial" / "tissue_positions_list.csv", header=None, index_col=0)
    pos.columns = ["in_tissue", "array_row", "array_col", "row_px", "col_px"]
    return pos


@pytest.mark.realdata
def test_visium_real_folder_lowres(shared_data):
    sc = pytest.importorskip("scanpy")
    folder = shared_data / "spatial" / "visium_spaceranger_1.0.0"
    a = read_visium(folder, image="lowres")
    ref = sc.read_10x_h5(folder / "filtered_feature_bc_matrix.h5")  # independent parser
    assert a.shape == (100, 100)
    assert list(a.obs_names) == list(ref.obs_names)
    assert list(a.var_names) == list(ref.var_names)
    np.testing.assert_array_equal(a.var["gene_ids"], ref.var["gene_ids"])
    np.testing.assert_array_equal(a.X.toarray(), ref.X.toarray())
    sf = json.loads((folder / "spatial" / "scalefactors_json.json").read_text())
    pos = _positions(folder).loc[a.obs_names]
    np.testing.assert_allclose(
        a.obsm["spatial"], pos[["col_px", "row_px"]].to_numpy() * sf["tissue_lowres_scalef"]
    )
    np.testing.assert_array_equal(a.obs["array_row"], pos["array_row"])
    u = a.uns["spatial"]
    assert u["image"] == "lowres" and u["scalefactor"] == sf["tissue_lowres_scalef"]
    assert u["slide_path"].endswith("tissue_lowres_image.png")
    assert u["mpp"] == pytest.approx(65.0 / sf["spot_diameter_fullres"] / sf["tissue_lowres_scalef"])
    # the spot-diameter estimate agrees with the 100 um pitch (55 um would be 18 % off)
    assert u["mpp_fullres_from_pitch"] == pytest.approx(u["mpp_fullres"], rel=0.01)
    assert (u["spot_diameter_um"], u["spot_pitch_um"], u["technology"]) == (55.0, 100.0, "visium")
    assert set(a.obs["sample"]) == {"visium_spaceranger_1.0.0"}


@pytest.mark.realdata
def test_visium_real_folder_hires_default_and_wrong_fullres(shared_data):
    folder = shared_data / "spatial" / "visium_spaceranger_1.0.0"
    a = read_visium(folder, sample="s", donor="d")
    assert a.uns["spatial"]["image"] == "hires" and a.uns["spatial"]["scalefactor"] == pytest.approx(0.150015)
    b = read_visium(folder, image="lowres")
    np.testing.assert_allclose(a.obsm["spatial"] * 0.045004502 / 0.150015, b.obsm["spatial"])
    assert set(a.obs["donor"]) == {"d"} and set(a.obs["batch"]) == {"s"}
    # the lowres PNG passed as if it were full resolution: spots fall outside -> refused
    with pytest.raises(DataError, match="outside the image"):
        read_visium(folder, image=folder / "spatial" / "tissue_lowres_image.png")


# --------------------------------------------------------------------------- Visium, generated
@pytest.mark.parametrize("header", [True, False])
def test_visium_generated_positions_versions(tmp_path, header):
    t = make_visium(tmp_path, header=header)
    a = read_visium(tmp_path, image=tmp_path / "fullres.png")
    pos = t["pos"].set_index("barcode")
    assert a.n_obs == len(pos) - 1  # one spot is in_tissue == 0
    np.testing.assert_allclose(
        a.obsm["spatial"], pos.loc[a.obs_names, ["pxl_col_in_fullres", "pxl_row_in_fullres"]]
    )
    np.testing.assert_array_equal(a.X.toarray(), t["counts"][1:])
    assert a.uns["spatial"]["mpp"] == pytest.approx(1 / t["px_per_um"])
    assert a.uns["spatial"]["mpp_fullres_from_pitch"] == pytest.approx(1 / t["px_per_um"], rel=1e-6)
    h = read_visium(tmp_path, image="hires", in_tissue_only=False, mpp=2.0)
    assert h.n_obs == len(pos) and h.uns["spatial"]["mpp_source"] == "user"
    assert h.uns["spatial"]["mpp_fullres"] == pytest.approx(2.0 * t["scalefactors"]["tissue_hires_scalef"])


def test_visium_barcodes_without_position_and_duplicate_symbols(tmp_path, caplog):
    t = make_visium(tmp_path, n_genes=4)
    bcs = [*t["pos"]["barcode"].tolist(), "NOPOS-1"]
    counts = np.vstack([t["counts"], np.ones((1, 4), int)])
    names = ["A", "B", "A", "C"]
    types = ["Gene Expression"] * 3 + ["Antibody Capture"]
    write_10x_h5(tmp_path / "filtered_feature_bc_matrix.h5", counts, bcs, names, feature_types=types)
    with caplog.at_level(logging.INFO, logger="biomodal"):
        a = read_visium(tmp_path, image="lowres")
    assert "NOPOS-1" not in a.obs_names
    assert "dropping 1 of" in caplog.text and "1 duplicated gene name" in caplog.text
    assert list(a.var_names) == ["A", "B", "A-1"]
    assert list(a.var["gene_ids"]) == ["ENSG00000000000", "ENSG00000000001", "ENSG00000000002"]
    write_10x_h5(tmp_path / "filtered_feature_bc_matrix.h5", counts[:, :2], [f"X{i}" for i in bcs], names[:2])
    with pytest.raises(DataError, match="none of"):
        read_visium(tmp_path, image="lowres")


@pytest.mark.parametrize(
    "missing",
    ["filtered_feature_bc_matrix.h5", "spatial/scalefactors_json.json", "spatial/tissue_positions.csv"],
)
def test_visium_missing_files(tmp_path, missing):
    make_visium(tmp_path)
    (tmp_path / missing).unlink()
    with pytest.raises(ReaderError, match=missing.split("/")[-1].split(".")[0]):
        read_visium(tmp_path, image="lowres")


def test_visium_negative_counts(tmp_path):
    t = make_visium(tmp_path)
    c = t["counts"].copy()
    c[2, 3] = -4
    write_10x_h5(tmp_path / "filtered_feature_bc_matrix.h5", c, t["pos"]["barcode"].tolist(), t["names"])
    with pytest.raises(DataError, match=r"filtered_feature_bc_matrix\.h5.*negative"):
        read_visium(tmp_path, image="lowres")


# --------------------------------------------------------------------------- read_h5ad
@pytest.mark.realdata
def test_h5ad_squidpy_lognormalised(shared_data, caplog):
    d = shared_data / "spatial" / "squidpy_mouse_brain"
    with caplog.at_level(logging.WARNING, logger="biomodal"):
        a = read_h5ad(d / "test_data.h5ad", slide=d / "test_img.jpg")
    raw = ad.read_h5ad(d / "test_data.h5ad")
    assert a.shape == (49, 1999)
    assert "not raw counts" in caplog.text
    u = a.uns["spatial"]
    assert u["x_is_counts"] is False and "counts" not in a.layers
    sf = raw.uns["spatial"]["V1_Adult_Mouse_Brain"]["scalefactors"]
    assert u["mpp"] == pytest.approx(65.0 / sf["spot_diameter_fullres"]) and u["mpp_source"] == "estimated"
    assert u["slide_path"] == str((d / "test_img.jpg").resolve()) and u["technology"] == "visium"
    assert "V1_Adult_Mouse_Brain" in u["libraries"]
    np.testing.assert_array_equal(a.obsm["spatial"], raw.obsm["spatial"].astype(float))
    assert set(a.obs["sample"]) == {"test_data"}
    with pytest.raises(MissingMetadataError, match="slide"):
        read_h5ad(d / "test_data.h5ad")


def test_h5ad_round_trip_relative_slide(tmp_path):
    make_legacy_st(tmp_path / "sec")
    s = tmp_path / "sec"
    a = read_legacy_st(s / "counts.tsv.gz", s / "spots.tsv", s / "image.jpg", sample="A", donor="P1")
    a.uns["spatial"]["slide_path"] = "sec/image.jpg"  # relative to the h5ad's folder
    a.write_h5ad(tmp_path / "a.h5ad")
    b = read_h5ad(tmp_path / "a.h5ad")
    assert b.uns["spatial"]["slide_path"] == str((s / "image.jpg").resolve())
    assert b.uns["spatial"]["mpp"] == a.uns["spatial"]["mpp"]
    assert b.uns["spatial"]["mpp_source"] == "estimated" and b.uns["spatial"]["x_is_counts"] is True
    np.testing.assert_array_equal(b.X.toarray(), a.X.toarray())
    assert set(b.obs["donor"]) == {"P1"}
    # counts without a layer get one
    del a.layers["counts"]
    a.write_h5ad(tmp_path / "b.h5ad")
    c = read_h5ad(tmp_path / "b.h5ad", mpp=0.3, batch="run2")
    assert "counts" in c.layers and c.uns["spatial"]["mpp_source"] == "user"
    assert set(c.obs["batch"]) == {"run2"}


def test_h5ad_errors(tmp_path):
    with pytest.raises(ReaderError, match=r"nope\.h5ad"):
        read_h5ad(tmp_path / "nope.h5ad")
    make_legacy_st(tmp_path)
    a = read_legacy_st(tmp_path / "counts.tsv.gz", tmp_path / "spots.tsv", tmp_path / "image.jpg")
    a.uns["spatial"]["slide_path"] = "missing.jpg"
    a.write_h5ad(tmp_path / "m.h5ad")
    with pytest.raises(ReaderError, match=r"missing\.jpg"):
        read_h5ad(tmp_path / "m.h5ad")
    del a.uns["spatial"]["mpp"]
    a.uns["spatial"]["slide_path"] = "image.jpg"
    a.write_h5ad(tmp_path / "n.h5ad")
    with pytest.raises(MissingMetadataError, match="mpp"):
        read_h5ad(tmp_path / "n.h5ad")
    del a.obsm["spatial"]
    a.write_h5ad(tmp_path / "o.h5ad")
    with pytest.raises(MissingMetadataError, match=r"obsm\['spatial'\]"):
        read_h5ad(tmp_path / "o.h5ad", mpp=1.0)
    (tmp_path / "bad.h5ad").write_bytes(b"not hdf5")
    with pytest.raises(ReaderError, match=r"bad\.h5ad"):
        read_h5ad(tmp_path / "bad.h5ad")
