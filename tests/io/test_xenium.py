"""read_xenium on generated Xenium-format folders (there is no real Xenium sample here)."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest

from biomodal.errors import DataError, ReaderError
from biomodal.io import read_xenium
from tests.io.st_helpers import make_xenium


def test_cells(tmp_path, caplog):
    t = make_xenium(tmp_path / "run1")
    with caplog.at_level(logging.INFO, logger="biomodal"):
        a = read_xenium(tmp_path / "run1")
    assert a.shape == (300, 12)
    assert list(a.var_names) == t["genes"] and list(a.obs_names) == t["cell_ids"]
    assert "dropping 2 control/codeword features" in caplog.text
    np.testing.assert_array_equal(a.X.toarray(), t["counts"][:, :12])
    np.testing.assert_allclose(a.obsm["spatial"], t["xy_um"] / 0.2125)
    u = a.uns["spatial"]
    assert (u["mpp"], u["mpp_source"], u["technology"], u["unit"]) == (0.2125, "metadata", "xenium", "cell")
    assert u["slide_path"].endswith("morphology_focus.ome.tif")
    assert math.isnan(u["spot_pitch_um"]) and 9 < u["spot_diameter_um"] < 13  # areas 50..150 um^2
    assert "cell_area" in a.obs and set(a.obs["sample"]) == {"run1"}


def _naive_pool(counts, xy, size):
    bins: dict[tuple[int, int], np.ndarray] = {}
    n: dict[tuple[int, int], int] = {}
    for c in range(len(xy)):
        key = (math.floor(xy[c, 0] / size), math.floor(xy[c, 1] / size))
        bins[key] = bins.get(key, 0) + counts[c]
        n[key] = n.get(key, 0) + 1
    return bins, n


@pytest.mark.parametrize("size", [25.0, 55.0, 300.0])
def test_pseudo_spots_match_naive_loop(tmp_path, size):
    t = make_xenium(tmp_path, n_cells=400, seed=3)
    a = read_xenium(tmp_path, pseudo_spot_um=size, sample="x", donor="d")
    bins, n = _naive_pool(t["counts"][:, :12], t["xy_um"], size)
    assert a.n_obs == len(bins)
    for i, name in enumerate(a.obs_names):
        bx, by = (int(v) for v in name.split("x"))
        np.testing.assert_array_equal(a.X[i].toarray().ravel(), bins[(bx, by)])
        assert a.obs["n_cells"].iloc[i] == n[(bx, by)]
        assert (a.obs["array_col"].iloc[i], a.obs["array_row"].iloc[i]) == (bx, by)
        np.testing.assert_allclose(
            a.obsm["spatial"][i], [(bx + 0.5) * size / 0.2125, (by + 0.5) * size / 0.2125]
        )
    assert a.obs["n_cells"].sum() == 400
    u = a.uns["spatial"]
    assert (u["spot_diameter_um"], u["spot_pitch_um"], u["unit"]) == (size, size, "bin")
    assert set(a.obs["donor"]) == {"d"}


def test_default_pixel_size_without_experiment_file(tmp_path, caplog):
    make_xenium(tmp_path, pixel_size=None)
    with caplog.at_level(logging.WARNING, logger="biomodal"):
        a = read_xenium(tmp_path)
    assert a.uns["spatial"]["mpp"] == 0.2125 and a.uns["spatial"]["mpp_source"] == "estimated"
    assert "assuming the Xenium default" in caplog.text
    b = read_xenium(tmp_path, mpp=0.5)
    np.testing.assert_allclose(b.obsm["spatial"] * 0.5, a.obsm["spatial"] * 0.2125)


def test_metadata_pixel_size_used(tmp_path):
    t = make_xenium(tmp_path, pixel_size=0.5)
    a = read_xenium(tmp_path)
    np.testing.assert_allclose(a.obsm["spatial"], t["xy_um"] / 0.5)


@pytest.mark.parametrize("missing", ["cell_feature_matrix.h5", "cells.csv.gz", "morphology_focus.ome.tif"])
def test_missing_files(tmp_path, missing):
    make_xenium(tmp_path)
    (tmp_path / missing).unlink()
    with pytest.raises(ReaderError) as exc:
        read_xenium(tmp_path)
    assert (missing.split(".")[0] in str(exc.value)) or ("morphology" in str(exc.value))


def test_bad_arguments(tmp_path):
    make_xenium(tmp_path)
    with pytest.raises(DataError, match="pseudo_spot_um"):
        read_xenium(tmp_path, pseudo_spot_um=0)
    with pytest.raises(ReaderError, match="folder"):
        read_xenium(tmp_path / "nothing_here")


def test_bigtiff_morphology_image_and_h5ad_round_trip(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    from biomodal.io import read_h5ad

    t = make_xenium(tmp_path / "run")
    img = tmp_path / "run" / "morphology_focus.ome.tif"
    img.unlink()
    side = int(np.ceil(200 / 0.2125)) + 2
    # BigTIFF OME, as Xenium writes its morphology images
    tifffile.imwrite(
        img, np.zeros((2, side, side + 7), np.uint16), bigtiff=True, ome=True, metadata={"axes": "CYX"}
    )
    a = read_xenium(tmp_path / "run", pseudo_spot_um=40.0)
    assert a.obs["n_cells"].sum() == len(t["cell_ids"])
    a.write_h5ad(tmp_path / "x.h5ad")
    b = read_h5ad(tmp_path / "x.h5ad")
    assert b.uns["spatial"]["technology"] == "xenium" and b.uns["spatial"]["mpp"] == 0.2125
    np.testing.assert_array_equal(b.obsm["spatial"], a.obsm["spatial"])
    c = read_xenium(tmp_path / "run")  # cells: NaN pitch survives the h5ad round trip
    c.write_h5ad(tmp_path / "c.h5ad")
    assert math.isnan(read_h5ad(tmp_path / "c.h5ad").uns["spatial"]["spot_pitch_um"])


def test_image_size_falls_back_to_tifffile(tmp_path, monkeypatch):
    tifffile = pytest.importorskip("tifffile")
    from PIL import Image

    from biomodal.errors import ReaderError as RE
    from biomodal.io._spatial_common import image_size

    p = tmp_path / "m.ome.tif"
    tifffile.imwrite(p, np.zeros((3, 40, 64), np.uint16), bigtiff=True, ome=True, metadata={"axes": "CYX"})

    def _refuse(*args, **kwargs):
        raise OSError("PIL cannot read this")

    monkeypatch.setattr(Image, "open", _refuse)
    assert image_size(p) == (64, 40)
    (tmp_path / "junk.tif").write_bytes(b"junk")
    with pytest.raises(RE, match=r"junk\.tif"):
        image_size(tmp_path / "junk.tif")
