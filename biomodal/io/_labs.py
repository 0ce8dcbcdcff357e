"""Tabular clinical values (labs, vitals, demographics) -> :class:`LabTable` with NaN for missing.

Every column must be numeric (or declared categorical with a code table); a column
holding text fails with the file, the column and the first offending row, instead of
silently becoming NaN. Standardisation (fitted on training rows only) and missing-value
indicators are in :class:`biomodal.pp.LabStandardizer`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from biomodal.errors import DataError, ReaderError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["LabTable", "labs_from_frame", "read_labs"]


@dataclass(repr=False)
class LabTable:
    """Rows of numeric clinical values with NaN where missing.

    Parameters
    ----------
    values
        ``(n_rows, n_features)`` float32, NaN where missing.
    features
        Column names, one per feature.
    ids
        Row ids (the id column, or the row index).
    path
        The file read, if any.
    """

    values: np.ndarray
    features: Sequence[str]
    ids: np.ndarray
    path: str | None = None

    def __post_init__(self) -> None:
        self.values = np.asarray(self.values, dtype=np.float32)
        self.features = tuple(str(f) for f in self.features)
        self.ids = np.asarray(self.ids)
        if self.values.ndim != 2 or self.values.shape != (len(self.ids), len(self.features)):
            raise DataError(
                f"{self.path or 'LabTable'}: values of shape {self.values.shape} for {len(self.ids)} ids "
                f"and {len(self.features)} features"
            )

    @property
    def missing(self) -> np.ndarray:
        """Bool ``(n_rows, n_features)``: ``True`` where the value is missing."""
        return np.isnan(self.values)

    def subset(self, rows: Sequence[int] | np.ndarray) -> LabTable:
        """Return the rows at positions ``rows`` (or a boolean mask)."""
        rows = np.asarray(rows)
        return LabTable(self.values[rows], self.features, self.ids[rows], self.path)

    def to_frame(self) -> pd.DataFrame:
        """Return a pandas DataFrame indexed by ``ids``."""
        import pandas as pd

        return pd.DataFrame(self.values, index=self.ids, columns=list(self.features))

    def __len__(self) -> int:
        return int(self.values.shape[0])

    def __repr__(self) -> str:
        miss = self.missing.mean(axis=0) if len(self) else np.zeros(len(self.features))
        parts = ", ".join(f"{f} {m:.0%}" for f, m in zip(self.features[:8], miss[:8], strict=False))
        more = ", ..." if len(self.features) > 8 else ""
        return f"LabTable({len(self)} rows x {len(self.features)} features; missing: {parts}{more})"


def _plain(x: Any) -> Any:
    """Return a numpy scalar as the Python value (so messages show ``1``, not ``np.int64(1)``)."""
    return x.item() if isinstance(x, np.generic) else x


def _numeric(col: pd.Series, name: str, source: str, ids: Sequence[Any]) -> np.ndarray:
    import pandas as pd

    if pd.api.types.is_bool_dtype(col):
        return col.astype(np.float64).to_numpy()
    num = pd.to_numeric(col, errors="coerce")
    bad = num.isna() & col.notna() & (col.astype(str).str.strip() != "")
    if bad.any():
        pos = np.flatnonzero(bad.to_numpy())
        first = pos[0]
        raise DataError(
            f"{source}: column {name!r} is not numeric: row {_plain(ids[first])!r} holds {col.iloc[first]!r}"
            f" ({len(pos)} such row(s)); declare it with categorical={{{name!r}: {{value: code}}}} "
            "or leave it out with columns="
        )
    return num.to_numpy(dtype=np.float64)


def labs_from_frame(
    frame: pd.DataFrame,
    *,
    columns: Sequence[str] | None = None,
    id_column: str | None = None,
    categorical: Mapping[str, Mapping[Any, float]] | None = None,
    source: str | os.PathLike = "table",
) -> LabTable:
    """Turn a DataFrame into a :class:`LabTable` (see :func:`read_labs` for the parameters).

    Raises
    ------
    DataError
        A missing or non-numeric column, an undeclared category, duplicated ids.
    """
    src = os.fspath(source)
    cats = dict(categorical or {})
    if id_column is not None:
        if id_column not in frame.columns:
            raise DataError(f"{src}: no id column {id_column!r} (columns: {list(frame.columns)})")
        ids = frame[id_column].to_numpy()
        rest = [c for c in frame.columns if c != id_column]
    else:
        ids = frame.index.to_numpy()
        rest = list(frame.columns)
    cols = list(columns) if columns is not None else rest
    absent = [c for c in cols if c not in frame.columns]
    if absent:
        raise DataError(f"{src}: no column(s) {absent} (columns: {list(frame.columns)})")
    if len(set(map(str, ids))) != len(ids):
        raise DataError(f"{src}: duplicated row ids in {id_column or 'the index'}")
    out = np.empty((len(frame), len(cols)), dtype=np.float64)
    for j, c in enumerate(cols):
        col = frame[c]
        if c in cats:
            table = cats[c]
            unknown = sorted({str(v) for v in col.dropna() if v not in table})
            if unknown:
                raise DataError(
                    f"{src}: column {c!r} holds {unknown[:5]} not in its categories {list(table)}"
                )
            out[:, j] = [float(table[v]) if v in table else np.nan for v in col.where(col.notna(), None)]
        else:
            out[:, j] = _numeric(col, c, src, ids)
    return LabTable(out, cols, ids, path=src if src != "table" else None)


def read_labs(
    path: str | os.PathLike,
    *,
    columns: Sequence[str] | None = None,
    id_column: str | None = None,
    categorical: Mapping[str, Mapping[Any, float]] | None = None,
    sep: str | None = None,
) -> LabTable:
    """Read a table of clinical values (CSV, TSV or Parquet), one row per subject or study.

    Parameters
    ----------
    path
        ``.csv``, ``.tsv``/``.tab``/``.txt`` (tab separated), ``.parquet``; ``.gz`` allowed for text.
    columns
        Feature columns to keep (default every column but ``id_column``).
    id_column
        Column of row ids (default: the row number).
    categorical
        Code tables for non-numeric columns, e.g. ``{"sex": {"M": 0, "F": 1}}``.
    sep
        Field separator (default from the suffix).

    Returns
    -------
    LabTable
        ``values`` float32 with NaN where missing (empty cells, ``NA``, ``NaN``).

    Raises
    ------
    ReaderError
        The file cannot be parsed.
    DataError
        A non-numeric column (the message names the file, the column and the first bad row),
        an absent column, an undeclared category.
    """
    import pandas as pd

    p = Path(path)
    name = p.name.lower().removesuffix(".gz")
    try:
        if name.endswith(".parquet"):
            frame = pd.read_parquet(p)
        else:
            if sep is None:
                sep = "\t" if name.endswith((".tsv", ".tab", ".txt")) else ","
            frame = pd.read_csv(p, sep=sep)
    except FileNotFoundError as exc:
        raise ReaderError(p, "no such file") from exc
    except (OSError, ValueError, pd.errors.ParserError, ImportError) as exc:
        raise ReaderError(p, f"cannot parse the table ({type(exc).__name__}: {exc})") from exc
    return labs_from_frame(frame, columns=columns, id_column=id_column, categorical=categorical, source=p)
