"""PTB-XL (Wagner et al., Sci Data 2020): the record index, diagnostic labels, report text and tabular values.

A PTB-XL folder holds ``ptbxl_database.csv`` (one row per ECG), ``scp_statements.csv``
(SCP-ECG codes -> descriptions and diagnostic classes) and the WFDB records under
``records100/`` (100 Hz, ``*_lr``) and ``records500/`` (500 Hz, ``*_hr``).
:func:`read_ptbxl_index` returns one row per record with absolute record paths, the
``strat_fold`` to split by, parsed ``scp_codes``, the five diagnostic superclasses, the
free-text report (raw and normalised), English statements built from the codes, and
age/sex/height/weight.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from biomodal.errors import DataError, ReaderError
from biomodal.io._labs import LabTable, labs_from_frame
from biomodal.io._reports import normalize_report

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = [
    "PTBXL_LABS",
    "SUPERCLASSES",
    "is_ptbxl_dir",
    "ptbxl_labs",
    "read_ptbxl_index",
    "read_scp_statements",
    "scp_statement_text",
    "superclass_targets",
]

#: The five diagnostic superclasses of PTB-XL, in the order of the benchmark papers.
SUPERCLASSES: tuple[str, ...] = ("NORM", "MI", "STTC", "CD", "HYP")
#: The tabular columns of ``ptbxl_database.csv`` used as the labs modality.
PTBXL_LABS: tuple[str, ...] = ("age", "sex", "height", "weight")
#: PTB-XL stores ages above 89 as 300 (HIPAA); they are read as this age.
AGE_CAP = 90.0
_DB, _SCP = "ptbxl_database.csv", "scp_statements.csv"


def is_ptbxl_dir(path: Path) -> bool:
    """Accept a folder holding ptbxl_database.csv and scp_statements.csv."""
    return path.is_dir() and (path / _DB).is_file() and (path / _SCP).is_file()


def read_scp_statements(path: str | os.PathLike) -> pd.DataFrame:
    """Read ``scp_statements.csv`` (a PTB-XL folder or the file), indexed by SCP code.

    Returns
    -------
    pandas.DataFrame
        Columns include ``description``, ``diagnostic`` (1.0 for diagnostic statements),
        ``form``, ``rhythm``, ``diagnostic_class`` (NORM, MI, STTC, CD, HYP) and
        ``diagnostic_subclass``.
    """
    import pandas as pd

    p = Path(path)
    p = p / _SCP if p.is_dir() else p
    try:
        df = pd.read_csv(p, index_col=0)
    except (OSError, ValueError) as exc:
        raise ReaderError(p, f"cannot read the SCP statements table ({exc})") from exc
    for col in ("description", "diagnostic", "diagnostic_class"):
        if col not in df.columns:
            raise ReaderError(p, f"not a PTB-XL scp_statements.csv: no {col!r} column")
    return df


def _parse_codes(text: object, src: Path, ecg_id: object) -> dict[str, float]:
    try:
        codes = ast.literal_eval(str(text))
    except (ValueError, SyntaxError) as exc:
        raise DataError(f"{src}: record {ecg_id}: scp_codes {text!r} is not a dict literal") from exc
    if not isinstance(codes, dict):
        raise DataError(f"{src}: record {ecg_id}: scp_codes {text!r} is not a dict")
    return {str(k): float(v) for k, v in codes.items()}


def scp_statement_text(
    codes: Mapping[str, float], statements: pd.DataFrame, *, min_likelihood: float = 0.0, sep: str = "; "
) -> str:
    """English text from SCP codes: the statements' descriptions, most likely first.

    Codes are kept when their likelihood is at least ``min_likelihood`` (PTB-XL writes 0 for
    "unknown", as for rhythm statements, so the default keeps all). Unknown codes are kept as
    written. Text built this way encodes the labels: a zero-shot figure computed with it is
    not zero-shot.

    Returns
    -------
    str
        E.g. ``"normal ECG; sinus rhythm; low QRS voltages in the frontal and horizontal leads"``.
    """
    desc = statements["description"]
    keep = sorted(((v, k) for k, v in codes.items() if v >= min_likelihood), key=lambda t: -t[0])
    return sep.join(str(desc[k]) if k in desc.index else k for _, k in keep)


def _classes(
    codes: Mapping[str, float], statements: pd.DataFrame, column: str, min_likelihood: float
) -> list[str]:
    diag = statements[statements["diagnostic"] == 1.0][column].dropna()
    return sorted({str(diag[k]) for k, v in codes.items() if k in diag.index and v >= min_likelihood})


def read_ptbxl_index(
    root: str | os.PathLike,
    *,
    sampling_rate: int = 100,
    missing: str = "error",
    min_likelihood: float = 0.0,
) -> pd.DataFrame:
    """Read the PTB-XL record index.

    Parameters
    ----------
    root
        The PTB-XL folder (``ptbxl_database.csv``, ``scp_statements.csv``, ``records100/``,
        ``records500/``).
    sampling_rate
        100 or 500: which records ``path`` points to.
    missing
        Records whose ``.hea``/``.dat`` at ``sampling_rate`` are absent: ``"error"`` (default,
        the message counts them and names the first), ``"drop"`` (left out) or ``"keep"``.
    min_likelihood
        Least likelihood of a code counted for the diagnostic (super/sub)classes.

    Returns
    -------
    pandas.DataFrame
        Indexed by ``ecg_id`` (int), sorted. Columns: ``patient_id`` (int), ``age`` (float; 300
        read as 90; NaN where missing), ``sex`` (0 male, 1 female), ``height`` (cm), ``weight``
        (kg) (NaN where missing), ``strat_fold`` (int 1-10), ``scp_codes`` (dict code ->
        likelihood), ``diagnostic_superclass`` and ``diagnostic_subclass`` (sorted lists;
        empty when the record has no diagnostic statement), ``report`` (raw free text, mostly
        German), ``report_clean`` (:func:`~biomodal.io.normalize_report`), ``statements``
        (English text from the codes, see :func:`scp_statement_text`), ``path`` (absolute
        record path without suffix at ``sampling_rate``, for :func:`~biomodal.io.read_wfdb`),
        ``path_lr``, ``path_hr``, and the other columns of ``ptbxl_database.csv`` unchanged.

    Raises
    ------
    ReaderError
        A table is missing or unreadable.
    DataError
        Unknown ``sampling_rate``/``missing``, missing columns, bad ``scp_codes``, missing
        record files (with ``missing="error"``).
    """
    import pandas as pd

    if sampling_rate not in (100, 500):
        raise DataError(f"PTB-XL sampling_rate must be 100 or 500, got {sampling_rate!r}")
    if missing not in ("error", "drop", "keep"):
        raise DataError(f"missing must be 'error', 'drop' or 'keep', got {missing!r}")
    base = Path(root).expanduser().absolute()
    db = base / _DB
    if not db.is_file():
        raise ReaderError(db, f"not a PTB-XL folder: {_DB} not found")
    try:
        df = pd.read_csv(db, index_col="ecg_id")
    except (OSError, ValueError) as exc:
        raise ReaderError(db, f"cannot read the PTB-XL database table ({exc})") from exc
    need = {"patient_id", "scp_codes", "strat_fold", "filename_lr", "filename_hr", *PTBXL_LABS}
    absent = sorted(need - set(df.columns))
    if absent:
        raise DataError(f"{db}: not a PTB-XL database table: no column(s) {absent}")
    statements = read_scp_statements(base / _SCP)
    df = df.sort_index()
    df.index = df.index.astype(int)
    df["patient_id"] = df["patient_id"].astype(int)
    df["strat_fold"] = df["strat_fold"].astype(int)
    df["age"] = df["age"].mask(df["age"] >= 300, AGE_CAP)
    df["scp_codes"] = [_parse_codes(t, db, i) for i, t in zip(df.index, df["scp_codes"], strict=True)]
    df["diagnostic_superclass"] = [
        _classes(c, statements, "diagnostic_class", min_likelihood) for c in df["scp_codes"]
    ]
    df["diagnostic_subclass"] = [
        _classes(c, statements, "diagnostic_subclass", min_likelihood) for c in df["scp_codes"]
    ]
    df["statements"] = [scp_statement_text(c, statements) for c in df["scp_codes"]]
    df["report"] = df["report"].fillna("") if "report" in df.columns else ""
    df["report_clean"] = [normalize_report(t) for t in df["report"]]
    df["path_lr"] = [str(base / f) for f in df["filename_lr"]]
    df["path_hr"] = [str(base / f) for f in df["filename_hr"]]
    df["path"] = df["path_lr"] if sampling_rate == 100 else df["path_hr"]
    from biomodal.io._wfdb import keep_present_records

    df = keep_present_records(
        df,
        missing,
        lambda n, first: (
            f"{base}: {n} of {len(df)} records listed in {_DB} have no "
            f"records{sampling_rate} files (first: ecg_id {first}, {df.loc[first, 'path']}.hea); "
            "pass missing='drop' to use the records present"
        ),
    )
    return df


def superclass_targets(index: pd.DataFrame, classes: Sequence[str] = SUPERCLASSES) -> np.ndarray:
    """Multi-hot ``(n_records, len(classes))`` float32 targets from ``diagnostic_superclass``."""
    out = np.zeros((len(index), len(classes)), dtype=np.float32)
    pos = {c: j for j, c in enumerate(classes)}
    for i, labels in enumerate(index["diagnostic_superclass"]):
        for c in labels:
            if c in pos:
                out[i, pos[c]] = 1.0
    return out


def ptbxl_labs(index: pd.DataFrame, columns: Sequence[str] = PTBXL_LABS) -> LabTable:
    """Age, sex, height and weight of the records of ``index`` as a :class:`~biomodal.io.LabTable`.

    Missing heights and weights stay NaN (real missingness: in the ``../shared`` subset, 227
    of 353 heights and 68 weights are missing); ids are the ``ecg_id`` values.
    """
    return labs_from_frame(index[list(columns)], columns=list(columns), source="ptbxl_database.csv")
