"""PTB-XL index loader and preparer: the real subset and a small tree in the real layout."""

from __future__ import annotations

import ast
import json

import numpy as np
import pandas as pd
import pytest

from biomodal.datasets import prepare_ptbxl
from biomodal.errors import DataError, ReaderError
from biomodal.io import SUPERCLASSES, find_reader, read, read_ptbxl_index, read_wfdb, superclass_targets
from tests.io.ecg_helpers import make_ptbxl_tree


@pytest.fixture
def tree(tmp_path):
    return make_ptbxl_tree(tmp_path / "ptbxl")


def test_index_of_a_small_tree(tree):
    idx = read(tree)  # the folder is recognised as PTB-XL
    assert find_reader(tree) == "ptbxl" and idx.index.tolist() == [1, 2, 3, 4, 5, 6]
    assert idx.loc[2, "age"] == 90.0 and np.isnan(idx.loc[3, "age"])  # 300 = "over 89"; NaN stays NaN
    assert idx.loc[3, "diagnostic_superclass"] == ["HYP", "MI"] and idx.loc[4, "diagnostic_superclass"] == []
    assert idx.loc[3, "diagnostic_subclass"] == ["AMI", "LVH"]
    assert idx.loc[3, "scp_codes"] == {"LVH": 50.0, "AMI": 100.0}
    assert idx.loc[3, "statements"] == "anterior myocardial infarction; left ventricular hypertrophy"
    assert idx.loc[2, "report_clean"] == "qt-verlängerung" and idx.loc[5, "report_clean"] == "___"
    assert idx["strat_fold"].dtype.kind == "i" and idx["patient_id"].dtype.kind == "i"
    ecg = read_wfdb(idx.loc[1, "path"])
    assert ecg.fs == 100 and ecg.signal.shape == (12, 1000)
    hr = read_ptbxl_index(tree, sampling_rate=500)
    assert read_wfdb(hr.loc[1, "path"]).fs == 500
    np.testing.assert_array_equal(superclass_targets(idx)[2], [0, 1, 0, 0, 1])
    strict = read_ptbxl_index(tree, min_likelihood=60)
    assert strict.loc[3, "diagnostic_superclass"] == ["MI"]


def test_missing_records_and_bad_tables(tree):
    (tree / "records100" / "00000" / "00004_lr.dat").unlink()
    with pytest.raises(
        DataError, match=r"1 of 6 records listed in ptbxl_database\.csv have no records100 files"
    ):
        read_ptbxl_index(tree)
    assert 4 not in read_ptbxl_index(tree, missing="drop").index
    assert len(read_ptbxl_index(tree, sampling_rate=500)) == 6
    with pytest.raises(DataError, match="sampling_rate must be 100 or 500"):
        read_ptbxl_index(tree, sampling_rate=250)
    db = pd.read_csv(tree / "ptbxl_database.csv")
    db.loc[0, "scp_codes"] = "NORM 100"
    db.to_csv(tree / "ptbxl_database.csv", index=False)
    with pytest.raises(DataError, match="record 1: scp_codes 'NORM 100' is not a dict literal"):
        read_ptbxl_index(tree, missing="drop")
    with pytest.raises(ReaderError, match="not a PTB-XL folder"):
        read_ptbxl_index(tree / "records100")


def test_prepare_writes_index_and_summary(tree, tmp_path):
    out = tmp_path / "prepared"
    flat = prepare_ptbxl(tree, out, verify="full")
    written = pd.read_csv(out / "ptbxl_index.csv", index_col="ecg_id")
    assert written.index.tolist() == flat.index.tolist() == [1, 2, 3, 4, 5, 6]
    assert written.loc[3, "diagnostic_superclass"] == "HYP|MI" and written.loc[
        3, list(SUPERCLASSES)
    ].tolist() == [
        0,
        1,
        0,
        0,
        1,
    ]
    summary = json.loads((out / "ptbxl_summary.json").read_text())
    assert (
        summary["n_records"] == 6 and summary["n_patients"] == 4 and summary["shapes"] == {"12x1000@100": 6}
    )
    assert summary["missing_fraction"]["height"] == pytest.approx(0.5)
    assert summary["superclass_counts"] == {"NORM": 2, "MI": 2, "STTC": 0, "CD": 0, "HYP": 2}


def test_prepare_finds_broken_records_and_patient_leaks(tree, tmp_path):
    dat = tree / "records100" / "00000" / "00005_lr.dat"
    dat.write_bytes(dat.read_bytes()[:-100])
    with pytest.raises(
        DataError, match=r"1 PTB-XL record\(s\) fail verification; first ecg_id 5: .*truncated"
    ):
        prepare_ptbxl(tree, tmp_path / "o")
    kept = prepare_ptbxl(tree, tmp_path / "o", on_bad="drop")
    assert 5 not in kept.index and json.loads((tmp_path / "o" / "ptbxl_summary.json").read_text())[
        "dropped_bad"
    ] == [5]
    db = pd.read_csv(tree / "ptbxl_database.csv")
    db.loc[db.ecg_id == 3, "strat_fold"] = 9  # record 3 shares patient 101 with record 2
    db.to_csv(tree / "ptbxl_database.csv", index=False)
    with pytest.raises(DataError, match=r"patient.*several strat_folds.*first patient 101"):
        prepare_ptbxl(tree, tmp_path / "o", on_bad="drop")


@pytest.mark.realdata
def test_real_subset_index(shared_data):
    root = shared_data / "ecg" / "ptbxl"
    idx = read_ptbxl_index(root)
    assert len(idx) == 353 and idx["patient_id"].nunique() == 339
    assert sorted(idx["strat_fold"].unique()) == list(range(1, 9))
    # superclasses computed independently, as in PTB-XL's example code
    scp = pd.read_csv(root / "scp_statements.csv", index_col=0)
    scp = scp[scp.diagnostic == 1]
    raw = pd.read_csv(root / "ptbxl_database.csv", index_col="ecg_id")
    for ecg_id, codes in raw["scp_codes"].items():
        want = sorted({scp.loc[c, "diagnostic_class"] for c in ast.literal_eval(codes) if c in scp.index})
        assert idx.loc[ecg_id, "diagnostic_superclass"] == want
    assert superclass_targets(idx).sum(axis=0).tolist() == [225, 49, 59, 57, 25]
    assert idx.loc[1, "statements"].startswith("normal ECG")
    assert all(p.startswith(str(root)) for p in idx["path"])


@pytest.mark.realdata
def test_prepare_real_subset(shared_data, tmp_path):
    flat = prepare_ptbxl(shared_data / "ecg" / "ptbxl", tmp_path, sampling_rate=500)
    summary = json.loads((tmp_path / "ptbxl_summary.json").read_text())
    assert len(flat) == summary["n_records"] == summary["n_listed"] == 353
    assert summary["shapes"] == {"12x5000@500": 353}
    assert summary["records_per_fold"] == {
        "1": 58,
        "2": 51,
        "3": 34,
        "4": 42,
        "5": 47,
        "6": 33,
        "7": 44,
        "8": 44,
    }
    assert summary["missing_fraction"]["height"] == pytest.approx(227 / 353, abs=1e-4)
