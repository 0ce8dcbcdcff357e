"""Shared parts of the chest X-ray preparers: CheXpert labels and their policies, splits, MeSH flags.

Used by :mod:`biomodal.datasets.chest_xray` (MIMIC-CXR, CheXpert, IU X-ray). See the cards
``datasets/mimic_cxr.md``, ``datasets/chexpert.md`` and ``datasets/iu_xray.md``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from biomodal._atomic import atomic_path
from biomodal.datasets.mimic_iv_ecg import subject_fold
from biomodal.errors import DataError, ReaderError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = [
    "CHEXPERT_LABELS",
    "IU_CONDITIONS",
    "SPLITS",
    "UNCERTAIN_POLICIES",
    "apply_label_policies",
    "check_patient_splits",
    "hash_split",
    "mesh_conditions",
]

log = logging.getLogger("biomodal")

#: The 14 CheXpert observations, in CheXpert's column order (MIMIC-CXR-JPG uses the same names).
CHEXPERT_LABELS: tuple[str, ...] = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)
#: How an uncertain label (-1) is handled: kept as -1, made 1 (U-Ones), 0 (U-Zeros), NaN (U-Ignore).
UNCERTAIN_POLICIES: tuple[str, ...] = ("keep", "ones", "zeros", "ignore")
#: Split names of every chest X-ray index (MIMIC-CXR's own words; CheXpert's ``valid`` is ``validate``).
SPLITS: tuple[str, ...] = ("train", "validate", "test")
_LABEL_VALUES = {1.0, 0.0, -1.0}

#: IU X-ray condition flags -> MeSH major terms that set them. A term is matched on its heading
#: (the text before the first ``/``, case-insensitive); ``"Heading/qualifier"`` also needs that
#: qualifier among the term's ``/``-separated qualifiers (``"Cardiac Shadow/enlarged/mild"``).
IU_CONDITIONS: dict[str, tuple[str, ...]] = {
    "normal": ("normal",),
    "cardiomegaly": ("Cardiomegaly", "Cardiac Shadow/enlarged"),
    "pleural_effusion": ("Pleural Effusion",),
    "opacity": ("Opacity", "Airspace Disease", "Consolidation", "Infiltrate", "Density/lung"),
    "atelectasis": ("Pulmonary Atelectasis", "Atelectasis"),
    "edema": ("Pulmonary Edema",),
    "pneumonia": ("Pneumonia",),
    "pneumothorax": ("Pneumothorax",),
    "nodule": ("Nodule", "Mass"),
    "granuloma": ("Calcified Granuloma", "Granulomatous Disease", "Granuloma"),
    "emphysema": (
        "Emphysema",
        "Pulmonary Emphysema",
        "Bullous Emphysema",
        "Pulmonary Disease, Chronic Obstructive",
        "Lung/hyperdistention",
    ),
    "fracture": ("Fractures, Bone",),
}
#: MeSH major terms that mean "not indexed": such reports get NaN condition flags.
_NOT_INDEXED = frozenset({"no indexing"})


def find_table(root: Path, name: str, what: str) -> Path:
    """``root/<name>.csv.gz`` or ``root/<name>.csv`` (PhysioNet ships ``.gz``; users often unpack)."""
    for cand in (root / f"{name}.csv.gz", root / f"{name}.csv"):
        if cand.is_file():
            return cand
    raise ReaderError(root / f"{name}.csv.gz", f"not found (nor {name}.csv): {what}")


def read_table(path: Path, need: Iterable[str], what: str) -> pd.DataFrame:
    """Read a CSV (``.gz`` by suffix) and check that the columns ``need`` are there."""
    import pandas as pd

    try:
        df = pd.read_csv(path, low_memory=False)
    except (OSError, ValueError, EOFError) as exc:
        raise ReaderError(path, f"cannot read the {what} ({exc})") from exc
    absent = [c for c in need if c not in df.columns]
    if absent:
        raise DataError(f"{path}: no column(s) {absent} in the {what} (columns: {list(df.columns)[:20]})")
    return df


def check_policy(uncertain: str, blank: str) -> None:
    """Validate the ``uncertain=`` and ``blank=`` arguments."""
    if uncertain not in UNCERTAIN_POLICIES:
        raise DataError(f"uncertain must be one of {list(UNCERTAIN_POLICIES)}, got {uncertain!r}")
    if blank not in ("keep", "zeros"):
        raise DataError(f"blank must be 'keep' or 'zeros', got {blank!r}")


def apply_label_policies(
    labels: pd.DataFrame, source: str | os.PathLike, *, uncertain: str = "keep", blank: str = "keep"
) -> pd.DataFrame:
    """Check CheXpert-style labels and apply the blank and uncertain policies.

    Parameters
    ----------
    labels
        The :data:`CHEXPERT_LABELS` columns: 1.0 positive, 0.0 negative, -1.0 uncertain,
        blank (NaN) not mentioned.
    source
        The file named in errors.
    uncertain
        ``"keep"`` (-1 stays), ``"ones"`` (U-Ones: -1 -> 1), ``"zeros"`` (U-Zeros: -1 -> 0) or
        ``"ignore"`` (U-Ignore: -1 -> NaN, to be masked in the loss).
    blank
        ``"keep"`` (NaN: not mentioned in the report) or ``"zeros"`` (not mentioned -> negative).
        Applied before ``uncertain``, so ``"ignore"`` yields NaN only for uncertain labels.

    Returns
    -------
    pandas.DataFrame
        float64 copy of ``labels`` with the policies applied.

    Raises
    ------
    DataError
        A value other than 1, 0, -1 or blank (the message names the file, column and value).
    """
    import pandas as pd

    check_policy(uncertain, blank)
    out = labels.apply(pd.to_numeric, errors="coerce").astype(np.float64)
    for c in out.columns:
        col = out[c]
        bad = (col.notna() & ~col.isin(_LABEL_VALUES)) | (col.isna() & labels[c].notna())
        if bad.any():
            i = bad.idxmax()
            v = labels.loc[i, c]
            shown = repr(v) if isinstance(v, str) else v
            raise DataError(
                f"{source}: label column {c!r} holds {shown} (data row {i + 1}); "
                "expected 1.0 (positive), 0.0 (negative), -1.0 (uncertain) or blank"
            )
    if blank == "zeros":
        out = out.fillna(0.0)
    if uncertain == "ones":
        out = out.replace(-1.0, 1.0)
    elif uncertain == "zeros":
        out = out.replace(-1.0, 0.0)
    elif uncertain == "ignore":
        out = out.replace(-1.0, np.nan)
    return out


def hash_split(
    ids: Sequence[int] | np.ndarray | pd.Series, n_folds: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """Patient-level ``fold`` (see :func:`~biomodal.datasets.mimic_iv_ecg.subject_fold`) and split.

    Fold 0 is ``"test"``, fold 1 ``"validate"``, the others ``"train"`` (80/10/10 with 10 folds).
    """
    if int(n_folds) < 3:
        raise DataError(f"n_folds must be >= 3 (fold 0 test, 1 validate, the rest train), got {n_folds}")
    fold = subject_fold(np.asarray(ids), int(n_folds))
    split = np.where(fold == 0, "test", np.where(fold == 1, "validate", "train")).astype(object)
    return fold, split


def check_patient_splits(df: pd.DataFrame, subject: str, source: str | os.PathLike) -> None:
    """Raise when a patient (``df[subject]``) has images in more than one split."""
    n = df.groupby(subject)["split"].nunique()
    leak = n[n > 1]
    if len(leak):
        first = leak.index[0]
        where = sorted(df.loc[df[subject] == first, "split"].unique())
        raise DataError(
            f"{source}: {len(leak)} patient(s) are in more than one split (first: {subject} {first} in "
            f"{where}); training on such a split leaks patients. Use split='patient_hash'"
        )


def select_views(df: pd.DataFrame, views: Sequence[str] | str | None) -> pd.DataFrame:
    """Keep rows whose ``view`` is in ``views`` (case-insensitive); ``None`` keeps all."""
    if views is None:
        return df
    want = {views.upper()} if isinstance(views, str) else {str(v).upper() for v in views}
    return df[df["view"].str.upper().isin(want)]


def _term_matches(term: str, pattern: str) -> bool:
    head, *quals = (s.strip().lower() for s in term.split("/"))
    p_head, *p_quals = (s.strip().lower() for s in pattern.split("/"))
    return head == p_head and all(q in quals for q in p_quals)


def mesh_conditions(major: Sequence[str]) -> dict[str, float]:
    """Condition flags (1.0/0.0) of :data:`IU_CONDITIONS` from a report's MeSH major terms.

    Returns NaN for every flag when the report is not indexed (no major term, or only
    ``"No Indexing"``): absence of a term there says nothing.
    """
    terms = [t for t in major if t.strip()]
    if not terms or all(t.strip().lower() in _NOT_INDEXED for t in terms):
        return dict.fromkeys(IU_CONDITIONS, np.nan)
    return {
        k: float(any(_term_matches(t, p) for t in terms for p in pats)) for k, pats in IU_CONDITIONS.items()
    }


def write_index(df: pd.DataFrame, out: str | os.PathLike, name: str) -> Path:
    """Write ``df`` to ``out/name`` atomically (a reader sees the old index or the new one)."""
    path = Path(out) / name
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
    return path
