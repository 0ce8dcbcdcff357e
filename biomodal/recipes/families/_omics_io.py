"""Reading the tables of an omics recipe: one matrix per modality, a label table, an obs table.

Rows are subjects. A table carries subject ids when it has an id column (CSV/TSV: a first
column that is not numeric; parquet: a non-default index or ``id_column``; h5ad: ``obs_names``);
otherwise subjects are matched by row order, as in MOGONET's files (``1_tr.csv``: no header, no
ids). CSV/TSV headers are detected (a first row with a non-numeric cell is a header) unless
``header`` says otherwise. Every error names the file and the recipe key it came from.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from biomodal.errors import DataError, ReaderError, UnsupportedFormatError

__all__ = ["Table", "read_labels", "read_obs", "read_table"]

_TEXT = (".csv", ".tsv", ".txt", ".csv.gz", ".tsv.gz", ".txt.gz")
_SUFFIXES = (*_TEXT, ".h5ad", ".parquet", ".pq")


@dataclass
class Table:
    """One table read from disk.

    Attributes
    ----------
    values
        ``(n_rows, n_columns)`` array (float64 for matrices; object/str for labels and obs).
    columns
        Column (feature) names.
    ids
        Subject id of every row, or ``None`` when the file has none (match by row order).
    path, where
        The file, and the recipe key that named it (for messages).
    """

    values: Any
    columns: list[str]
    ids: list[str] | None
    path: Path
    where: str

    def __repr__(self) -> str:
        ids = "ids" if self.ids is not None else "row order"
        return f"Table({self.where}: {self.path.name}, {len(self.values)} x {len(self.columns)}, {ids})"


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for suf in sorted(_SUFFIXES, key=len, reverse=True):
        if name.endswith(suf):
            return suf
    return path.suffix.lower()


def _is_number(text: Any) -> bool:
    if text is None:
        return True
    s = str(text).strip()
    if s == "" or s.lower() in ("nan", "na", "null", "none"):
        return True
    try:
        float(s)
    except ValueError:
        return False
    return True


def _check_file(path: Path, where: str) -> str:
    if not path.is_file():
        raise ReaderError(path, f"file not found (named by {where})")
    suf = _suffix(path)
    if suf not in _SUFFIXES:
        raise UnsupportedFormatError(
            path, f"{where}: unsupported table format {suf!r}; expected one of {', '.join(_SUFFIXES)}"
        )
    return suf


def _read_text(path: Path, suf: str, header: bool | None, where: str) -> tuple[Any, list[str] | None]:
    """Cells as strings (DataFrame) and the header row (``None`` when the file has none)."""
    import pandas as pd

    sep = "," if suf.startswith(".csv") else "\t"
    try:
        raw = pd.read_csv(path, sep=sep, header=None, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ReaderError(path, f"{where}: not a readable {sep!r}-separated table ({exc})") from exc
    raw = raw.loc[:, ~(raw == "").all(axis=0)]  # a trailing separator leaves an empty column
    if raw.empty:
        raise DataError(f"{path}: {where}: the table is empty")
    if header is None:  # a first row with a non-numeric cell (other than the id corner) is a header
        if raw.shape[1] == 1:
            header = not _is_number(raw.iloc[0, 0]) and all(_is_number(v) for v in raw.iloc[1:, 0])
        else:
            header = not all(_is_number(c) for c in raw.iloc[0, 1:])
    names = None
    if header:
        names = [str(c) for c in raw.iloc[0]]
        raw = raw.iloc[1:].reset_index(drop=True)
    raw.columns = range(raw.shape[1])
    return raw, names


def _split_ids(
    raw: Any, names: list[str] | None, id_column: str | int | bool | None, path: Path, where: str
) -> tuple[Any, list[str] | None, list[str] | None]:
    """Separate the id column (``"auto"``: the first column when it is not numeric)."""
    col: int | None
    if id_column is False or id_column is None:
        col = None
    elif id_column == "auto":
        first = raw.iloc[:, 0]
        col = 0 if raw.shape[1] > 1 and not all(_is_number(v) for v in first) else None
    elif isinstance(id_column, int):
        col = id_column
    else:
        if names is None or str(id_column) not in names:
            raise DataError(f"{path}: {where}: id column {id_column!r} not found; columns: {names}")
        col = names.index(str(id_column))
    if col is None:
        return raw, names, None
    ids = [str(v).strip() for v in raw.iloc[:, col]]
    keep = [c for c in range(raw.shape[1]) if c != col]
    rest = raw.iloc[:, keep]
    rest.columns = range(rest.shape[1])
    return rest, ([names[c] for c in keep] if names else None), ids


def _to_float(raw: Any, names: list[str], path: Path, where: str) -> np.ndarray:
    import pandas as pd

    try:  # fast path: every cell parses as a number
        return raw.to_numpy(dtype=np.float64)
    except (TypeError, ValueError):
        pass
    cells = raw.astype(str).apply(lambda col: col.str.strip())
    empty = cells.isin(["", "NA", "NaN", "nan", "na", "null", "None"])
    out = cells.mask(empty).apply(pd.to_numeric, errors="coerce")
    bad = out.isna().to_numpy() & ~empty.to_numpy()
    if bool(bad.any()):
        r, c = map(int, np.argwhere(bad)[0])
        raise DataError(
            f"{path}: {where}: cell (row {r + 1}, column {names[c]!r}) is {cells.iat[r, c]!r}, "
            "expected a number (rows are subjects, columns features)"
        )
    return out.to_numpy(dtype=np.float64)


def _features(path: Path, feature_file: str | None, n: int, names: list[str] | None, where: str) -> list[str]:
    if feature_file is not None:
        fpath = Path(feature_file)
        if not fpath.is_file():
            raise ReaderError(fpath, f"feature-name file not found (named by {where}.features)")
        listed = [ln.strip().split(",")[0] for ln in fpath.read_text().splitlines() if ln.strip()]
        if len(listed) != n:
            raise DataError(
                f"{fpath}: {where}.features lists {len(listed)} names but {path.name} has {n} columns"
            )
        return listed
    if names is not None:
        return names
    return [f"{path.stem.split('.')[0]}:{j}" for j in range(n)]


def _check_unique(values: list[str], what: str, path: Path, where: str) -> None:
    seen: set[str] = set()
    dup = sorted({v for v in values if v in seen or seen.add(v)})  # type: ignore[func-returns-value]
    if dup:
        raise DataError(f"{path}: {where}: duplicated {what} {dup[:5]}{' ...' if len(dup) > 5 else ''}")


def read_table(
    path: str | Path,
    *,
    where: str,
    features: str | None = None,
    header: bool | None = None,
    id_column: str | int | bool | None = "auto",
    transpose: bool = False,
    layer: str | None = None,
) -> Table:
    """Read one numeric matrix (rows = subjects, columns = features).

    Parameters
    ----------
    path
        CSV/TSV (optionally gzipped), ``.h5ad`` (``X`` or ``layers[layer]``; ids are
        ``obs_names``, features ``var_names``) or parquet.
    where
        The recipe key naming the file (``data.modalities.mrna.train``), for messages.
    features
        File of feature names, one per line (MOGONET's ``*_featname.csv``); wins over a header.
    header
        Whether a CSV/TSV has a header row (``None``: detect).
    id_column
        ``"auto"`` (first column when not numeric), a column name or position, or ``None``.
    transpose
        The file stores features as rows and subjects as columns.
    layer
        AnnData layer to read instead of ``X``.

    Returns
    -------
    Table
        Float values (NaN where a cell is empty), feature names and subject ids (or ``None``).
    """
    path = Path(path)
    suf = _check_file(path, where)
    ids: list[str] | None
    if suf == ".h5ad":
        import anndata as ad

        adata = ad.read_h5ad(path)
        x = adata.layers[layer] if layer else adata.X
        x = x.toarray() if hasattr(x, "toarray") else np.asarray(x)
        values, names, ids = (
            np.asarray(x, np.float64),
            [str(v) for v in adata.var_names],
            list(adata.obs_names),
        )
        if transpose:
            values, names, ids = values.T, ids, names
    else:
        if suf in (".parquet", ".pq"):
            import pandas as pd

            frame = pd.read_parquet(path)
            if transpose:
                frame = frame.T
            ids = None
            if id_column not in ("auto", None, False):
                if str(id_column) not in frame.columns:
                    raise DataError(
                        f"{path}: {where}: id column {id_column!r} not in {list(frame.columns)[:8]}"
                    )
                frame = frame.set_index(str(id_column))
            if not isinstance(frame.index, pd.RangeIndex):
                ids = [str(v) for v in frame.index]
            names = [str(c) for c in frame.columns]
            raw = frame.reset_index(drop=True).astype(object).where(frame.notna().to_numpy(), "")
            raw.columns = range(raw.shape[1])
        else:
            raw, names = _read_text(path, suf, header, where)
            if transpose:
                raw, names = _transpose_text(raw, names)
            raw, names, ids = _split_ids(raw, names, id_column, path, where)
        cols = names or [str(j) for j in range(raw.shape[1])]
        values = _to_float(raw, cols, path, where)
    names = _features(path, features, values.shape[1], names, where)
    _check_unique(names, "feature names", path, where)
    if ids is not None:
        _check_unique(ids, "subject ids", path, where)
    if values.shape[0] == 0 or values.shape[1] == 0:
        raise DataError(f"{path}: {where}: the table has shape {values.shape}; expected subjects x features")
    return Table(values, names, ids, path, where)


def _transpose_text(raw: Any, names: list[str] | None) -> tuple[Any, list[str] | None]:
    """Features as rows: the first column names features, the header names subjects."""
    feats = list(raw.iloc[:, 0])
    body = raw.iloc[:, 1:].T.reset_index(drop=True)
    body.columns = range(body.shape[1])
    subjects = names[1:] if names else None
    if subjects is not None:  # put the subject ids back as a first column for _split_ids
        body.insert(0, "id", subjects)
        body.columns = range(body.shape[1])
        return body, ["id", *map(str, feats)]
    return body, [str(f) for f in feats]


def _clean_label(v: Any) -> str:
    s = str(v).strip()
    if s.lower() in ("", "nan", "na", "none", "null"):
        return ""
    try:
        f = float(s)
    except ValueError:
        return s
    return str(int(f)) if f.is_integer() else s


def read_labels(
    path: str | Path,
    *,
    where: str,
    column: str | None = None,
    header: bool | None = None,
    id_column: str | int | bool | None = "auto",
) -> Table:
    """Read per-subject labels: one column (row order) or id + label columns, with or without header.

    Numeric labels are normalised (``"1.000e+00"`` -> ``"1"``); empty cells become ``""``
    (unlabelled). With a header and several label columns, ``column`` picks one. ``header=None``
    detects a header: a first-row label cell that is not numeric and appears nowhere else in
    its column (class names repeat, a column title does not).

    Returns
    -------
    Table
        ``values`` is a ``(n, 1)`` object array of label strings.
    """
    path = Path(path)
    suf = _check_file(path, where)
    if suf == ".h5ad":
        import anndata as ad

        obs = ad.read_h5ad(path, backed="r").obs
        if column is None or column not in obs:
            raise DataError(f"{path}: {where}.column must name an obs column; have {list(obs.columns)}")
        vals, ids = list(obs[column]), [str(v) for v in obs.index]
    elif suf in (".parquet", ".pq"):
        import pandas as pd

        frame = pd.read_parquet(path)
        col = column or frame.columns[-1]
        if col not in frame:
            raise DataError(f"{path}: {where}.column {col!r} not in {list(frame.columns)}")
        vals = list(frame[col])
        ids = None if isinstance(frame.index, pd.RangeIndex) else [str(v) for v in frame.index]
    else:
        if header is None and column is not None:
            header = True
        if header is None:  # a header cell is not numeric and, unlike a class, does not repeat
            first, _ = _read_text(path, suf, False, where)
            cell = first.iloc[0, -1]
            header = not _is_number(cell) and cell not in set(first.iloc[1:, -1])
        raw, names = _read_text(path, suf, header, where)
        raw, names, ids = _split_ids(raw, names, id_column, path, where)
        if column is not None:
            if names is None or column not in names:
                raise DataError(f"{path}: {where}.column {column!r} not in the header {names}")
            vals = list(raw.iloc[:, names.index(column)])
        elif raw.shape[1] == 1:
            vals = list(raw.iloc[:, 0])
        else:
            raise DataError(f"{path}: {where}: {raw.shape[1]} label columns {names}; set {where}.column")
    labels = np.array([_clean_label(v) for v in vals], dtype=object)[:, None]
    if ids is not None:
        _check_unique(ids, "subject ids", path, where)
    return Table(labels, [column or "label"], ids, path, where)


def read_obs(path: str | Path, *, where: str, id_column: str | int | bool | None = "auto") -> Any:
    """Read a per-subject metadata table with a header (survival times, events, covariates).

    Returns
    -------
    tuple
        ``(DataFrame, ids)``: columns converted to numbers where every value is numeric;
        ``ids`` is ``None`` when the file has no id column (match by row order).
    """
    import pandas as pd

    path = Path(path)
    suf = _check_file(path, where)
    if suf == ".h5ad":
        import anndata as ad

        obs = ad.read_h5ad(path, backed="r").obs.copy()
        ids: list[str] | None = [str(v) for v in obs.index]
        frame = obs.reset_index(drop=True)
    elif suf in (".parquet", ".pq"):
        frame = pd.read_parquet(path)
        if id_column not in ("auto", None, False):
            frame = frame.set_index(str(id_column))
        ids = None if isinstance(frame.index, pd.RangeIndex) else [str(v) for v in frame.index]
        frame = frame.reset_index(drop=True)
    else:
        raw, names = _read_text(path, suf, True, where)
        raw, names, ids = _split_ids(raw, names, id_column, path, where)
        frame = pd.DataFrame(raw.to_numpy(), columns=names)
        for col in frame.columns:
            num = pd.to_numeric(frame[col].replace("", np.nan), errors="coerce")
            if bool((num.notna() | (frame[col] == "")).all()):
                frame[col] = num
    if ids is not None:
        _check_unique(ids, "subject ids", path, where)
    frame.columns = [str(c) for c in frame.columns]
    return frame, ids
