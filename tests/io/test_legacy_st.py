"""read_legacy_st on the real her2st sections and on generated edge cases."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from biomodal.errors import DataError, ReaderError
from biomodal.io import read_legacy_st
from tests.io.st_helpers import make_legacy_st, write_counts, write_image


def _her2st(shared_data, name):
    d = shared_data / "spatial" / "her2st" / name
    return d / "counts.tsv.gz", d / "spots.tsv", d / "image.jpg"


def _reference_mpp(spots: pd.DataFrame, pitch_um: float = 200.0) -> float:
    """Independent reference: least-squares affine fit of pixels on the adjusted array coordinates."""
    A = np.c_[spots[["new_x", "new_y"]].to_numpy(), np.ones(len(spots))]
    coef, *_ = np.linalg.lstsq(A, spots[["pixel_x", "pixel_y"]].to_numpy(), rcond=None)
    px_per_step = np.sqrt(abs(np.linalg.det(coef[:2])))  # geometric mean of the two axis scales
    return pitch_um / px_per_step


@pytest.mark.realdata
def test_her2st_c2_matches_independent_parse(shared_data, caplog):
    counts, spots, image = _her2st(shared_data, "C2")
    with caplog.at_level(logging.INFO, logger="biomodal"):
        a = read_legacy_st(counts, spots, image)
    ref = pd.read_csv(counts, sep="\t", index_col=0)
    tab = pd.read_csv(spots, sep="\t")
    assert a.shape == (187, 15706)
    assert list(a.var_names) == list(ref.columns)
    np.testing.assert_array_equal(a.X.toarray(), ref.loc[a.obs_names].to_numpy())
    np.testing.assert_array_equal(a.layers["counts"].toarray(), a.X.toarray())
    assert a.X.dtype == np.float32 and a.obsm["spatial"].dtype == np.float64
    # coordinates: join by array position, done independently with a merge
    key = tab.assign(name=tab["x"].astype(str) + "x" + tab["y"].astype(str)).set_index("name")
    np.testing.assert_allclose(a.obsm["spatial"], key.loc[a.obs_names, ["pixel_x", "pixel_y"]].to_numpy())
    np.testing.assert_array_equal(a.obs["array_col"], key.loc[a.obs_names, "x"])
    np.testing.assert_array_equal(a.obs["array_row"], key.loc[a.obs_names, "y"])
    u = a.uns["spatial"]
    assert u["technology"] == "legacy_st" and u["mpp_source"] == "estimated" and u["x_is_counts"]
    assert u["slide_path"] == str(image.resolve())
    assert (u["spot_diameter_um"], u["spot_pitch_um"]) == (100.0, 200.0)
    # ~290 px per 200 um array step -> ~0.69 um/px (see report: not 0.78)
    assert u["mpp"] == pytest.approx(_reference_mpp(tab), rel=0.02)
    assert 0.66 < u["mpp"] < 0.72
    assert "um/px" in caplog.text
    for col in ("sample", "donor", "batch"):
        assert isinstance(a.obs[col].dtype, pd.CategoricalDtype)
        assert set(a.obs[col]) == {"C2"}


@pytest.mark.realdata
def test_her2st_c3_logs_spots_without_counts(shared_data, caplog):
    counts, spots, image = _her2st(shared_data, "C3")
    with caplog.at_level(logging.INFO, logger="biomodal"):
        a = read_legacy_st(counts, spots, image, sample="C3", donor="patientC", batch="b1", mpp=0.5)
    assert a.n_obs == 180  # 182 selected spots, 2 without a count row
    assert "2 selected spots have no count row" in caplog.text
    assert a.uns["spatial"]["mpp"] == 0.5 and a.uns["spatial"]["mpp_source"] == "user"
    assert set(a.obs["donor"]) == {"patientC"} and set(a.obs["batch"]) == {"b1"}


def test_generated_section_drops_unselected(tmp_path, caplog):
    t = make_legacy_st(tmp_path / "s1", px_per_step=250.0)
    d = tmp_path / "s1"
    with caplog.at_level(logging.INFO, logger="biomodal"):
        a = read_legacy_st(d / "counts.tsv.gz", d / "spots.tsv", d / "image.jpg")
    n = len(t["spots"])
    assert a.n_obs == n - 1 and "1x1" not in a.obs_names
    assert "1 count rows whose spot is not selected" in caplog.text
    np.testing.assert_array_equal(a.X.toarray(), t["counts"].loc[a.obs_names].to_numpy())
    assert a.uns["spatial"]["mpp"] == pytest.approx(200.0 / 250.0, rel=0.01)
    assert set(a.obs["sample"]) == {"s1"}


def test_join_rounds_array_coordinates(tmp_path):
    t = make_legacy_st(tmp_path)
    c = t["counts"].copy()
    # count rows written with slightly off float coordinates still find their spot
    c.index = [f"{x + 0.1:.2f}x{y - 0.2:.2f}" for x, y in t["spots"][["x", "y"]].to_numpy()]
    write_counts(tmp_path / "counts.tsv.gz", c)
    sp = t["spots"].assign(x=t["spots"]["x"].astype(float), y=t["spots"]["y"].astype(float))
    sp.to_csv(tmp_path / "spots.tsv", sep="\t", index=False)
    a = read_legacy_st(tmp_path / "counts.tsv.gz", tmp_path / "spots.tsv", tmp_path / "image.jpg")
    assert a.n_obs == len(sp) - 1
    xy = sp.set_index(sp["x"].astype(int).astype(str) + "x" + sp["y"].astype(int).astype(str))
    expected = t["counts"].to_numpy()[1:]
    np.testing.assert_array_equal(a.X.toarray(), expected)
    np.testing.assert_allclose(a.obsm["spatial"], xy[["pixel_x", "pixel_y"]].to_numpy()[1:])


def test_transposed_counts_table(tmp_path):
    t = make_legacy_st(tmp_path)
    a = read_legacy_st(tmp_path / "counts.tsv.gz", tmp_path / "spots.tsv", tmp_path / "image.jpg")
    write_counts(tmp_path / "counts_t.tsv.gz", t["counts"].T)
    b = read_legacy_st(tmp_path / "counts_t.tsv.gz", tmp_path / "spots.tsv", tmp_path / "image.jpg")
    assert list(b.obs_names) == list(a.obs_names) and list(b.var_names) == list(a.var_names)
    np.testing.assert_array_equal(a.X.toarray(), b.X.toarray())


def test_count_rows_matching_no_spot(tmp_path, caplog):
    t = make_legacy_st(tmp_path)
    c = t["counts"].copy()
    c.loc["99x98"] = 1
    write_counts(tmp_path / "counts.tsv.gz", c)
    with caplog.at_level(logging.WARNING, logger="biomodal"):
        a = read_legacy_st(tmp_path / "counts.tsv.gz", tmp_path / "spots.tsv", tmp_path / "image.jpg")
    assert "99x98" not in a.obs_names and a.n_obs == len(t["spots"]) - 1
    assert "dropping 1 of" in caplog.text and "99x98" in caplog.text
    # none matching: the files are from different sections
    c.index = [f"{i + 50}x{i + 60}" for i in range(len(c))]
    write_counts(tmp_path / "counts.tsv.gz", c)
    with pytest.raises(DataError, match="same section"):
        read_legacy_st(tmp_path / "counts.tsv.gz", tmp_path / "spots.tsv", tmp_path / "image.jpg")


def test_spots_outside_image(tmp_path, caplog):
    t = make_legacy_st(tmp_path, n_x=6, n_y=5, px_per_step=100.0, offset=(0.0, 0.0))
    # crop the image so that the last column (x = 6 -> ~600 px) is outside
    write_image(tmp_path / "image.jpg", 560, 800)
    with caplog.at_level(logging.WARNING, logger="biomodal"):
        a = read_legacy_st(tmp_path / "counts.tsv.gz", tmp_path / "spots.tsv", tmp_path / "image.jpg")
    assert (a.obs["array_col"] < 6).all() and a.n_obs == len(t["spots"]) - 1 - 5
    assert "5 of 29 spot centres lie outside" in caplog.text
    write_image(tmp_path / "image.jpg", 150, 150)
    with pytest.raises(DataError, match="outside the image"):
        read_legacy_st(tmp_path / "counts.tsv.gz", tmp_path / "spots.tsv", tmp_path / "image.jpg")


def test_duplicated_genes_made_unique(tmp_path, caplog):
    t = make_legacy_st(tmp_path, n_genes=4)
    c = t["counts"].copy()
    c.columns = ["A", "B", "A", "A"]
    write_counts(tmp_path / "counts.tsv.gz", c)
    with caplog.at_level(logging.WARNING, logger="biomodal"):
        a = read_legacy_st(tmp_path / "counts.tsv.gz", tmp_path / "spots.tsv", tmp_path / "image.jpg")
    assert list(a.var_names) == ["A", "B", "A-1", "A-2"]
    assert "2 duplicated gene name(s)" in caplog.text
    np.testing.assert_array_equal(a[:, "A-2"].X.toarray().ravel(), c.iloc[1:, 3].to_numpy())


@pytest.mark.parametrize("bad", [-1, np.nan])
def test_negative_or_nan_counts(tmp_path, bad):
    t = make_legacy_st(tmp_path)
    c = t["counts"].astype(float)
    c.iloc[3, 2] = bad
    write_counts(tmp_path / "counts.tsv.gz", c)
    with pytest.raises(DataError, match=r"counts\.tsv\.gz.*(negative|NaN)"):
        read_legacy_st(tmp_path / "counts.tsv.gz", tmp_path / "spots.tsv", tmp_path / "image.jpg")


def test_empty_sections(tmp_path):
    t = make_legacy_st(tmp_path)
    t["spots"].assign(selected=0).to_csv(tmp_path / "spots.tsv", sep="\t", index=False)
    with pytest.raises(DataError, match="empty section"):
        read_legacy_st(tmp_path / "counts.tsv.gz", tmp_path / "spots.tsv", tmp_path / "image.jpg")
    write_counts(tmp_path / "counts.tsv.gz", t["counts"].iloc[:0])
    with pytest.raises(DataError, match="empty counts table"):
        read_legacy_st(tmp_path / "counts.tsv.gz", tmp_path / "spots.tsv", tmp_path / "image.jpg")


def test_duplicated_array_positions(tmp_path):
    t = make_legacy_st(tmp_path)
    sp = t["spots"].copy()
    sp.loc[2, ["x", "y"]] = sp.loc[3, ["x", "y"]].to_numpy()
    sp.to_csv(tmp_path / "spots.tsv", sep="\t", index=False)
    with pytest.raises(DataError, match="duplicated array positions"):
        read_legacy_st(tmp_path / "counts.tsv.gz", tmp_path / "spots.tsv", tmp_path / "image.jpg")


@pytest.mark.parametrize("which", ["counts.tsv.gz", "spots.tsv", "image.jpg"])
def test_missing_files_name_the_path(tmp_path, which):
    make_legacy_st(tmp_path)
    (tmp_path / which).unlink()
    with pytest.raises(ReaderError, match=which.replace(".", r"\.")) as exc:
        read_legacy_st(tmp_path / "counts.tsv.gz", tmp_path / "spots.tsv", tmp_path / "image.jpg")
    assert exc.value.path.endswith(which)


def test_spot_table_missing_columns(tmp_path):
    t = make_legacy_st(tmp_path)
    t["spots"].drop(columns=["pixel_y"]).to_csv(tmp_path / "spots.tsv", sep="\t", index=False)
    with pytest.raises(ReaderError, match="pixel_y"):
        read_legacy_st(tmp_path / "counts.tsv.gz", tmp_path / "spots.tsv", tmp_path / "image.jpg")


# ---------------------------------------------------------------- downscaled images (her2st patient A)


@pytest.mark.realdata
@pytest.mark.parametrize("name", ["A1", "A2"])
def test_her2st_patient_a_reads_its_scale_factors(shared_data, name):
    d = shared_data / "spatial" / "her2st" / name
    a = read_legacy_st(d / "counts.tsv.gz", d / "spots.tsv", d / "image.png")
    u = a.uns["spatial"]
    tab = pd.read_csv(d / "spots.tsv", sep="\t")
    scale = json.loads((d / "scalefactors.json").read_text())["image_scale"]
    assert u["image_scale"] == pytest.approx(scale) and u["image_scale_source"].endswith("scalefactors.json")
    # 200 um pitch over ~62.5 image px: ~3.2 um/px, four to five times patient C's ~0.69
    assert u["mpp"] == pytest.approx(_reference_mpp(tab) / scale, rel=0.02)
    assert 3.0 < u["mpp"] < 3.4
    key = tab.assign(name=tab["x"].astype(str) + "x" + tab["y"].astype(str)).set_index("name")
    np.testing.assert_allclose(a.obsm["spatial"], key.loc[a.obs_names, ["pixel_x", "pixel_y"]] * scale)
    assert 0 < a.obsm["spatial"][:, 0].max() < 2000  # inside the 2000-px-wide downscaled image
    c = read_legacy_st(*_her2st(shared_data, "C2"))
    assert c.uns["spatial"]["image_scale"] == 1.0 and c.uns["spatial"]["image_scale_source"] == "none"


def _textured(path, w, h, period_px):
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 127 + 100 * np.sin(2 * np.pi * xx / period_px)
    g = 127 + 100 * np.cos(2 * np.pi * yy / (1.7 * period_px))
    b = 127 + 60 * np.sin(2 * np.pi * (xx + yy) / (2.3 * period_px))
    Image.fromarray(np.stack([r, g, b], -1).clip(0, 255).astype(np.uint8)).save(path)


def test_downscaled_image_with_scale_factors_tiles_the_same_microns(tmp_path):
    from biomodal.data import SpotTileDataset

    full, small = tmp_path / "full", tmp_path / "small"
    t = make_legacy_st(full, n_x=5, n_y=4, px_per_step=200.0, offset=(100.0, 100.0))
    w, h = t["image_wh"]
    _textured(full / "image.png", w, h, period_px=160.0)
    small.mkdir()
    for f in ("counts.tsv.gz", "spots.tsv"):
        (small / f).write_bytes((full / f).read_bytes())
    Image.open(full / "image.png").resize((w // 4, h // 4), Image.BILINEAR).save(small / "image.png")
    # the image is 4x smaller than the one the spot table was made on, and nothing says so
    with pytest.raises(DataError, match="scale factor"):
        read_legacy_st(small / "counts.tsv.gz", small / "spots.tsv", small / "image.png")
    (small / "scalefactors.json").write_text(json.dumps({"image_scale": (w // 4) / w}))
    a_full = read_legacy_st(full / "counts.tsv.gz", full / "spots.tsv", full / "image.png")
    a_small = read_legacy_st(small / "counts.tsv.gz", small / "spots.tsv", small / "image.png")
    assert a_small.uns["spatial"]["mpp"] == pytest.approx(4 * a_full.uns["spatial"]["mpp"], rel=0.02)
    ds_full = SpotTileDataset([a_full], tile_um=200.0, mpp=4.0)
    ds_small = SpotTileDataset([a_small], tile_um=200.0, mpp=4.0)
    assert ds_full.tile_px == ds_small.tile_px == 50
    diff = [np.abs(ds_full.tile(i).astype(float) - ds_small.tile(i).astype(float)).mean() for i in range(5)]
    assert max(diff) < 8.0  # the same tissue at the same size (resampling blur only)
    user = read_legacy_st(
        small / "counts.tsv.gz", small / "spots.tsv", small / "image.png", scale_factor=0.25
    )
    assert user.uns["spatial"]["image_scale_source"] == "user"
    (small / "scalefactors.json").write_text(json.dumps({"tissue_hires_scalef": 0.25}))
    with pytest.raises(ReaderError, match="image_scale"):
        read_legacy_st(small / "counts.tsv.gz", small / "spots.tsv", small / "image.png")
