"""MIMIC-IV-ECG preparer on a small tree in the real layout (the data themselves are credentialed)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from biomodal.datasets import prepare_mimic_iv_ecg, read_mimic_iv_ecg_index
from biomodal.datasets.mimic_iv_ecg import subject_fold
from biomodal.errors import DataError, ReaderError
from biomodal.io import STANDARD_LEADS, read
from tests.io.ecg_helpers import make_mimic_tree


@pytest.fixture
def tree(tmp_path):
    return make_mimic_tree(tmp_path / "mimic-iv-ecg")


def test_index_paths_reports_measurements_and_notes(tree):
    idx = read_mimic_iv_ecg_index(tree)
    assert idx.index.tolist() == [40689238, 40689239, 40689240, 40689241]
    assert idx.loc[40689238, "subject_id"] == 10000032 and idx["ecg_time"].dtype.kind == "M"
    assert (
        idx.loc[40689240, "report"]
        == "Sinus rhythm. Possible anterior infarct - age undetermined. Abnormal ECG"
    )
    assert (
        np.isnan(idx.loc[40689239, "p_onset"]) and idx.loc[40689238, "p_onset"] == 40
    )  # 29999 = not measured
    assert idx.loc[40689238, "note_id"] == "n0" and pd.isna(idx.loc[40689239, "note_id"])
    ecg = read(f"{idx.loc[40689238, 'path']}.hea")
    assert ecg.fs == 500 and ecg.signal.shape == (12, 5000)
    assert set(ecg.leads) == set(STANDARD_LEADS) and ecg.leads[4] == "aVF"  # MIMIC stores aVF before aVL


def test_folds_are_by_patient_and_stable(tree):
    idx = read_mimic_iv_ecg_index(tree)
    assert (idx.groupby("subject_id")["fold"].nunique() == 1).all()
    per_subject = idx.groupby("subject_id")["fold"].first()
    np.testing.assert_array_equal(subject_fold(per_subject.index.to_numpy()), per_subject.to_numpy())
    assert subject_fold(np.array([10000032, 10000040, 10000050])).tolist() == [0, 5, 8]  # fixed forever
    many = subject_fold(np.arange(10000000, 10020000))
    assert np.bincount(many, minlength=10).min() > 1800  # about a tenth each


def test_prepare_writes_index_and_summary(tree, tmp_path):
    out = tmp_path / "out"
    idx = prepare_mimic_iv_ecg(tree, out, verify="full")
    written = pd.read_csv(out / "mimic_iv_ecg_index.csv")
    assert written["study_id"].tolist() == idx.index.tolist()
    summary = json.loads((out / "mimic_iv_ecg_summary.json").read_text())
    assert summary["n_records"] == 4 and summary["n_subjects"] == 2 and summary["with_note"] == 2
    assert summary["shapes"] == {"12x5000@500": 4} and summary["missing_fraction"]["p_onset"] == 0.25


def test_missing_and_broken_records(tree, tmp_path):
    rec = tree / "files" / "p1000" / "p10000033" / "s40689241" / "40689241.dat"
    rec.write_bytes(rec.read_bytes()[:1000])
    with pytest.raises(DataError, match=r"first study 40689241: .*40689241\.dat: truncated"):
        prepare_mimic_iv_ecg(tree, tmp_path / "o")
    assert len(prepare_mimic_iv_ecg(tree, tmp_path / "o", on_bad="drop")) == 3
    rec.unlink()
    with pytest.raises(DataError, match=r"1 of 4 records in record_list\.csv have no files"):
        read_mimic_iv_ecg_index(tree)
    assert len(read_mimic_iv_ecg_index(tree, missing="drop")) == 3
    (tree / "record_list.csv").unlink()
    with pytest.raises(ReaderError, match=r"record_list\.csv: not found"):
        read_mimic_iv_ecg_index(tree)
