"""Chest X-ray preparers: MIMIC-CXR-JPG and CheXpert on small trees in the real layouts, IU X-ray on
the real OpenI reports of ../shared (the images of all three are the users' own)."""

from __future__ import annotations

import gzip
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from biomodal.datasets import prepare_chexpert, prepare_iu_xray, prepare_mimic_cxr, read_cxr_index
from biomodal.datasets._cxr_labels import hash_split, mesh_conditions
from biomodal.datasets.chest_xray import (
    CHEXPERT_COLUMNS,
    CHEXPERT_LABELS,
    IU_CONDITIONS,
    IU_REPORT_COLUMNS,
    MIMIC_CXR_COLUMNS,
    split_mimic_report,
)
from biomodal.datasets.mimic_iv_ecg import subject_fold
from biomodal.errors import DataError, ReaderError
from biomodal.io import read_openi_xml, read_xray

# --------------------------------------------------------------------------- helpers

REPORT_SECTIONS = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___F with new onset ascites  // eval for infection

 TECHNIQUE:  Chest PA and lateral

 COMPARISON:  None.

 FINDINGS:

 There is no focal consolidation, pleural effusion or pneumothorax.  Bilateral
 nodular opacities that most likely represent nipple shadows. The
 cardiomediastinal silhouette is normal.

 IMPRESSION:

 No acute cardiopulmonary process.
"""
REPORT_COMBINED = """                                 FINAL REPORT
 HISTORY:  Shortness of breath.

 FINDINGS AND IMPRESSION:  The heart is enlarged.  Mild pulmonary edema.
"""
REPORT_NO_SECTIONS = """                                 FINAL REPORT
 PORTABLE CHEST OF ___

 COMPARISON:  ___ radiograph.

 Heart size is normal. Lungs are clear.

 Right PICC ends in the SVC; no pneumothorax.
"""

# subject, study, dicom, view, official split
IMAGES = [
    (10000032, 50414267, "02aa804e-bde0afdd-112c0b34-7bc16630-4e384014", "PA", "train"),
    (10000032, 50414267, "174413ec-4ec4c1f7-34ea26b7-c5f994f8-79ef1962", "LATERAL", "train"),
    (10000032, 53189527, "2a2277a9-b0ded155-c0de8eb9-c124d10e-82c5caab", "AP", "train"),
    (10000764, 57375967, "096052b7-d256dc40-453a102b-fa7d01c6-1b22c6b4", "PA", "validate"),
    (11000011, 51111111, "3f4e0a66-00000000-00000000-00000000-00000001", "", "test"),
]
LABEL_ROWS = [  # study -> {label: value}; other labels blank; 51111111 is not labelled
    (10000032, 50414267, {"No Finding": 1.0}),
    (10000032, 53189527, {"Cardiomegaly": 1.0, "Edema": -1.0, "Pleural Effusion": 0.0}),
    (10000764, 57375967, {"Atelectasis": -1.0, "Support Devices": 1.0}),
]


def _jpeg(path: Path, seed: int = 0) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 255, (32, 28), dtype=np.uint8)
    Image.fromarray(arr).save(path, "JPEG")


def _csv(df: pd.DataFrame, path: Path) -> None:
    if path.suffix == ".gz":
        with gzip.open(path, "wt", newline="") as fh:
            df.to_csv(fh, index=False)
    else:
        df.to_csv(path, index=False)


def make_mimic_cxr_tree(root: Path, *, with_reports: bool = True) -> Path:
    """MIMIC-CXR-JPG in its real layout: files/pXX/pSUBJECT/sSTUDY/DICOM.jpg, the three tables."""
    root.mkdir(parents=True)
    meta = pd.DataFrame(
        [
            {
                "dicom_id": d,
                "subject_id": s,
                "study_id": t,
                "PerformedProcedureStepDescription": "CHEST (PA AND LAT)",
                "ViewPosition": v or np.nan,
                "Rows": 32,
                "Columns": 28,
                "StudyDate": 21800506,
                "StudyTime": 213014.531,
            }
            for s, t, d, v, _ in IMAGES
        ]
    )
    _csv(meta, root / "mimic-cxr-2.0.0-metadata.csv.gz")
    labels = pd.DataFrame(
        [{"subject_id": s, "study_id": t, **{c: vals.get(c, np.nan) for c in CHEXPERT_LABELS}}
         for s, t, vals in LABEL_ROWS]
    )  # fmt: skip
    labels = labels[["subject_id", "study_id", *sorted(CHEXPERT_LABELS)]]  # MIMIC's order is alphabetical
    _csv(labels, root / "mimic-cxr-2.0.0-chexpert.csv")
    split = pd.DataFrame([{"dicom_id": d, "study_id": t, "subject_id": s, "split": sp}
                          for s, t, d, _, sp in IMAGES])  # fmt: skip
    _csv(split, root / "mimic-cxr-2.0.0-split.csv.gz")
    for i, (s, t, d, _, _) in enumerate(IMAGES[:-1]):  # the last image is not downloaded
        _jpeg(root / "files" / f"p{str(s)[:2]}" / f"p{s}" / f"s{t}" / f"{d}.jpg", seed=i)
    if with_reports:
        write_reports(root / "files")
    return root


def write_reports(files: Path) -> None:
    for s, t, text in [
        (10000032, 50414267, REPORT_SECTIONS),
        (10000032, 53189527, REPORT_COMBINED),
        (11000011, 51111111, REPORT_NO_SECTIONS),
    ]:  # study 57375967 has no report
        p = files / f"p{str(s)[:2]}" / f"p{s}" / f"s{t}.txt"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


@pytest.fixture
def mimic(tmp_path):
    return make_mimic_cxr_tree(tmp_path / "mimic-cxr-jpg")


def _row(df: pd.DataFrame, dicom_prefix: str) -> pd.Series:
    return df[df["dicom_id"].str.startswith(dicom_prefix)].iloc[0]


# --------------------------------------------------------------------------- MIMIC-CXR


def test_mimic_rows_paths_labels_and_flags(mimic):
    df = prepare_mimic_cxr(mimic)
    assert tuple(df.columns) == MIMIC_CXR_COLUMNS and len(df) == 5
    assert df["subject_id"].tolist() == [10000032, 10000032, 10000032, 10000764, 11000011]
    pa = _row(df, "02aa804e")
    assert pa["path"] == "files/p10/p10000032/s50414267/02aa804e-bde0afdd-112c0b34-7bc16630-4e384014.jpg"
    xr = read_xray(mimic / pa["path"])
    assert xr.shape == (32, 28) == (pa["height"], pa["width"]) and 0 <= xr.image.min() <= xr.image.max() <= 1
    assert pa["view"] == "PA" and _row(df, "3f4e0a66")["view"] == ""
    assert pa["No Finding"] == 1.0 and np.isnan(pa["Cardiomegaly"])  # blank = not mentioned
    ap = _row(df, "2a2277a9")
    assert (ap["Cardiomegaly"], ap["Edema"], ap["Pleural Effusion"]) == (1.0, -1.0, 0.0)  # -1 kept
    last = _row(df, "3f4e0a66")
    assert not last["labelled"] and df["labelled"].sum() == 4 and last[list(CHEXPERT_LABELS)].isna().all()
    assert df["image_missing"].tolist() == [False, False, False, False, True]
    assert df["report_missing"].tolist() == [False, False, False, True, False]


def test_mimic_report_text(mimic):
    df = prepare_mimic_cxr(mimic)
    pa = _row(df, "02aa804e")
    assert pa["findings"].startswith("There is no focal consolidation, pleural effusion or pneumothorax. Bi")
    assert pa["findings"].endswith("silhouette is normal.") and "\n" not in pa["findings"]
    assert pa["impression"] == "No acute cardiopulmonary process." and pa["text_source"] == "sections"
    assert _row(df, "174413ec")["findings"] == pa["findings"]  # the study's report on each of its images
    ap = _row(df, "2a2277a9")  # FINDINGS AND IMPRESSION counts as findings
    assert ap["findings"] == "The heart is enlarged. Mild pulmonary edema." and ap["impression"] == ""
    last = _row(df, "3f4e0a66")  # no section: the last paragraph is the impression
    assert last["impression"] == "Right PICC ends in the SVC; no pneumothorax."
    assert last["text_source"] == "last_paragraph" and last["findings"] == ""
    none = _row(df, "096052b7")
    assert (none["findings"], none["impression"], none["text_source"]) == ("", "", "none")
    assert prepare_mimic_cxr(mimic, last_paragraph=False).loc[4, "text_source"] == "none"


def test_split_mimic_report_placeholders():
    out = split_mimic_report("INDICATION: ___ with cough.\nFINDINGS: Compared to ___ , no change.\n")
    assert out == {"findings": "Compared to ___ , no change.", "impression": "", "text_source": "sections"}


@pytest.mark.parametrize(
    ("uncertain", "blank", "edema", "cardio_of_first"),
    [("keep", "keep", -1.0, np.nan), ("ones", "keep", 1.0, np.nan), ("zeros", "zeros", 0.0, 0.0),
     ("ignore", "zeros", np.nan, 0.0), ("ones", "zeros", 1.0, 0.0)],
)  # fmt: skip
def test_mimic_uncertain_and_blank_policies(mimic, uncertain, blank, edema, cardio_of_first):
    df = prepare_mimic_cxr(mimic, uncertain=uncertain, blank=blank)
    np.testing.assert_equal(_row(df, "2a2277a9")["Edema"], edema)
    np.testing.assert_equal(_row(df, "02aa804e")["Cardiomegaly"], cardio_of_first)
    assert _row(df, "2a2277a9")["Pleural Effusion"] == 0.0 and _row(df, "2a2277a9")["Cardiomegaly"] == 1.0
    assert np.isnan(_row(df, "3f4e0a66")["Edema"])  # an unlabelled study stays NaN whatever the policy
    with pytest.raises(DataError, match=r"uncertain must be one of \['keep', 'ones', 'zeros', 'ignore'\]"):
        prepare_mimic_cxr(mimic, uncertain="u-ones")


def test_mimic_views_filter(mimic):
    df = prepare_mimic_cxr(mimic, views=("PA", "AP"))
    assert sorted(df["view"]) == ["AP", "PA", "PA"] and len(prepare_mimic_cxr(mimic, views="lateral")) == 1


def test_mimic_official_and_hash_splits_by_patient(mimic):
    official = prepare_mimic_cxr(mimic)
    assert official.groupby("subject_id")["split"].first().to_dict() == {
        10000032: "train",
        10000764: "validate",
        11000011: "test",
    }
    np.testing.assert_array_equal(official["fold"], subject_fold(official["subject_id"]))
    hashed = prepare_mimic_cxr(mimic, split="patient_hash", n_folds=5)
    assert (hashed.groupby("subject_id")["split"].nunique() == 1).all()
    fold, split = hash_split(hashed["subject_id"], 5)
    np.testing.assert_array_equal(hashed["fold"], fold)
    assert hashed["split"].tolist() == split.tolist()
    (mimic / "mimic-cxr-2.0.0-split.csv.gz").unlink()  # the hash split does not need the split table
    pd.testing.assert_frame_equal(prepare_mimic_cxr(mimic, split="patient_hash", n_folds=5), hashed)
    with pytest.raises(ReaderError, match=r"mimic-cxr-2\.0\.0-split\.csv\.gz: not found .*patient_hash"):
        prepare_mimic_cxr(mimic)


def test_hash_split_is_fixed_and_balanced():
    fold, split = hash_split(np.array([10000032, 10000040, 10000050]))
    assert fold.tolist() == [0, 5, 8] and split.tolist() == ["test", "train", "train"]  # fixed forever
    _, many = hash_split(np.arange(10000000, 10020000))
    share = pd.Series(many).value_counts(normalize=True)
    assert 0.09 < share["test"] < 0.11 and 0.09 < share["validate"] < 0.11
    with pytest.raises(DataError, match="n_folds must be >= 3"):
        hash_split([1, 2], 2)


def test_mimic_patient_in_two_official_splits_raises(mimic):
    path = mimic / "mimic-cxr-2.0.0-split.csv.gz"
    sp = pd.read_csv(path)
    sp.loc[sp["study_id"] == 53189527, "split"] = "test"
    _csv(sp, path)
    with pytest.raises(DataError, match=r"split\.csv\.gz: 1 patient\(s\) are in more than one split "
                       r"\(first: subject_id 10000032 in \['test', 'train'\]\)"):  # fmt: skip
        prepare_mimic_cxr(mimic)
    sp = sp[sp["study_id"] != 51111111]
    _csv(sp, path)
    with pytest.raises(
        DataError, match=r"1 image\(s\) of the metadata have no split \(first dicom_id 3f4e0a66"
    ):
        prepare_mimic_cxr(mimic)


def test_mimic_bad_inputs(mimic, tmp_path):
    with pytest.raises(ReaderError, match=r"no-such-folder: no such folder; expected a MIMIC-CXR-JPG folder"):
        prepare_mimic_cxr(tmp_path / "no-such-folder")
    with pytest.raises(
        DataError, match=r"1 of 5 images listed in mimic-cxr-2\.0\.0-metadata\.csv\.gz are not"
    ):
        prepare_mimic_cxr(mimic, missing="error")
    assert len(prepare_mimic_cxr(mimic, missing="drop")) == 4
    lab_path = mimic / "mimic-cxr-2.0.0-chexpert.csv"
    lab = pd.read_csv(lab_path)
    lab.loc[0, "Edema"] = 2.0
    lab.to_csv(lab_path, index=False)
    with pytest.raises(
        DataError, match=r"chexpert\.csv: label column 'Edema' holds 2\.0 \(data row 1\); expected"
    ):
        prepare_mimic_cxr(mimic)
    lab.drop(columns=["Edema"]).to_csv(lab_path, index=False)
    with pytest.raises(DataError, match=r"chexpert\.csv: no column\(s\) \['Edema'\] in the chexpert label"):
        prepare_mimic_cxr(mimic)
    lab_path.unlink()
    with pytest.raises(
        ReaderError, match=r"chexpert\.csv\.gz: not found \(nor mimic-cxr-2\.0\.0-chexpert\.csv\)"
    ):
        prepare_mimic_cxr(mimic)
    (mimic / "mimic-cxr-2.0.0-metadata.csv.gz").unlink()
    with pytest.raises(ReaderError, match=r"metadata\.csv\.gz: not found .*image metadata"):
        prepare_mimic_cxr(mimic)


def test_mimic_reports_from_separate_folder_and_zip(tmp_path):
    root = make_mimic_cxr_tree(tmp_path / "jpg", with_reports=False)
    assert prepare_mimic_cxr(root)["report_missing"].all()
    write_reports(tmp_path / "mimic-cxr" / "files")
    expected = prepare_mimic_cxr(root, reports_root=tmp_path / "mimic-cxr")
    assert expected["report_missing"].tolist() == [False, False, False, True, False]
    pd.testing.assert_frame_equal(
        prepare_mimic_cxr(root, reports_root=tmp_path / "mimic-cxr" / "files"), expected
    )
    zpath = tmp_path / "mimic-cxr-reports.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for p in sorted((tmp_path / "mimic-cxr").rglob("*.txt")):
            zf.write(p, p.relative_to(tmp_path / "mimic-cxr").as_posix())
    pd.testing.assert_frame_equal(prepare_mimic_cxr(root, reports_root=zpath), expected)
    with pytest.raises(ReaderError, match="no such folder or zip"):
        prepare_mimic_cxr(root, reports_root=tmp_path / "nothing")


def test_mimic_index_written_atomically_and_rereadable(mimic, tmp_path, monkeypatch):
    out = tmp_path / "out"
    df = prepare_mimic_cxr(mimic, out)
    back = read_cxr_index(out / "mimic_cxr_index.csv")
    pd.testing.assert_frame_equal(back, df, check_dtype=False)
    assert back["findings"].map(type).eq(str).all() and back["image_missing"].dtype == bool
    assert sorted(p.name for p in out.iterdir()) == ["mimic_cxr_index.csv", "mimic_cxr_summary.json"]
    summary = json.loads((out / "mimic_cxr_summary.json").read_text())
    assert summary["n_rows"] == 5 and summary["n_subject_id"] == 3 and summary["n_studies"] == 4
    assert summary["rows_per_split"] == {"train": 3, "validate": 1, "test": 1}
    assert summary["labels"]["Edema"] == {"positive": 0, "uncertain": 1} and summary["image_missing"] == 1
    assert summary["text_source"] == {"sections": 2, "last_paragraph": 1, "none": 1}
    before = (out / "mimic_cxr_index.csv").read_bytes()

    def broken(self, path, **kw):
        Path(path).write_text("path,dicom_id\nhalf")
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", broken)
    with pytest.raises(OSError, match="disk full"):
        prepare_mimic_cxr(mimic, out, views=("PA",))
    assert (out / "mimic_cxr_index.csv").read_bytes() == before  # the old index, untouched
    assert sorted(p.name for p in out.iterdir()) == ["mimic_cxr_index.csv", "mimic_cxr_summary.json"]
    with pytest.raises(ReaderError, match="not found"):
        read_cxr_index(out / "nope.csv")


# --------------------------------------------------------------------------- CheXpert

CHEXPERT_ROWS = [  # csv, Path tail, sex, age, frontal/lateral, AP/PA, labels
    ("train", "train/patient00001/study1/view1_frontal.jpg", "Female", 68, "Frontal", "AP",
     {"No Finding": 1.0, "Support Devices": 1.0}),
    ("train", "train/patient00002/study2/view1_frontal.jpg", "Female", 87, "Frontal", "AP",
     {"Cardiomegaly": -1.0, "Lung Opacity": 1.0, "Pleural Effusion": -1.0, "Fracture": 1.0}),
    ("train", "train/patient00002/study1/view2_lateral.jpg", "Female", 83, "Lateral", np.nan,
     {"Lung Opacity": 1.0, "Edema": 0.0}),
    ("train", "train/patient00003/study1/view1_frontal.jpg", "Male", 41, "Frontal", "PA", {"Edema": 1.0}),
    ("valid", "valid/patient64541/study1/view1_frontal.jpg", "Male", 73, "Frontal", "AP",
     dict.fromkeys(CHEXPERT_LABELS, 0.0) | {"Cardiomegaly": 1.0}),
]  # fmt: skip


def make_chexpert_tree(root: Path, prefix: str = "CheXpert-v1.0-small/") -> Path:
    root.mkdir(parents=True)
    for name in ("train", "valid"):
        rows = [
            {"Path": prefix + tail, "Sex": sex, "Age": age, "Frontal/Lateral": fl, "AP/PA": ap,
             **{c: lab.get(c, np.nan) for c in CHEXPERT_LABELS}}
            for csv, tail, sex, age, fl, ap, lab in CHEXPERT_ROWS if csv == name
        ]  # fmt: skip
        pd.DataFrame(rows).to_csv(root / f"{name}.csv", index=False)
    for i, row in enumerate(CHEXPERT_ROWS):
        if "patient00003" not in row[1]:  # one image not downloaded
            _jpeg(root / row[1], seed=i)
    return root


@pytest.fixture
def chexpert(tmp_path):
    return make_chexpert_tree(tmp_path / "CheXpert-v1.0-small")


def test_chexpert_rows_patients_views_and_labels(chexpert):
    df = prepare_chexpert(chexpert)
    assert tuple(df.columns) == CHEXPERT_COLUMNS and len(df) == 5
    assert df["path"].tolist() == [
        "train/patient00001/study1/view1_frontal.jpg",
        "train/patient00002/study1/view2_lateral.jpg",
        "train/patient00002/study2/view1_frontal.jpg",
        "train/patient00003/study1/view1_frontal.jpg",
        "valid/patient64541/study1/view1_frontal.jpg",
    ]
    assert df["subject_id"].tolist() == [1, 2, 2, 3, 64541] and df["study"].tolist() == [1, 1, 2, 1, 1]
    assert df.loc[2, "study_id"] == "patient00002/study2" and df.loc[1, "image"] == "view2_lateral"
    assert df["view"].tolist() == ["AP", "LATERAL", "AP", "PA", "AP"] and df.loc[1, "ap_pa"] == ""
    assert df["split"].tolist() == ["train"] * 4 + ["validate"]
    assert df["image_missing"].tolist() == [False, False, False, True, False]
    assert (df.loc[2, "Cardiomegaly"], df.loc[2, "Lung Opacity"]) == (-1.0, 1.0)
    assert np.isnan(df.loc[2, "Edema"])
    assert df.loc[0, "sex"] == "Female" and df.loc[0, "age"] == 68
    assert read_xray(chexpert / df.loc[0, "path"]).shape == (32, 28)
    assert prepare_chexpert(chexpert, uncertain="zeros").loc[2, "Pleural Effusion"] == 0.0
    assert prepare_chexpert(chexpert, uncertain="ones").loc[2, "Pleural Effusion"] == 1.0
    assert prepare_chexpert(chexpert, blank="zeros").loc[2, "Edema"] == 0.0
    assert len(prepare_chexpert(chexpert, views=("PA", "AP"))) == 4
    assert len(prepare_chexpert(chexpert, missing="drop")) == 4


def test_chexpert_full_size_prefix_and_hash_split(tmp_path):
    root = make_chexpert_tree(tmp_path / "CheXpert-v1.0", prefix="CheXpert-v1.0/")
    df = prepare_chexpert(root, split="patient_hash", n_folds=4)
    assert df.loc[0, "path"] == "train/patient00001/study1/view1_frontal.jpg"
    assert (df.groupby("subject_id")["split"].nunique() == 1).all()
    assert df["split"].tolist() == hash_split(df["subject_id"], 4)[1].tolist()
    (root / "valid.csv").unlink()
    assert len(prepare_chexpert(root, split="patient_hash")) == 4
    with pytest.raises(ReaderError, match=r"valid\.csv: not found: not a CheXpert folder"):
        prepare_chexpert(root)


def test_chexpert_index_written_and_rereadable(chexpert, tmp_path):
    df = prepare_chexpert(chexpert, tmp_path / "out")
    back = read_cxr_index(tmp_path / "out" / "chexpert_index.csv")
    pd.testing.assert_frame_equal(back, df, check_dtype=False)
    summary = json.loads((tmp_path / "out" / "chexpert_summary.json").read_text())
    assert summary["rows_per_split"] == {"train": 4, "validate": 1, "test": 0}
    assert summary["image_missing"] == 1


def test_chexpert_bad_inputs(chexpert, tmp_path):
    with pytest.raises(ReaderError, match="no such folder; expected a CheXpert folder"):
        prepare_chexpert(tmp_path / "missing")
    valid = pd.read_csv(chexpert / "valid.csv")
    train = pd.read_csv(chexpert / "train.csv")
    leak = valid.copy()
    leak["Path"] = leak["Path"].str.replace("patient64541", "patient00002")
    leak.to_csv(chexpert / "valid.csv", index=False)
    with pytest.raises(DataError, match=r"valid\.csv: 1 patient\(s\) are in more than one split \(first: "
                       r"subject_id 2 in \['train', 'validate'\]\)"):  # fmt: skip
        prepare_chexpert(chexpert)
    valid.to_csv(chexpert / "valid.csv", index=False)
    bad = train.copy()
    bad.loc[1, "Path"] = "CheXpert-v1.0-small/train/p2/view1.jpg"
    bad.to_csv(chexpert / "train.csv", index=False)
    with pytest.raises(
        DataError, match=r"train\.csv: Path 'CheXpert-v1\.0-small/train/p2/view1\.jpg' \(data row 2\)"
    ):
        prepare_chexpert(chexpert)
    train.drop(columns=["Pneumothorax"]).to_csv(chexpert / "train.csv", index=False)
    with pytest.raises(DataError, match=r"train\.csv: no column\(s\) \['Pneumothorax'\]"):
        prepare_chexpert(chexpert)
    (chexpert / "train.csv").unlink()
    with pytest.raises(ReaderError, match=r"train\.csv: not found"):
        prepare_chexpert(chexpert)


# --------------------------------------------------------------------------- IU X-ray (real reports)


@pytest.fixture(scope="module")
def iu_dir(shared_data):
    return shared_data / "reports" / "iu_xray"


@pytest.mark.realdata
def test_iu_real_reports_one_row_each(iu_dir):
    df = prepare_iu_xray(iu_dir)
    assert tuple(df.columns) == IU_REPORT_COLUMNS and len(df) == 600 and df["report_id"].is_unique
    assert df["uid"].is_monotonic_increasing
    first = df[df["report_id"] == "CXR1"].iloc[0]
    assert first["impression"] == "Normal chest x-___." and first["xml"] == "1.xml"
    assert first["findings"].startswith(
        "The cardiac silhouette and mediastinum size are within normal limits."
    )
    assert "There are no ___ of a pleural effusion." in first["findings"] and "XXXX" not in first["findings"]
    assert first["indication"] == "Positive TB test" and first["comparison"] == "None."
    assert first["mesh_major"] == "normal" and first["normal"] == 1.0 and first["cardiomegaly"] == 0.0
    assert first["images"] == "CXR1_1_IM-0001-3001|CXR1_1_IM-0001-4001" and first["n_images"] == 2
    assert first["image_paths"] == "" and (df["n_images_found"] == 0).all()  # no images_dir
    assert int(df["report_empty"].sum()) == 2 and (df.loc[df["report_empty"], "findings"] == "").all()
    assert int(df["n_images"].sum()) == 486 * 2 + 76 + 28 * 3


@pytest.mark.realdata
def test_iu_condition_flags_follow_mesh_major_terms(iu_dir):
    df = prepare_iu_xray(iu_dir).set_index("report_id")
    for p in sorted(iu_dir.glob("*.xml"))[:200]:  # independent of the preparer: read each XML again
        r = read_openi_xml(p, strict=False)
        heads = {t.split("/")[0].lower() for t in r.mesh.get("major", [])}
        row = df.loc[r.id]
        if not heads or heads == {"no indexing"}:
            assert row[list(IU_CONDITIONS)].isna().all()
            continue
        assert row["normal"] == float("normal" in heads)
        assert row["pleural_effusion"] == float("pleural effusion" in heads)
        if "cardiomegaly" in heads:
            assert row["cardiomegaly"] == 1.0
    assert int((df["normal"] == 1).sum()) == 230 and int((df["cardiomegaly"] == 1).sum()) >= 43
    assert not (
        (df["normal"] == 1) & (df[[c for c in IU_CONDITIONS if c != "normal"]] == 1).any(axis=1)
    ).any()
    assert mesh_conditions(["Cardiac Shadow/enlarged/mild"])["cardiomegaly"] == 1.0
    assert mesh_conditions(["Cardiac Shadow/borderline"])["cardiomegaly"] == 0.0
    assert mesh_conditions(["Density/lung/base/left"])["opacity"] == 1.0
    assert mesh_conditions(["Density/sternum"])["opacity"] == 0.0
    assert np.isnan(mesh_conditions(["No Indexing"])["normal"]) and np.isnan(mesh_conditions([])["normal"])


@pytest.mark.realdata
def test_iu_split_by_report(iu_dir):
    df = prepare_iu_xray(iu_dir)
    fold, split = hash_split(df["uid"])
    np.testing.assert_array_equal(df["fold"], fold)
    share = df["split"].value_counts(normalize=True)
    assert set(share.index) == {"train", "validate", "test"} and 0.7 < share["train"] < 0.9
    np.testing.assert_array_equal(prepare_iu_xray(iu_dir, n_folds=10)["split"], split)


@pytest.mark.realdata
def test_iu_images_present_and_missing(iu_dir, shared_data, tmp_path):
    reports = tmp_path / "NLMCXR_reports" / "ecgen-radiology"
    reports.mkdir(parents=True)
    for n in (1, 2, 3, 4, 5):
        shutil.copy(iu_dir / f"{n}.xml", reports / f"{n}.xml")
    images = tmp_path / "NLMCXR_png"
    images.mkdir()
    png = shared_data / "xray" / "png" / "00000001_000.png"
    shutil.copy(png, images / "CXR1_1_IM-0001-3001.png")  # CXR1's second image is not there
    for im in read_openi_xml(reports / "2.xml").images:
        shutil.copy(png, images / f"{im}.png")
    out = tmp_path / "out"
    df = prepare_iu_xray(tmp_path / "NLMCXR_reports", images, out)  # finds ecgen-radiology/ inside
    assert df["report_id"].tolist() == ["CXR1", "CXR2", "CXR3", "CXR4", "CXR5"]
    assert df.loc[0, "image_paths"] == "CXR1_1_IM-0001-3001.png" and df.loc[0, "n_images_found"] == 1
    assert df.loc[1, "n_images_found"] == df.loc[1, "n_images"] > 0 and df.loc[2, "n_images_found"] == 0
    assert read_xray(images / df.loc[0, "image_paths"]).shape == (512, 512)
    pd.testing.assert_frame_equal(read_cxr_index(out / "iu_xray_index.csv"), df, check_dtype=False)

    per_image = prepare_iu_xray(reports, images, out, per="image")
    assert len(per_image) == int(df["n_images"].sum()) and per_image["image_id"].is_unique
    assert per_image.columns[:3].tolist() == ["image_id", "path", "image_missing"]
    cxr1 = per_image[per_image["report_id"] == "CXR1"]
    assert cxr1["path"].tolist() == ["CXR1_1_IM-0001-3001.png", "CXR1_1_IM-0001-4001.png"]
    assert cxr1["image_missing"].tolist() == [False, True]
    assert (per_image.groupby("report_id")["split"].nunique() == 1).all()
    back = read_cxr_index(out / "iu_xray_index.csv")
    pd.testing.assert_frame_equal(back, per_image, check_dtype=False)
    summary = json.loads((out / "iu_xray_summary.json").read_text())
    assert summary["n_rows"] == len(per_image) and summary["n_report_id"] == 5 and summary["per"] == "image"


def test_iu_bad_inputs(tmp_path):
    with pytest.raises(ReaderError, match="no such folder; expected a folder of OpenI XML reports"):
        prepare_iu_xray(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReaderError, match=r"empty: no \*\.xml reports"):
        prepare_iu_xray(tmp_path / "empty")
    (tmp_path / "empty" / "1.xml").write_text("<?xml version='1.0'?><article/>")
    with pytest.raises(ReaderError, match=r"1\.xml: not an OpenI report: root element <article>"):
        prepare_iu_xray(tmp_path / "empty")
    ok = "<eCitation><uId id='CXR7'/><AbstractText Label='IMPRESSION'>Clear.</AbstractText></eCitation>"
    (tmp_path / "empty" / "1.xml").write_text(ok)
    (tmp_path / "empty" / "2.xml").write_text(ok)
    with pytest.raises(DataError, match=r"2\.xml: report id 'CXR7' is also in 1\.xml"):
        prepare_iu_xray(tmp_path / "empty")
    (tmp_path / "empty" / "2.xml").unlink()
    df = prepare_iu_xray(tmp_path / "empty")
    assert df.loc[0, "impression"] == "Clear." and df[list(IU_CONDITIONS)].isna().all(axis=None)
    with pytest.raises(ReaderError, match="no such folder; expected the OpenI image folder"):
        prepare_iu_xray(tmp_path / "empty", tmp_path / "no-images")
    with pytest.raises(DataError, match=r"per must be one of \['report', 'image'\]"):
        prepare_iu_xray(tmp_path / "empty", per="study")
