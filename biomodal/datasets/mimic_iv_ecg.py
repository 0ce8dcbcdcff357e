"""MIMIC-IV-ECG preparer: index the user's credentialed copy (records, machine reports, note links).

MIMIC-IV-ECG (Gow et al., PhysioNet 2023) holds about 800,000 ten-second 12-lead ECGs
at 500 Hz of about 160,000 MIMIC-IV patients, each with the cart's machine-generated
statements. Access needs PhysioNet credentialing and the data-use agreement, so nothing
is shipped: users point :func:`prepare_mimic_iv_ecg` at their copy. See
``datasets/mimic_iv_ecg.md``.
"""

from __future__ import annotations

import json
import logging
import os
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from biomodal._atomic import atomic_path, atomic_write_text
from biomodal.errors import DataError, ReaderError
from biomodal.io._reports import normalize_report

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["MEASUREMENTS", "prepare_mimic_iv_ecg", "read_mimic_iv_ecg_index", "subject_fold"]

log = logging.getLogger("biomodal")

#: Machine measurements kept as numeric columns (ms for intervals, degrees for axes).
MEASUREMENTS: tuple[str, ...] = (
    "rr_interval",
    "p_onset",
    "p_end",
    "qrs_onset",
    "qrs_end",
    "t_end",
    "p_axis",
    "qrs_axis",
    "t_axis",
)
#: The machines write this value where a measurement was not made (e.g. P waves in atrial fibrillation).
NOT_MEASURED = 29999
_RECORDS, _MEAS, _LINKS = "record_list.csv", "machine_measurements.csv", "waveform_note_links.csv"


def subject_fold(subject_ids: np.ndarray | pd.Series, n_folds: int = 10) -> np.ndarray:
    """Deterministic patient-level fold ``0 .. n_folds - 1`` from a CRC-32 of each subject id.

    The same subject always gets the same fold, on any machine and any subset of the data, so
    splits by fold never put one patient on both sides.
    """
    return np.array([zlib.crc32(str(int(s)).encode()) % n_folds for s in subject_ids], dtype=np.int64)


def _read_csv(path: Path, need: set[str]) -> pd.DataFrame:
    import pandas as pd

    if not path.is_file():
        raise ReaderError(path, "not found: not a MIMIC-IV-ECG folder (expected record_list.csv, files/ ...)")
    try:
        df = pd.read_csv(path, low_memory=False)
    except (OSError, ValueError) as exc:
        raise ReaderError(path, f"cannot read the table ({exc})") from exc
    absent = sorted(need - set(df.columns))
    if absent:
        raise DataError(f"{path}: no column(s) {absent} (columns: {list(df.columns)[:12]})")
    return df


def read_mimic_iv_ecg_index(
    root: str | os.PathLike, *, missing: str = "error", n_folds: int = 10
) -> pd.DataFrame:
    """Read the MIMIC-IV-ECG record list with machine reports, measurements and note links.

    Parameters
    ----------
    root
        The MIMIC-IV-ECG folder (``record_list.csv``, ``machine_measurements.csv``, optional
        ``waveform_note_links.csv``, ``files/p1000/p10000032/s40689238/40689238.hea`` ...).
    missing
        Records listed without ``.hea``/``.dat``: ``"error"``, ``"drop"`` or ``"keep"``.
    n_folds
        Number of patient-level folds (see :func:`subject_fold`).

    Returns
    -------
    pandas.DataFrame
        Indexed by ``study_id`` (int). Columns: ``subject_id`` (int), ``ecg_time``
        (datetime), ``path`` (absolute record path without suffix, for
        :func:`~biomodal.io.read_wfdb`), ``report`` (the machine statements ``report_0`` ...
        ``report_17`` joined with ``". "``, normalised), ``cart_id``, ``bandwidth``,
        ``filtering``, the :data:`MEASUREMENTS` (NaN where absent or written as 29999),
        ``note_id`` (the linked cardiology note, NaN where none) and ``fold``.

    Raises
    ------
    ReaderError
        A table is missing or unreadable.
    DataError
        Missing columns, duplicated ``study_id``, missing record files (``missing="error"``).
    """
    import pandas as pd

    if missing not in ("error", "drop", "keep"):
        raise DataError(f"missing must be 'error', 'drop' or 'keep', got {missing!r}")
    base = Path(root).expanduser().absolute()
    rec = _read_csv(base / _RECORDS, {"subject_id", "study_id", "ecg_time", "path"})
    if rec["study_id"].duplicated().any():
        dup = rec.loc[rec["study_id"].duplicated(), "study_id"].iloc[0]
        raise DataError(f"{base / _RECORDS}: study_id {dup} is listed more than once")
    df = rec.set_index("study_id")[["subject_id", "ecg_time", "path"]].copy()
    df["ecg_time"] = pd.to_datetime(df["ecg_time"], errors="coerce")
    df["path"] = [str(base / p) for p in df["path"]]
    meas = _read_csv(base / _MEAS, {"study_id"}).set_index("study_id")
    rep_cols = sorted(
        (c for c in meas.columns if c.startswith("report_")), key=lambda c: int(c.split("_")[1])
    )
    reports = meas[rep_cols].apply(
        lambda row: normalize_report(
            ". ".join(str(v).strip().rstrip(".") for v in row if pd.notna(v) and str(v).strip())
        ),
        axis=1,
    )
    df["report"] = reports.reindex(df.index).fillna("")
    for c in ("cart_id", "bandwidth", "filtering"):
        df[c] = meas[c].reindex(df.index) if c in meas.columns else np.nan
    for c in MEASUREMENTS:
        col = (
            pd.to_numeric(meas[c], errors="coerce")
            if c in meas.columns
            else pd.Series(np.nan, index=meas.index)
        )
        df[c] = col.mask(col == NOT_MEASURED).reindex(df.index)
    links = base / _LINKS
    if links.is_file():
        ln = _read_csv(links, {"study_id", "note_id"}).drop_duplicates("study_id").set_index("study_id")
        df["note_id"] = ln["note_id"].reindex(df.index)
    else:
        df["note_id"] = np.nan
    df["subject_id"] = df["subject_id"].astype(int)
    df["fold"] = subject_fold(df["subject_id"], n_folds)
    from biomodal.io._wfdb import keep_present_records

    df = keep_present_records(
        df,
        missing,
        lambda n, first: (
            f"{base}: {n} of {len(df)} records in {_RECORDS} have no files (first: "
            f"study {first}, {df.loc[first, 'path']}.hea); pass missing='drop' to index those present"
        ),
    )
    return df.sort_index()


def prepare_mimic_iv_ecg(
    root: str | os.PathLike,
    out: str | os.PathLike,
    *,
    missing: str = "error",
    verify: str | None = "headers",
    on_bad: str = "error",
    n_folds: int = 10,
) -> pd.DataFrame:
    """Check a MIMIC-IV-ECG folder and write ``mimic_iv_ecg_index.csv`` and a summary to ``out``.

    Parameters
    ----------
    root
        The user's MIMIC-IV-ECG folder (see :func:`read_mimic_iv_ecg_index`).
    out
        Folder for ``mimic_iv_ecg_index.csv`` and ``mimic_iv_ecg_summary.json``.
    missing
        As in :func:`read_mimic_iv_ecg_index`.
    verify
        ``"headers"``, ``"full"`` or ``None``, as in :func:`biomodal.datasets.ptbxl.prepare_ptbxl`.
    on_bad
        Records failing verification: ``"error"`` or ``"drop"``.
    n_folds
        Patient-level folds.

    Returns
    -------
    pandas.DataFrame
        The index written, indexed by ``study_id``.

    Raises
    ------
    DataError
        As :func:`read_mimic_iv_ecg_index`; records failing verification (``on_bad="error"``).
    """
    from biomodal.datasets.ptbxl import _verify

    if verify not in (None, "headers", "full"):
        raise DataError(f"verify must be 'headers', 'full' or None, got {verify!r}")
    index = read_mimic_iv_ecg_index(root, missing=missing, n_folds=n_folds)
    check = _verify(index, verify) if verify else {"shapes": {}, "bad": {}}
    if check["bad"]:
        first = next(iter(check["bad"].items()))
        if on_bad == "error":
            raise DataError(
                f"{root}: {len(check['bad'])} MIMIC-IV-ECG record(s) fail verification; "
                f"first study {first[0]}: {first[1]}"
            )
        index = index.drop(index=list(check["bad"]))
    out_dir = Path(out)
    with atomic_path(out_dir / "mimic_iv_ecg_index.csv") as tmp:
        index.reset_index().to_csv(tmp, index=False)
    summary = {
        "root": str(Path(root).resolve()),
        "n_records": len(index),
        "n_subjects": int(index["subject_id"].nunique()),
        "records_per_fold": {int(k): int(v) for k, v in index["fold"].value_counts().sort_index().items()},
        "with_report": int((index["report"] != "").sum()),
        "with_note": int(index["note_id"].notna().sum()),
        "missing_fraction": {c: round(float(index[c].isna().mean()), 4) for c in MEASUREMENTS},
        "verify": verify,
        "shapes": check["shapes"],
        "dropped_bad": sorted(int(k) for k in check["bad"]),
    }
    atomic_write_text(out_dir / "mimic_iv_ecg_summary.json", json.dumps(summary, indent=2) + "\n")
    log.info(
        "MIMIC-IV-ECG: %d records of %d subjects indexed in %s", len(index), summary["n_subjects"], out_dir
    )
    return index
