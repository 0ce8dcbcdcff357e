"""biomodal.io.read and the reader registry: dispatch by suffix and content, errors, extension."""

from __future__ import annotations

import gzip
import subprocess
import sys

import numpy as np
import pytest

from biomodal.errors import ConfigError, DataError
from biomodal.io import (
    find_reader,
    get_reader,
    list_readers,
    read,
    read_h5ad,
    read_legacy_st,
    read_slide,
    read_visium,
    read_xenium,
    reader_info,
    register_reader,
    unregister_reader,
)
from biomodal.io.registry import ReaderRegistry
from tests.io.st_helpers import make_legacy_st, make_visium, make_xenium, write_image

TIFF_HEADER = b"II*\x00\x08\x00\x00\x00"


def assert_same_adata(a, b):
    """Same matrix, labels, coordinates and spatial metadata."""
    assert a.shape == b.shape
    np.testing.assert_array_equal(a.X.toarray(), b.X.toarray())
    assert list(a.obs_names) == list(b.obs_names) and list(a.var_names) == list(b.var_names)
    assert a.obs.equals(b.obs)
    np.testing.assert_array_equal(a.obsm["spatial"], b.obsm["spatial"])
    np.testing.assert_equal(dict(a.uns["spatial"]), dict(b.uns["spatial"]))


# --------------------------------------------------------------------------- the registry itself
def test_builtin_readers_and_info():
    clinical = [
        "ecg_dicom",
        "ecg_npz",
        "fmri",
        "labs",
        "openi_xml",
        "ptbxl",
        "report_text",
        "volume",
        "wfdb",
        "xray",
    ]
    assert list_readers() == sorted(["h5ad", "legacy_st", "slide", "visium", "xenium", *clinical])
    assert list_readers("slide") == ["slide"]
    assert list_readers("spatial") == ["h5ad", "legacy_st", "visium", "xenium"]
    info = reader_info("slide")
    assert {".svs", ".tif", ".ndpi", ".mrxs", ".png", ".jpeg"} <= set(info["suffixes"])
    assert info["kind"] == "slide" and info["description"] and "tiff" in info["content_check"].lower()
    assert reader_info("legacy_st")["suffixes"] == ()
    assert reader_info("visium")["folders"] and not reader_info("h5ad")["folders"]
    assert callable(get_reader("h5ad"))


def test_import_registers_without_heavy_backends(tmp_path):
    make_visium(tmp_path / "outs")
    code = (
        "import sys; from biomodal.io import registry as r; "
        f"assert r.find_reader({str(tmp_path / 'outs')!r}) == 'visium'; r.list_readers(); "
        "heavy = [m for m in ('torch', 'openslide', 'scanpy', 'anndata') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_misspelt_reader_name_suggests(tmp_path):
    f = tmp_path / "a.h5ad"
    f.write_bytes(b"")
    with pytest.raises(ConfigError, match=r"unknown reader 'visum'.*Did you mean 'visium'"):
        read(f, reader="visum")
    with pytest.raises(ConfigError, match=r"Did you mean 'slide'"):
        get_reader("slid")


def test_missing_path_is_named(tmp_path):
    missing = tmp_path / "nope.svs"
    with pytest.raises(DataError, match=r"nope\.svs: no such file"):
        read(missing)
    with pytest.raises(DataError, match=r"nope\.svs"):
        read(missing, reader="slide")
    with pytest.raises(DataError, match=r"nope\.svs"):
        find_reader(missing)


def test_unclaimed_suffix_lists_readers(tmp_path):
    f = tmp_path / "notes.xyz"
    f.write_text("hello")
    with pytest.raises(DataError) as err:
        read(f)
    msg = str(err.value)
    assert "notes.xyz" in msg and "'.xyz'" in msg
    assert "slide (.svs" in msg and "h5ad (.h5ad)" in msg and "legacy_st (by name only)" in msg
    g = tmp_path / "table.tsv.gz"
    g.write_bytes(gzip.compress(b"a\tb\n"))
    with pytest.raises(DataError, match=r"suffix '\.tsv\.gz'"):
        find_reader(g)


def test_unknown_option_is_a_config_error(tmp_path):
    make_visium(tmp_path / "outs")
    with pytest.raises(ConfigError, match=r"reader 'visium' does not accept \['mmp'\].*'mpp'"):
        read(tmp_path / "outs", mmp=1.0)


# --------------------------------------------------------------------------- dispatch
def test_suffix_dispatch_case_insensitive(tmp_path):
    (tmp_path / "A.SVS").write_bytes(TIFF_HEADER)
    write_image(tmp_path / "b.png", 8, 8)
    write_image(tmp_path / "c.jpg", 8, 8)
    (tmp_path / "d.h5ad").write_bytes(b"")
    assert [find_reader(tmp_path / n) for n in ("A.SVS", "b.png", "c.jpg", "d.h5ad")] == [
        "slide",
        "slide",
        "slide",
        "h5ad",
    ]


def test_content_check_on_ambiguous_suffixes(tmp_path):
    # .tif: a slide only when it starts with a TIFF header
    (tmp_path / "fake.tif").write_text("not an image")
    with pytest.raises(DataError, match=r"fake.tif.*declined by: slide \(accept a TIFF"):
        find_reader(tmp_path / "fake.tif")
    # .h5: Visium matrix, Xenium matrix, or neither
    make_visium(tmp_path / "vis")
    make_xenium(tmp_path / "xen")
    assert find_reader(tmp_path / "vis" / "filtered_feature_bc_matrix.h5") == "visium"
    assert find_reader(tmp_path / "xen" / "cell_feature_matrix.h5") == "xenium"
    assert find_reader(tmp_path / "xen" / "experiment.xenium") == "xenium"
    (tmp_path / "other.h5").write_bytes(b"\x89HDF\r\n\x1a\n")
    with pytest.raises(DataError, match=r"other.h5.*'\.h5'.*declined by: visium .*xenium"):
        find_reader(tmp_path / "other.h5")


def test_directories_by_content(tmp_path):
    make_visium(tmp_path / "vis")
    make_xenium(tmp_path / "xen")
    assert find_reader(tmp_path / "vis") == "visium" and find_reader(tmp_path / "xen") == "xenium"
    assert_same_adata(read(tmp_path / "vis", image="lowres"), read_visium(tmp_path / "vis", image="lowres"))
    assert_same_adata(read(tmp_path / "vis" / "filtered_feature_bc_matrix.h5"), read_visium(tmp_path / "vis"))
    assert_same_adata(
        read(tmp_path / "xen", pseudo_spot_um=50), read_xenium(tmp_path / "xen", pseudo_spot_um=50)
    )
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: no reader recognises this folder.*visium \(accept"):
        read(tmp_path / "empty")
    with pytest.raises(ConfigError, match="contradicts"):
        read(tmp_path / "vis" / "filtered_feature_bc_matrix.h5", count_file="raw_feature_bc_matrix.h5")


def test_legacy_st_by_name_only(tmp_path):
    make_legacy_st(tmp_path)
    counts, spots, image = tmp_path / "counts.tsv.gz", tmp_path / "spots.tsv", tmp_path / "image.jpg"
    with pytest.raises(DataError, match=r"legacy_st \(by name only\)"):
        read(counts)
    a = read(counts, reader="legacy_st", spots=spots, image=image, mpp=0.7, sample="s")
    assert_same_adata(a, read_legacy_st(counts, spots, image, mpp=0.7, sample="s"))
    with pytest.raises(ConfigError, match=r"pass spots=.*and image="):
        read(counts, reader="legacy_st", spots=spots)
    with pytest.raises(ConfigError, match=r"does not accept \['slide'\]"):
        read(counts, reader="legacy_st", spots=spots, image=image, slide=image)


# --------------------------------------------------------------------------- extension
@pytest.fixture
def toy_reader():
    """A reader registered in the shared registry for one test, removed afterwards."""

    def _is_toy(path):
        """Accept files starting with TOY."""
        return path.read_bytes().startswith(b"TOY")

    @register_reader("toy", suffixes=(".nii.gz", ".toy"), kind="volume", claims=_is_toy, description="toy")
    def read_toy(path, *, scale=1):
        return path.read_bytes()[3:] * scale

    yield read_toy
    unregister_reader("toy")
    assert "toy" not in list_readers()


def test_registered_reader_is_found_and_removed(toy_reader, tmp_path):
    f = tmp_path / "brain.nii.gz"
    f.write_bytes(b"TOYab")
    assert "toy" in list_readers("volume") and get_reader("toy") is toy_reader
    assert find_reader(f) == "toy" and read(f, scale=2) == b"abab"
    with pytest.raises(ValueError, match="already registered"):
        register_reader("toy", suffixes=(".toy",))(toy_reader)
    with pytest.raises(
        ConfigError, match=r"reader 'toy' does not accept \['scal'\]; allowed options: \['scale'\]"
    ):
        read(f, scal=2)


def test_longest_suffix_then_priority_then_order(tmp_path):
    reg = ReaderRegistry()
    reg.register_reader("gz", suffixes=(".gz",))(lambda p: "gz")
    reg.register_reader("nifti", suffixes=(".nii.gz", ".nii"))(lambda p: "nifti")
    reg.register_reader("first", suffixes=(".vol",))(lambda p: "first")
    reg.register_reader("urgent", suffixes=(".vol",), priority=5)(lambda p: "urgent")
    reg.register_reader("late", suffixes=(".vol",))(lambda p: "late")
    for name in ("a.nii.gz", "b.gz", "c.vol", ".gz"):
        (tmp_path / name).write_bytes(b"x")
    assert reg.read(tmp_path / "a.nii.gz") == "nifti" and reg.read(tmp_path / "b.gz") == "gz"
    assert reg.find(tmp_path / "c.vol") == "urgent"
    reg.unregister("urgent")
    assert reg.find(tmp_path / "c.vol") == "first"
    with pytest.raises(DataError):  # a bare ".gz" file name has no suffix
        reg.find(tmp_path / ".gz")
    assert reg.names() == ["first", "gz", "late", "nifti"] and "toy" not in list_readers()
    with pytest.raises(ConfigError, match="Did you mean 'nifti'"):
        reg.unregister("nifty")


def test_registration_is_validated():
    reg = ReaderRegistry()
    with pytest.raises(ValueError, match=r"must start with '\.'"):
        reg.register_reader("bad", suffixes=("svs",))
    with pytest.raises(ValueError, match="folders=True needs a claims"):
        reg.register_reader("dirs", folders=True)


def test_fallthrough_to_shorter_suffix_and_claims_errors(tmp_path):
    reg = ReaderRegistry()

    def _broken(path):
        """Raise on every file."""
        raise OSError("cannot read")

    reg.register_reader("picky", suffixes=(".ome.tif",), claims=_broken)(lambda p: "picky")
    reg.register_reader("tif", suffixes=(".tif",))(lambda p: "tif")
    f = tmp_path / "x.ome.tif"
    f.write_bytes(b"x")
    assert reg.find(f) == "tif"  # the longer suffix declined (its check raised), the shorter one reads
    reg.register_reader("path_only", must_exist=False)(lambda p: f"record {p}")
    assert reg.read(tmp_path / "100", reader="path_only") == f"record {tmp_path / '100'}"


# --------------------------------------------------------------------------- real files
@pytest.mark.realdata
def test_real_svs_slide(shared_data):
    path = shared_data / "wsi" / "CMU-1-Small-Region.svs"
    assert find_reader(path) == "slide"
    with read(path) as a, read_slide(path) as b:
        assert (a.dimensions, a.mpp, a.backend) == (b.dimensions, b.mpp, b.backend)
        np.testing.assert_array_equal(
            a.read_region((500, 700), (64, 48), mpp=1.0), b.read_region((500, 700), (64, 48), mpp=1.0)
        )
    tcga = shared_data / "wsi" / "TCGA-CR-7395-01A-01-TS1.svs"
    with read(tcga, mpp=0.25) as s:
        assert s.mpp == 0.25 and s.mpp_source == "user"


@pytest.mark.realdata
def test_real_visium_folder(shared_data):
    folder = shared_data / "spatial" / "visium_spaceranger_1.0.0"
    assert find_reader(folder) == "visium"
    assert_same_adata(read(folder, image="lowres"), read_visium(folder, image="lowres"))
    matrix = folder / "filtered_feature_bc_matrix.h5"
    assert_same_adata(read(matrix, image="lowres"), read_visium(folder, image="lowres"))


@pytest.mark.realdata
def test_real_h5ad(shared_data):
    d = shared_data / "spatial" / "squidpy_mouse_brain"
    assert find_reader(d / "test_data.h5ad") == "h5ad" and find_reader(d / "test_img.jpg") == "slide"
    a = read(d / "test_data.h5ad", slide=d / "test_img.jpg")
    assert_same_adata(a, read_h5ad(d / "test_data.h5ad", slide=d / "test_img.jpg"))


@pytest.mark.realdata
def test_real_her2st_by_name(shared_data):
    d = shared_data / "spatial" / "her2st" / "C2"
    kw = {"spots": d / "spots.tsv", "image": d / "image.jpg"}
    a = read(d / "counts.tsv.gz", reader="legacy_st", **kw)
    assert_same_adata(a, read_legacy_st(d / "counts.tsv.gz", kw["spots"], kw["image"]))
