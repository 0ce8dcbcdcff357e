"""Chest X-ray image-report preparers: MIMIC-CXR-JPG, CheXpert and IU X-ray (OpenI).

None of these datasets can be shipped (MIMIC-CXR is credentialed, CheXpert is under a research
use agreement, IU X-ray is CC BY-NC-ND), so users point a preparer at their own copy and get one
flat index table: image paths, patient-level splits, the 14 CheXpert labels (MIMIC-CXR,
CheXpert) or MeSH-derived condition flags (IU X-ray), and the normalised FINDINGS and
IMPRESSION text. Read the images with :func:`biomodal.io.read_xray`. See
``datasets/mimic_cxr.md``, ``datasets/chexpert.md`` and ``datasets/iu_xray.md``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from biomodal._atomic import atomic_write_text
from biomodal.datasets._cxr_labels import (
    CHEXPERT_LABELS,
    IU_CONDITIONS,
    SPLITS,
    UNCERTAIN_POLICIES,
    apply_label_policies,
    check_patient_splits,
    check_policy,
    find_table,
    hash_split,
    mesh_conditions,
    read_table,
    select_views,
    write_index,
)
from biomodal.datasets.mimic_iv_ecg import subject_fold
from biomodal.errors import DataError, ReaderError
from biomodal.io._reports import normalize_report, split_sections

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = [
    "CHEXPERT_COLUMNS",
    "CHEXPERT_LABELS",
    "IU_CONDITIONS",
    "IU_REPORT_COLUMNS",
    "MIMIC_CXR_COLUMNS",
    "SPLITS",
    "UNCERTAIN_POLICIES",
    "prepare_chexpert",
    "prepare_iu_xray",
    "prepare_mimic_cxr",
    "read_cxr_index",
    "split_mimic_report",
]

log = logging.getLogger("biomodal")

#: Columns of ``mimic_cxr_index.csv``, one row per image.
MIMIC_CXR_COLUMNS: tuple[str, ...] = (
    "path", "dicom_id", "subject_id", "study_id", "view", "height", "width", "study_date", "split", "fold",
    "labelled", *CHEXPERT_LABELS, "findings", "impression", "text_source", "report_missing", "image_missing",
)  # fmt: skip
#: Columns of ``chexpert_index.csv``, one row per image.
CHEXPERT_COLUMNS: tuple[str, ...] = (
    "path", "subject_id", "study", "study_id", "image", "sex", "age", "frontal_lateral", "ap_pa", "view",
    "split", "fold", *CHEXPERT_LABELS, "image_missing",
)  # fmt: skip
_IU_TEXT = ("findings", "impression", "indication", "comparison")
_IU_COMMON = ("report_id", "uid", "xml", *_IU_TEXT, "mesh_major", "mesh_automatic", *IU_CONDITIONS)
#: Columns of ``iu_xray_index.csv`` with ``per="report"`` (``per="image"``: ``image_id``, ``path``,
#: ``image_missing`` first, then these without ``images``, ``image_paths``, ``n_images_found``).
IU_REPORT_COLUMNS: tuple[str, ...] = (
    *_IU_COMMON, "n_images", "n_images_found", "images", "image_paths", "report_empty", "fold", "split",
)  # fmt: skip
_TEXT_COLUMNS = frozenset(
    {"path", "dicom_id", "view", "split", "findings", "impression", "text_source", "image",
     "sex", "frontal_lateral", "ap_pa", "report_id", "xml", "indication", "comparison", "mesh_major",
     "mesh_automatic", "images", "image_paths", "image_id"}
)  # fmt: skip
_MIMIC = "mimic-cxr-2.0.0"
_COMBINED = {"FINDINGS_AND_IMPRESSION": ("findings and impression", "impression and findings")}
_SPLIT_WORDS = {"train": "train", "validate": "validate", "valid": "validate", "val": "validate",
                "validation": "validate", "test": "test"}  # fmt: skip


def _folder(root: str | os.PathLike, what: str) -> Path:
    base = Path(root).expanduser().resolve()
    if not base.is_dir():
        raise ReaderError(base, f"no such folder; expected {what}")
    return base


def _check_choice(name: str, value: Any, choices: Sequence[Any]) -> None:
    if value not in choices:
        raise DataError(f"{name} must be one of {list(choices)}, got {value!r}")


def _check_args(split: str, missing: str, uncertain: str, blank: str, n_folds: int) -> None:
    _check_choice("split", split, ("official", "patient_hash"))
    _check_choice("missing", missing, ("keep", "drop", "error"))
    check_policy(uncertain, blank)
    if int(n_folds) < (3 if split == "patient_hash" else 1):
        raise DataError(f"n_folds must be >= 3 with split='patient_hash' (>= 1 otherwise), got {n_folds}")


def _handle_missing(df: pd.DataFrame, missing: str, base: Path, what: str) -> pd.DataFrame:
    n = int(df["image_missing"].sum())
    if not n:
        return df
    first = df.loc[df["image_missing"], "path"].iloc[0]
    if missing == "error":
        raise DataError(
            f"{base}: {n} of {len(df)} images listed in {what} are not on disk (first: {first}); pass "
            "missing='drop' to index those present or missing='keep' to flag them"
        )
    log.warning("%s: %d of %d listed images are not on disk (first: %s)", base, n, len(df), first)
    return df[~df["image_missing"]].reset_index(drop=True) if missing == "drop" else df


def _write(df: pd.DataFrame, out: str | os.PathLike | None, name: str, summary: dict[str, Any]) -> None:
    if out is None:
        return
    path = write_index(df, out, f"{name}_index.csv")
    atomic_write_text(Path(out) / f"{name}_summary.json", json.dumps(summary, indent=2) + "\n")
    log.info("%s: %d rows indexed in %s", name, len(df), path)


def _label_summary(df: pd.DataFrame) -> dict[str, dict[str, int]]:
    return {
        c: {"positive": int((df[c] == 1).sum()), "uncertain": int((df[c] == -1).sum())}
        for c in CHEXPERT_LABELS
    }


def _summary(df: pd.DataFrame, root: Path, group: str, **extra: Any) -> dict[str, Any]:
    return {
        "root": str(root),
        "n_rows": len(df),
        f"n_{group}": int(df[group].nunique()),
        "rows_per_split": {s: int((df["split"] == s).sum()) for s in SPLITS},
        **extra,
    }


# --------------------------------------------------------------------------- MIMIC-CXR


def _last_paragraph(text: str) -> str:
    paras = [p for p in re.split(r"\n[ \t]*\n", text.replace("\r\n", "\n")) if p.strip()]
    return " ".join(paras[-1].split()) if paras else ""


def split_mimic_report(text: str, *, last_paragraph: bool = True) -> dict[str, str]:
    """Extract the FINDINGS and IMPRESSION of a MIMIC-CXR free-text report, normalised.

    Sections are found by :func:`~biomodal.io.split_sections`; a combined ``FINDINGS AND
    IMPRESSION:`` section counts as FINDINGS. When the report has neither section, its last
    paragraph (text after the last blank line) is taken as the impression, as in MIMIC-CXR's
    own section script.

    Parameters
    ----------
    text
        The report (``s50414267.txt``).
    last_paragraph
        Fall back on the last paragraph (else leave both empty).

    Returns
    -------
    dict[str, str]
        ``findings``, ``impression`` (normalised with :func:`~biomodal.io.normalize_report`,
        placeholders as ``___``) and ``text_source``: ``"sections"``, ``"last_paragraph"`` or
        ``"none"``.
    """
    sec = split_sections(text, strict=False, aliases=_COMBINED)
    findings = " ".join(s for s in (sec.get("FINDINGS"), sec.get("FINDINGS_AND_IMPRESSION")) if s)
    impression = sec.get("IMPRESSION", "")
    source = "sections" if findings or impression else "none"
    if source == "none" and last_paragraph:
        impression = _last_paragraph(text)
        source = "last_paragraph" if impression else "none"
    return {
        "findings": normalize_report(findings),
        "impression": normalize_report(impression),
        "text_source": source,
    }


def _report_reader(where: Path) -> Callable[[int, int], str | None]:
    """``(subject_id, study_id) -> text or None`` from a folder (``files/p10/...``) or the reports zip."""
    if where.is_file():
        try:
            zf = zipfile.ZipFile(where)
        except (OSError, zipfile.BadZipFile) as exc:
            raise ReaderError(where, f"not a readable zip of MIMIC-CXR reports ({exc})") from exc
        names = {n.rsplit("/", 1)[-1]: n for n in zf.namelist() if n.endswith(".txt")}

        def from_zip(subject: int, study: int) -> str | None:
            name = names.get(f"s{study}.txt")
            if name is None:
                return None
            try:
                return zf.read(name).decode("utf-8")
            except (OSError, UnicodeDecodeError, zipfile.BadZipFile) as exc:
                raise ReaderError(f"{where}!{name}", f"cannot read the report ({exc})") from exc

        return from_zip
    if not where.is_dir():
        raise ReaderError(where, "no such folder or zip; expected the MIMIC-CXR reports (files/p10/...)")
    files = where / "files" if (where / "files").is_dir() else where

    def from_folder(subject: int, study: int) -> str | None:
        p = files / f"p{str(subject)[:2]}" / f"p{subject}" / f"s{study}.txt"
        try:
            return p.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise ReaderError(p, f"cannot read the report ({exc})") from exc

    return from_folder


def prepare_mimic_cxr(
    root: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    reports_root: str | os.PathLike | None = None,
    split: str = "official",
    uncertain: str = "keep",
    blank: str = "keep",
    views: Sequence[str] | None = None,
    missing: str = "keep",
    labeler: str = "chexpert",
    n_folds: int = 10,
    image_suffix: str = ".jpg",
    last_paragraph: bool = True,
) -> pd.DataFrame:
    """Index a MIMIC-CXR-JPG folder: one row per image with labels, split and report text.

    Parameters
    ----------
    root
        The MIMIC-CXR-JPG folder: ``files/p10/p10000032/s50414267/<dicom_id>.jpg``,
        ``mimic-cxr-2.0.0-metadata.csv(.gz)``, ``mimic-cxr-2.0.0-chexpert.csv(.gz)`` and, for
        ``split="official"``, ``mimic-cxr-2.0.0-split.csv(.gz)``.
    out
        Folder for ``mimic_cxr_index.csv`` and ``mimic_cxr_summary.json`` (written atomically);
        ``None`` writes nothing.
    reports_root
        Where the reports are: a folder holding ``files/p10/p10000032/s50414267.txt`` (or the
        ``files`` folder itself), or ``mimic-cxr-reports.zip``. Default ``root``.
    split
        ``"official"`` (the split CSV; ``valid``/``validate`` read as ``"validate"``) or
        ``"patient_hash"`` (fold 0 test, fold 1 validate, the rest train; see ``fold``).
    uncertain
        Uncertain (-1) labels: ``"keep"``, ``"ones"`` (U-Ones), ``"zeros"`` (U-Zeros) or
        ``"ignore"`` (NaN).
    blank
        Labels not mentioned (blank): ``"keep"`` (NaN) or ``"zeros"``.
    views
        Keep only these ``ViewPosition`` values, e.g. ``("PA", "AP")`` for frontal images;
        ``None`` keeps all (blank views included).
    missing
        Images listed but not on disk: ``"keep"`` (flagged in ``image_missing``), ``"drop"`` or
        ``"error"``.
    labeler
        ``"chexpert"`` or ``"negbio"``: which of MIMIC-CXR-JPG's label tables to use.
    n_folds
        Number of patient-level folds (``fold``; CRC-32 of ``subject_id``).
    image_suffix
        Suffix of the image files (``".jpg"``; ``".png"`` for a converted copy).
    last_paragraph
        Use a report's last paragraph as its impression when it has neither section.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`MIMIC_CXR_COLUMNS`: ``path`` (relative to ``root``), ``dicom_id``,
        ``subject_id``, ``study_id``, ``view`` (``ViewPosition``, ``""`` when blank), ``height``
        and ``width`` (``Rows``, ``Columns``), ``study_date`` (shifted, as stored), ``split``,
        ``fold``, ``labelled`` (the study has a row in the label table), the 14
        :data:`CHEXPERT_LABELS` (float: 1, 0, -1, NaN after the policies), ``findings``,
        ``impression``, ``text_source`` (see :func:`split_mimic_report`; ``"none"`` without
        a report), ``report_missing``, ``image_missing``. Sorted by subject, study, dicom.

    Raises
    ------
    ReaderError
        ``root`` is not a folder; a table is missing or unreadable.
    DataError
        A missing column, a label value other than 1/0/-1/blank, images without an official
        split, a patient in more than one split, missing images (``missing="error"``).
    """
    import pandas as pd

    base = _folder(root, "a MIMIC-CXR-JPG folder (files/, mimic-cxr-2.0.0-metadata.csv.gz ...)")
    _check_args(split, missing, uncertain, blank, n_folds)
    _check_choice("labeler", labeler, ("chexpert", "negbio"))
    meta_path = find_table(base, f"{_MIMIC}-metadata", "the MIMIC-CXR-JPG image metadata")
    meta = read_table(meta_path, ("dicom_id", "subject_id", "study_id", "ViewPosition"), "image metadata")
    if meta["dicom_id"].duplicated().any():
        dup = meta.loc[meta["dicom_id"].duplicated(), "dicom_id"].iloc[0]
        raise DataError(f"{meta_path}: dicom_id {dup} is listed more than once")
    df = pd.DataFrame(
        {
            "dicom_id": meta["dicom_id"].astype(str),
            "subject_id": meta["subject_id"].astype(np.int64),
            "study_id": meta["study_id"].astype(np.int64),
            "view": meta["ViewPosition"].fillna("").astype(str).str.strip(),
        }
    )
    for src, dst in (("Rows", "height"), ("Columns", "width"), ("StudyDate", "study_date")):
        df[dst] = meta[src] if src in meta.columns else np.nan
    df = select_views(df, views).reset_index(drop=True)

    lab_path = find_table(base, f"{_MIMIC}-{labeler}", f"the {labeler} labels of the studies")
    lab = read_table(lab_path, ("subject_id", "study_id", *CHEXPERT_LABELS), f"{labeler} label table")
    if lab["study_id"].duplicated().any():
        dup = lab.loc[lab["study_id"].duplicated(), "study_id"].iloc[0]
        raise DataError(f"{lab_path}: study_id {dup} is listed more than once")
    labels = apply_label_policies(lab[list(CHEXPERT_LABELS)], lab_path, uncertain=uncertain, blank=blank)
    labels.index = lab["study_id"].astype(np.int64)
    df["labelled"] = df["study_id"].isin(labels.index)
    df = df.join(labels.reindex(df["study_id"]).reset_index(drop=True))

    folds = subject_fold(df["subject_id"], int(n_folds))
    if split == "official":
        sp_path = find_table(base, f"{_MIMIC}-split", "the official split (or pass split='patient_hash')")
        sp = read_table(sp_path, ("dicom_id", "split"), "split table").drop_duplicates("dicom_id")
        words = sp["split"].astype(str).str.strip().str.lower().map(_SPLIT_WORDS)
        if words.isna().any():
            bad = sp.loc[words.isna(), "split"].iloc[0]
            raise DataError(f"{sp_path}: split {bad!r}; expected train, validate or test")
        df["split"] = df["dicom_id"].map(pd.Series(words.to_numpy(), index=sp["dicom_id"].astype(str)))
        if df["split"].isna().any():
            n, first = int(df["split"].isna().sum()), df.loc[df["split"].isna(), "dicom_id"].iloc[0]
            raise DataError(f"{sp_path}: {n} image(s) of the metadata have no split (first dicom_id {first})")
        check_patient_splits(df, "subject_id", sp_path)
    else:
        df["split"] = hash_split(df["subject_id"], n_folds)[1]
    df["fold"] = folds

    df["path"] = [
        f"files/p{str(s)[:2]}/p{s}/s{t}/{d}{image_suffix}"
        for s, t, d in zip(df["subject_id"], df["study_id"], df["dicom_id"])
    ]
    df["image_missing"] = [not (base / p).is_file() for p in df["path"]]
    df = _handle_missing(df, missing, base, meta_path.name)

    read_report = _report_reader(Path(reports_root).expanduser() if reports_root is not None else base)
    studies = df[["subject_id", "study_id"]].drop_duplicates("study_id")
    texts: dict[int, dict[str, Any]] = {}
    for s, t in zip(studies["subject_id"], studies["study_id"]):
        text = read_report(int(s), int(t))
        if text is None:
            texts[int(t)] = {"findings": "", "impression": "", "text_source": "none", "report_missing": True}
        else:
            texts[int(t)] = {
                **split_mimic_report(text, last_paragraph=last_paragraph),
                "report_missing": False,
            }
    rep = pd.DataFrame.from_dict(texts, orient="index")
    for c in ("findings", "impression", "text_source", "report_missing"):
        df[c] = df["study_id"].map(rep[c]).to_numpy() if len(rep) else []
    df["report_missing"] = df["report_missing"].astype(bool)
    df = df.sort_values(["subject_id", "study_id", "dicom_id"])[list(MIMIC_CXR_COLUMNS)]
    df = df.reset_index(drop=True)
    if df["report_missing"].any():
        log.warning("%s: %d of %d studies have no report", base, int(rep["report_missing"].sum()), len(rep))
    per_study = df.drop_duplicates("study_id")
    summary = _summary(
        df, base, "subject_id", n_studies=len(per_study), split=split,
        uncertain=uncertain, blank=blank, labeler=labeler, views=list(views) if views else None,
        image_missing=int(df["image_missing"].sum()),
        studies_without_report=int(per_study["report_missing"].sum()),
        text_source={k: int(v) for k, v in per_study["text_source"].value_counts().items()},
        labels=_label_summary(df),
    )  # fmt: skip
    _write(df, out, "mimic_cxr", summary)
    return df


# --------------------------------------------------------------------------- CheXpert

_CHEXPERT_PATH = re.compile(r"(?:^|/)((train|valid|test)/patient(\d+)/study(\d+)/([^/]+?)\.\w+)$")
_CHEXPERT_NEED = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_LABELS)


def _read_chexpert_csv(path: Path, split_name: str, uncertain: str, blank: str) -> pd.DataFrame:
    import pandas as pd

    raw = read_table(path, _CHEXPERT_NEED, "CheXpert label table")
    parts = raw["Path"].astype(str).str.replace("\\", "/", regex=False).str.extract(_CHEXPERT_PATH)
    if parts[0].isna().any():
        i = parts[0].isna().idxmax()
        raise DataError(
            f"{path}: Path {raw.loc[i, 'Path']!r} (data row {i + 1}) is not "
            "'[CheXpert-v1.0...]/<train|valid>/patientNNNNN/studyN/viewN_<frontal|lateral>.jpg'"
        )
    fl = raw["Frontal/Lateral"].fillna("").astype(str).str.strip()
    ap = raw["AP/PA"].fillna("").astype(str).str.strip()
    view = ap.where(ap != "", np.where(fl.str.lower() == "lateral", "LATERAL", ""))
    df = pd.DataFrame(
        {
            "path": parts[0],
            "subject_id": parts[2].astype(np.int64),
            "study": parts[3].astype(np.int64),
            "study_id": "patient" + parts[2] + "/study" + parts[3],
            "image": parts[4],
            "sex": raw["Sex"].fillna("").astype(str),
            "age": pd.to_numeric(raw["Age"], errors="coerce"),
            "frontal_lateral": fl,
            "ap_pa": ap,
            "view": view,
            "split": split_name,
        }
    )
    labels = apply_label_policies(raw[list(CHEXPERT_LABELS)], path, uncertain=uncertain, blank=blank)
    return df.join(labels)


def prepare_chexpert(
    root: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    split: str = "official",
    uncertain: str = "keep",
    blank: str = "keep",
    views: Sequence[str] | None = None,
    missing: str = "keep",
    n_folds: int = 10,
) -> pd.DataFrame:
    """Index a CheXpert-v1.0 (or -small) folder: one row per image with labels and split.

    CheXpert has no reports (their labels were extracted from reports that were not released).

    Parameters
    ----------
    root
        The folder holding ``train.csv``, ``valid.csv``, ``train/`` and ``valid/``
        (``CheXpert-v1.0-small/``). ``Path`` values such as
        ``CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg`` are resolved
        from their ``train/`` or ``valid/`` part, whatever the prefix.
    out
        Folder for ``chexpert_index.csv`` and ``chexpert_summary.json``; ``None`` writes nothing.
    split
        ``"official"`` (``train.csv`` -> ``"train"``, ``valid.csv`` -> ``"validate"``; there is
        no public test set here) or ``"patient_hash"`` (both files pooled; fold 0 test, fold 1
        validate, the rest train). ``valid.csv`` is optional with ``"patient_hash"``.
    uncertain, blank
        Label policies, as in :func:`prepare_mimic_cxr`.
    views
        Keep only these ``view`` values (``"PA"``, ``"AP"``, ``"LATERAL"``...).
    missing
        Images not on disk: ``"keep"`` (flagged), ``"drop"`` or ``"error"``.
    n_folds
        Patient-level folds (CRC-32 of the patient number).

    Returns
    -------
    pandas.DataFrame
        Columns :data:`CHEXPERT_COLUMNS`: ``path`` (relative to ``root``), ``subject_id`` (the
        patient number of ``patientNNNNN``), ``study`` (N of ``studyN``), ``study_id``
        (``"patient00001/study1"``), ``image`` (``"view1_frontal"``), ``sex``, ``age``,
        ``frontal_lateral``, ``ap_pa`` (as stored), ``view`` (``ap_pa``, else ``"LATERAL"``
        for laterals), ``split``, ``fold``, the 14 :data:`CHEXPERT_LABELS`, ``image_missing``.

    Raises
    ------
    ReaderError
        ``root`` is not a folder; ``train.csv`` (or ``valid.csv`` for the official split) missing.
    DataError
        A missing column, a label value other than 1/0/-1/blank, a ``Path`` not in CheXpert's
        form, a patient in both files, missing images (``missing="error"``).
    """
    import pandas as pd

    base = _folder(root, "a CheXpert folder (train.csv, valid.csv, train/, valid/)")
    _check_args(split, missing, uncertain, blank, n_folds)
    parts = []
    for name, word in (("train.csv", "train"), ("valid.csv", "validate")):
        p = base / name
        if not p.is_file():
            if name == "valid.csv" and split == "patient_hash":
                continue
            raise ReaderError(p, "not found: not a CheXpert folder (expected train.csv, valid.csv, train/)")
        parts.append(_read_chexpert_csv(p, word, uncertain, blank))
    df = select_views(pd.concat(parts, ignore_index=True), views).reset_index(drop=True)
    if df["path"].duplicated().any():
        raise DataError(f"{base}: image {df.loc[df['path'].duplicated(), 'path'].iloc[0]} is listed twice")
    if split == "official":
        check_patient_splits(df, "subject_id", base / "valid.csv")
    else:
        df["split"] = hash_split(df["subject_id"], n_folds)[1]
    df["fold"] = subject_fold(df["subject_id"], int(n_folds))
    df["image_missing"] = [not (base / p).is_file() for p in df["path"]]
    df = _handle_missing(df, missing, base, "train.csv/valid.csv")
    df = df.sort_values(["subject_id", "study", "path"])[list(CHEXPERT_COLUMNS)].reset_index(drop=True)
    summary = _summary(
        df, base, "subject_id", n_studies=int(df["study_id"].nunique()), split=split, uncertain=uncertain,
        blank=blank, views=list(views) if views else None, image_missing=int(df["image_missing"].sum()),
        labels=_label_summary(df),
    )  # fmt: skip
    _write(df, out, "chexpert", summary)
    return df


# --------------------------------------------------------------------------- IU X-ray (OpenI)


def prepare_iu_xray(
    reports_dir: str | os.PathLike,
    images_dir: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    *,
    per: str = "report",
    n_folds: int = 10,
    image_suffix: str = ".png",
) -> pd.DataFrame:
    """Index the IU X-ray (OpenI) collection: reports, MeSH terms and flags, the images present.

    The XML reports carry no patient id, so every report is its own group: ``fold`` and
    ``split`` are by report (a patient with several reports may fall on both sides).

    Parameters
    ----------
    reports_dir
        Folder of OpenI XML reports (``ecgen-radiology/``, or a folder holding it).
    images_dir
        Folder of the images (``NLMCXR_png/``), named by the reports' ``parentImage`` ids
        (``CXR1_1_IM-0001-3001.png``); ``None``: no images (all flagged missing).
    out
        Folder for ``iu_xray_index.csv`` and ``iu_xray_summary.json``; ``None`` writes nothing.
    per
        ``"report"`` (one row per report) or ``"image"`` (one row per listed image; reports
        without images drop out).
    n_folds
        Number of folds (CRC-32 of the report number; fold 0 test, fold 1 validate).
    image_suffix
        Suffix of the image files.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`IU_REPORT_COLUMNS` (``per="report"``): ``report_id`` (``"CXR1"``),
        ``uid`` (1), ``xml`` (file name), ``findings``, ``impression``, ``indication``,
        ``comparison`` (normalised; ``XXXX`` -> ``___``), ``mesh_major`` and
        ``mesh_automatic`` (terms joined with ``"|"``), one float flag per
        :data:`IU_CONDITIONS` (NaN when not indexed), ``n_images``, ``n_images_found``,
        ``images`` (ids) and ``image_paths`` (those on disk, relative to ``images_dir``),
        joined with ``"|"``, ``report_empty`` (no text section), ``fold``, ``split``. Sorted
        by ``uid``.

    Raises
    ------
    ReaderError
        A folder does not exist or holds no XML reports; a file is not an OpenI report.
    DataError
        Two reports with one id, a report id without a number.
    """
    import pandas as pd

    from biomodal.io._openi import read_openi_xml

    _check_choice("per", per, ("report", "image"))
    rdir = _folder(reports_dir, "a folder of OpenI XML reports (ecgen-radiology/)")
    xmls = sorted(rdir.glob("*.xml"))
    if not xmls and (rdir / "ecgen-radiology").is_dir():
        rdir = rdir / "ecgen-radiology"
        xmls = sorted(rdir.glob("*.xml"))
    if not xmls:
        raise ReaderError(
            rdir, "no *.xml reports; expected OpenI's ecgen-radiology/ folder (1.xml, 2.xml ...)"
        )
    idir = _folder(images_dir, "the OpenI image folder (NLMCXR_png/)") if images_dir is not None else None
    rows, seen = [], {}
    for p in xmls:
        r = read_openi_xml(p, strict=False)
        rid = str(r.id)
        m = re.search(r"(\d+)", rid)
        if m is None:
            raise DataError(f"{p}: report id {rid!r} has no number (expected 'CXR<n>')")
        if rid in seen:
            raise DataError(f"{p}: report id {rid!r} is also in {seen[rid]}")
        seen[rid] = p.name
        major, auto = r.mesh.get("major", []), r.mesh.get("automatic", [])
        names = [f"{i}{image_suffix}" for i in r.images]
        found = [q for q in names if idir is not None and (idir / q).is_file()]
        rows.append({
            "report_id": rid, "uid": int(m.group(1)), "xml": p.name,
            **{c: normalize_report(r.sections.get(c.upper(), "")) for c in _IU_TEXT},
            "mesh_major": "|".join(major), "mesh_automatic": "|".join(auto), **mesh_conditions(major),
            "n_images": len(r.images), "n_images_found": len(found), "images": "|".join(r.images),
            "image_paths": "|".join(found), "report_empty": not r.sections,
        })  # fmt: skip
    df = pd.DataFrame(rows).sort_values("uid").reset_index(drop=True)
    df["fold"], df["split"] = hash_split(df["uid"], n_folds)
    summary = _summary(
        df, rdir, "report_id", images_dir=str(idir) if idir else None, per=per,
        n_images=int(df["n_images"].sum()), n_images_found=int(df["n_images_found"].sum()),
        report_empty=int(df["report_empty"].sum()),
        conditions={c: int((df[c] == 1).sum()) for c in IU_CONDITIONS},
        not_indexed=int(df["normal"].isna().sum()),
    )  # fmt: skip
    if per == "image":
        img = df.assign(image_id=df["images"].str.split("|")).explode("image_id")
        img = img[img["image_id"].fillna("") != ""].copy()
        img["path"] = img["image_id"] + image_suffix
        img["image_missing"] = [idir is None or not (idir / q).is_file() for q in img["path"]]
        keep = [c for c in IU_REPORT_COLUMNS if c not in ("images", "image_paths", "n_images_found")]
        df = img[["image_id", "path", "image_missing", *keep]].reset_index(drop=True)
        summary["n_rows"] = len(df)
    elif idir is not None and (df["n_images_found"] < df["n_images"]).any():
        n = int((df["n_images"] - df["n_images_found"]).sum())
        log.warning("%s: %d of %d listed images are not in %s", rdir, n, int(df["n_images"].sum()), idir)
    _write(df, out, "iu_xray", summary)
    return df


def read_cxr_index(path: str | os.PathLike) -> pd.DataFrame:
    """Read back an index written by one of the chest X-ray preparers, with its dtypes.

    Text columns come back as ``str`` (empty text as ``""``, not NaN), flags as ``bool``,
    labels as float (NaN where blank).

    Parameters
    ----------
    path
        ``mimic_cxr_index.csv``, ``chexpert_index.csv`` or ``iu_xray_index.csv``.

    Returns
    -------
    pandas.DataFrame
        The index as the preparer returned it.

    Raises
    ------
    ReaderError
        The file is missing or unreadable.
    """
    import pandas as pd

    p = Path(path)
    if not p.is_file():
        raise ReaderError(p, "not found; expected an index written by prepare_mimic_cxr/chexpert/iu_xray")
    try:
        head = pd.read_csv(p, nrows=0).columns
        text = [c for c in head if c in _TEXT_COLUMNS]
        df = pd.read_csv(p, dtype=dict.fromkeys(text, str), low_memory=False)
    except (OSError, ValueError) as exc:
        raise ReaderError(p, f"cannot read the index ({exc})") from exc
    for c in text:
        df[c] = df[c].fillna("")
    return df
