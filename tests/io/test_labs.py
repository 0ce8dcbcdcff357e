"""Labs/tabular reader and the train-only standardiser with missing-value indicators."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from biomodal.errors import ConfigError, DataError
from biomodal.io import LabTable, ptbxl_labs, read, read_labs, read_ptbxl_index
from biomodal.pp import LabStandardizer


def _table(tmp_path, text, name="labs.csv"):
    f = tmp_path / name
    f.write_text(text)
    return f


def test_read_numeric_table_with_missing_values(tmp_path):
    f = _table(tmp_path, "id,hb,k,flag\na,13.5,,True\nb,NA,4.1,False\nc,11.0,3.9,True\n")
    labs = read(f, reader="labs", id_column="id")
    assert isinstance(labs, LabTable) and labs.features == ("hb", "k", "flag")
    assert labs.ids.tolist() == ["a", "b", "c"] and labs.values.dtype == np.float32
    np.testing.assert_array_equal(labs.missing, [[False, True, False], [True, False, False], [False] * 3])
    np.testing.assert_allclose(labs.values[:, 2], [1, 0, 1])
    assert "hb 33%" in repr(labs) and labs.to_frame().loc["c", "k"] == pytest.approx(3.9)
    assert len(labs.subset([0, 2])) == 2


def test_tsv_and_column_selection(tmp_path):
    f = _table(tmp_path, "hb\tna\tnote\n13\t140\tok\n12\t\tok\n", name="l.tsv")
    labs = read_labs(f, columns=["na", "hb"])
    assert labs.features == ("na", "hb") and labs.ids.tolist() == [0, 1] and np.isnan(labs.values[1, 0])


def test_non_numeric_column_names_file_column_and_row(tmp_path):
    f = _table(tmp_path, "id,hb,crp\np1,13,5\np2,12,<0.5\np3,11,high\n")
    with pytest.raises(
        DataError, match=r"labs\.csv: column 'crp' is not numeric: row 'p2' holds '<0\.5' \(2 such"
    ):
        read_labs(f, id_column="id")
    f2 = _table(tmp_path, "id,sex,hb\n1,M,13\n2,F,\n3,X,12\n", name="s.csv")
    with pytest.raises(DataError, match=r"s\.csv: column 'sex' is not numeric: row 1 holds 'M'"):
        read_labs(f2, id_column="id")
    with pytest.raises(DataError, match=r"column 'sex' holds \['X'\] not in its categories"):
        read_labs(f2, id_column="id", categorical={"sex": {"M": 0, "F": 1}})
    ok = read_labs(f2, id_column="id", columns=["sex"], categorical={"sex": {"M": 0, "F": 1, "X": 2}})
    np.testing.assert_allclose(ok.values[:, 0], [0, 1, 2])
    with pytest.raises(DataError, match=r"no column\(s\) \['ldl'\]"):
        read_labs(f2, columns=["ldl"])


def test_standardiser_is_fitted_on_training_rows_only():
    rng = np.random.default_rng(0)
    X = rng.normal([10.0, 100.0], [2.0, 15.0], size=(200, 2))
    X[rng.random(X.shape) < 0.3] = np.nan
    train = np.arange(200) < 150
    X_outlier = X.copy()
    X_outlier[~train] = 1e6  # test rows must not move the statistics
    a = LabStandardizer().fit(X, rows=train, features=["hb", "ldl"])
    b = LabStandardizer().fit(X_outlier, rows=np.flatnonzero(train), features=["hb", "ldl"])
    np.testing.assert_allclose(a.mean_, b.mean_)
    np.testing.assert_allclose(a.mean_, np.nanmean(X[train], axis=0))
    np.testing.assert_allclose(a.std_, np.nanstd(X[train], axis=0, ddof=1))
    out = a.transform(X)
    assert out.shape == (200, 4) and out.dtype == np.float32
    assert a.feature_names_out_ == ["hb", "ldl", "hb_missing", "ldl_missing"]
    np.testing.assert_array_equal(out[:, 2:], np.isnan(X))
    assert np.all(out[:, :2][np.isnan(X)] == 0)
    np.testing.assert_allclose(
        np.nanmean(np.where(np.isnan(X[train]), np.nan, out[train, :2]), axis=0), 0, atol=1e-6
    )
    assert np.abs(LabStandardizer(clip=3.0).fit(X, rows=train).transform(X_outlier)).max() == pytest.approx(
        3.0
    )


def test_standardiser_state_round_trip_and_feature_matching():
    t = LabTable(np.array([[1.0, 5.0], [3.0, np.nan], [5.0, 7.0]]), ["a", "b"], np.arange(3))
    s = LabStandardizer().fit(t)
    again = LabStandardizer.from_state_dict(s.state_dict())
    np.testing.assert_array_equal(s.transform(t), again.transform(t))
    swapped = LabTable(t.values[:, ::-1], ["b", "a"], t.ids)
    np.testing.assert_array_equal(s.transform(swapped), s.transform(t))  # matched by name
    with pytest.raises(DataError, match=r"lacks the fitted feature\(s\) \['b'\]"):
        s.transform(LabTable(t.values[:, :1], ["a"], t.ids))
    with pytest.raises(ConfigError, match="not fitted"):
        LabStandardizer().transform(t)
    no_ind = LabStandardizer(indicators=False).fit(t).transform(t)
    assert no_ind.shape == (3, 2)


@pytest.mark.realdata
def test_ptbxl_age_sex_height_weight_with_real_missingness(shared_data):
    index = read_ptbxl_index(shared_data / "ecg" / "ptbxl")
    labs = ptbxl_labs(index)
    assert labs.features == ("age", "sex", "height", "weight") and len(labs) == 353
    assert labs.missing.sum(axis=0).tolist() == [4, 0, 227, 68]
    raw = pd.read_csv(shared_data / "ecg" / "ptbxl" / "ptbxl_database.csv", index_col="ecg_id")
    np.testing.assert_allclose(labs.values[:, 3], raw.loc[labs.ids, "weight"].to_numpy(), equal_nan=True)
    train = index["strat_fold"].isin(range(1, 7)).to_numpy()
    s = LabStandardizer().fit(labs, rows=train)
    np.testing.assert_allclose(s.mean_, np.nanmean(labs.values[train].astype(float), axis=0), rtol=1e-6)
    assert s.n_observed_.tolist() == (~labs.missing[train]).sum(axis=0).tolist()
    out = s.transform(labs.subset(~train))
    assert out.shape == ((~train).sum(), 8) and np.isfinite(out).all()
