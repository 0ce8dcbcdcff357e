"""PTB-XL preparer: check a PTB-XL folder and write a flat record index plus a summary.

The data stay where the user keeps them (PTB-XL is CC BY 4.0 from PhysioNet); the
preparer writes only ``ptbxl_index.csv`` and ``ptbxl_summary.json`` to ``out``. See
``datasets/ptbxl.md`` for the layout, the licence and the quirks.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from biomodal._atomic import atomic_path, atomic_write_text
from biomodal._lazy import import_optional
from biomodal.errors import BiomodalError, DataError
from biomodal.io._ptbxl import PTBXL_LABS, SUPERCLASSES, read_ptbxl_index, superclass_targets
from biomodal.io._wfdb import _check_header, _check_sizes, read_wfdb, wfdb_record_path

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["INDEX_COLUMNS", "prepare_ptbxl"]

log = logging.getLogger("biomodal")

#: Columns of ``ptbxl_index.csv`` (then one 0/1 column per superclass).
INDEX_COLUMNS: tuple[str, ...] = (
    "ecg_id",
    "patient_id",
    "strat_fold",
    *PTBXL_LABS,
    "path",
    "diagnostic_superclass",
    "statements",
    "report_clean",
)


def _verify(index: pd.DataFrame, level: str) -> dict[str, Any]:
    """Open each record (``"headers"``: sizes and header checks; ``"full"``: decode and checksums)."""
    wfdb = import_optional("wfdb", "clinical")
    bad: dict[int, str] = {}
    shapes: dict[str, int] = {}
    for ecg_id, path in index["path"].items():
        try:
            if level == "full":
                ecg = read_wfdb(path)
                key = f"{ecg.n_leads}x{ecg.n_samples}@{ecg.fs:g}"
            else:
                base = wfdb_record_path(path)
                hea = base.parent / f"{base.name}.hea"
                h = wfdb.rdheader(str(base))
                _check_header(h, hea)
                _check_sizes(h, base, hea)
                key = f"{h.n_sig}x{h.sig_len}@{h.fs:g}"
        except (BiomodalError, OSError, ValueError) as exc:
            bad[int(ecg_id)] = str(exc)
            continue
        shapes[key] = shapes.get(key, 0) + 1
    return {"shapes": shapes, "bad": bad}


def prepare_ptbxl(
    root: str | os.PathLike,
    out: str | os.PathLike,
    *,
    sampling_rate: int = 100,
    missing: str = "error",
    verify: str | None = "headers",
    on_bad: str = "error",
) -> pd.DataFrame:
    """Check a PTB-XL folder and write ``ptbxl_index.csv`` and ``ptbxl_summary.json`` to ``out``.

    Parameters
    ----------
    root
        The PTB-XL folder (``ptbxl_database.csv``, ``scp_statements.csv``, ``records100/``,
        ``records500/``), e.g. PhysioNet's ``ptb-xl/1.0.3`` or ``../shared/data/ecg/ptbxl``.
    out
        Folder for the index and summary (created; never inside the data).
    sampling_rate
        100 or 500: the records the index points to.
    missing
        Records listed without files: ``"error"`` or ``"drop"`` (see
        :func:`~biomodal.io.read_ptbxl_index`).
    verify
        ``"headers"`` (each header parsed and its data files' sizes checked; fast),
        ``"full"`` (each record decoded and its checksums compared) or ``None``.
    on_bad
        Records that fail verification: ``"error"`` (raise, listing them) or ``"drop"``.

    Returns
    -------
    pandas.DataFrame
        The index written (columns :data:`INDEX_COLUMNS` and one 0/1 column per superclass;
        ``diagnostic_superclass`` joined with ``"|"``), indexed by ``ecg_id``.

    Raises
    ------
    DataError
        Not a PTB-XL folder, missing records (``missing="error"``), records failing
        verification (``on_bad="error"``), a patient split across folds.
    """
    import pandas as pd

    index = read_ptbxl_index(root, sampling_rate=sampling_rate, missing=missing)
    listed = len(pd.read_csv(Path(root) / "ptbxl_database.csv", usecols=["ecg_id"]))
    check = _verify(index, verify) if verify in ("headers", "full") else {"shapes": {}, "bad": {}}
    if verify not in (None, "headers", "full"):
        raise DataError(f"verify must be 'headers', 'full' or None, got {verify!r}")
    if check["bad"]:
        first = next(iter(check["bad"].items()))
        if on_bad == "error":
            raise DataError(
                f"{root}: {len(check['bad'])} PTB-XL record(s) fail verification; "
                f"first ecg_id {first[0]}: {first[1]}"
            )
        index = index.drop(index=list(check["bad"]))
    folds_per_patient = index.groupby("patient_id")["strat_fold"].nunique()
    split = folds_per_patient[folds_per_patient > 1]
    if len(split):
        raise DataError(
            f"{root}: {len(split)} patient(s) have records in several strat_folds (first patient "
            f"{split.index[0]}): splitting by fold would leak patients"
        )
    flat = index.reset_index()[[c for c in INDEX_COLUMNS if c != "diagnostic_superclass"]].copy()
    flat.insert(
        len(flat.columns) - 2, "diagnostic_superclass", ["|".join(x) for x in index["diagnostic_superclass"]]
    )
    targets = superclass_targets(index)
    for j, c in enumerate(SUPERCLASSES):
        flat[c] = targets[:, j].astype(int)
    out_dir = Path(out)
    with atomic_path(out_dir / "ptbxl_index.csv") as tmp:
        flat.to_csv(tmp, index=False)
    summary = {
        "root": str(Path(root).resolve()),
        "sampling_rate": sampling_rate,
        "n_listed": int(listed),
        "n_records": len(index),
        "n_patients": int(index["patient_id"].nunique()),
        "records_per_fold": {
            int(k): int(v) for k, v in index["strat_fold"].value_counts().sort_index().items()
        },
        "superclass_counts": {c: int(targets[:, j].sum()) for j, c in enumerate(SUPERCLASSES)},
        "no_superclass": int((targets.sum(1) == 0).sum()),
        "missing_fraction": {c: round(float(index[c].isna().mean()), 4) for c in PTBXL_LABS},
        "verify": verify,
        "shapes": check["shapes"],
        "dropped_bad": sorted(check["bad"]),
    }
    atomic_write_text(out_dir / "ptbxl_summary.json", json.dumps(summary, indent=2) + "\n")
    log.info("PTB-XL: %d of %d listed records indexed in %s", len(index), listed, out_dir)
    return flat.set_index("ecg_id")
