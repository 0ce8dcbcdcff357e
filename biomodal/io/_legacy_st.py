"""Legacy Spatial Transcriptomics (Ståhl et al. 2016 arrays; her2st layout) reader.

Public entry point: :func:`biomodal.io.read_legacy_st`.
"""

from __future__ import annotations

import gzip
import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from biomodal.errors import DataError, ReaderError
from biomodal.io._spatial_common import (
    build_anndata,
    check_counts,
    estimate_mpp_from_spots,
    image_size,
    log,
    make_unique,
    require_file,
)

if TYPE_CHECKING:  # pragma: no cover
    import anndata as ad
    import pandas as pd

#: Legacy ST arrays: 100 um spots at 200 um centre-to-centre.
LEGACY_SPOT_DIAMETER_UM = 100.0
LEGACY_SPOT_PITCH_UM = 200.0

_SPOT_NAME = re.compile(r"^\s*(-?\d+(?:\.\d+)?)x(-?\d+(?:\.\d+)?)\s*$")


def _parse_spot_names(names: pd.Index) -> np.ndarray | None:
    """``"XxY"`` names -> ``(n, 2)`` float array, or ``None`` when any name does not parse."""
    out = np.empty((len(names), 2), dtype=np.float64)
    for i, n in enumerate(names):
        m = _SPOT_NAME.match(str(n))
        if m is None:
            return None
        out[i] = float(m.group(1)), float(m.group(2))
    return out


def _read_counts(path: Path) -> tuple[pd.DataFrame, np.ndarray]:
    import pandas as pd

    try:
        # Read the header separately: pandas would silently rename duplicated gene
        # columns ("A", "A.1"); we want them seen and made unique explicitly.
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as fh:
            names = fh.readline().rstrip("\r\n").split("\t")
        df = pd.read_csv(path, sep="\t", header=None, skiprows=1, index_col=0, low_memory=False)
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{path}: empty counts table (no spot rows)") from exc
    except (OSError, ValueError, EOFError) as exc:
        raise ReaderError(path, f"cannot read the counts table: {exc}") from exc
    if len(names) == df.shape[1] + 1:
        names = names[1:]
    if len(names) != df.shape[1]:
        raise ReaderError(path, f"header has {len(names)} names but rows have {df.shape[1]} values")
    df.columns = names
    df.index.name = None
    if df.shape[0] == 0 or df.shape[1] == 0:
        raise DataError(f"{path}: empty counts table ({df.shape[0]} rows x {df.shape[1]} columns)")
    xy = _parse_spot_names(df.index)
    if xy is None:
        xy_t = _parse_spot_names(df.columns)
        if xy_t is None:
            raise ReaderError(
                path,
                f"neither rows nor columns are named 'XxY' array coordinates (first row: {df.index[0]!r})",
            )
        log.info("%s: genes are rows and spots columns; transposing", path)
        df, xy = df.T, xy_t
    non_numeric = [c for c, t in df.dtypes.items() if not np.issubdtype(t, np.number)]
    if non_numeric:
        raise DataError(f"{path}: non-numeric count column(s) {non_numeric[:5]}")
    return df, xy


def _read_spots(path: Path) -> pd.DataFrame:
    import pandas as pd

    try:
        spots = pd.read_csv(path, sep=None, engine="python")
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise ReaderError(path, f"cannot read the spot table: {exc}") from exc
    missing = [c for c in ("x", "y", "pixel_x", "pixel_y") if c not in spots.columns]
    if missing:
        raise ReaderError(path, f"missing column(s) {missing}; expected x, y, pixel_x, pixel_y[, selected]")
    cols = ["x", "y", "pixel_x", "pixel_y"]
    if spots[cols].isna().to_numpy().any():
        raise DataError(f"{path}: NaN in columns {cols}")
    return spots


#: file beside the image giving its scale against the spot table's pixel coordinates
SCALEFACTORS_FILE = "scalefactors.json"


def image_scale(image: Path, scale_factor: float | None) -> tuple[float, str]:
    """Image pixels per spot-table pixel, and where the value came from.

    ``scale_factor`` wins; otherwise ``scalefactors.json`` beside the image is read (its
    ``image_scale``, as the her2st viewer's downscaled images record it); otherwise 1.

    Raises
    ------
    ReaderError
        ``scalefactors.json`` is unreadable or lacks a positive ``image_scale``.
    """
    if scale_factor is not None:
        if not float(scale_factor) > 0:
            raise DataError(f"scale_factor must be > 0, got {scale_factor}")
        return float(scale_factor), "user"
    path = image.parent / SCALEFACTORS_FILE
    if not path.is_file():
        return 1.0, "none"
    try:
        factors = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ReaderError(path, f"cannot read the scale factors: {exc}") from exc
    value = factors.get("image_scale") if isinstance(factors, dict) else None
    if not isinstance(value, int | float) or not value > 0:
        keys = sorted(factors) if isinstance(factors, dict) else type(factors).__name__
        raise ReaderError(
            path, f"expected a positive 'image_scale' (image px per spot-file px); found keys {keys}"
        )
    log.info("%s: image_scale %.6g from %s", image, value, path)
    return float(value), str(path)


def read_legacy_st(
    counts: str | os.PathLike,
    spots: str | os.PathLike,
    image: str | os.PathLike,
    *,
    sample: str | None = None,
    donor: str | None = None,
    batch: str | None = None,
    mpp: float | None = None,
    scale_factor: float | None = None,
) -> ad.AnnData:
    """Read a legacy Spatial Transcriptomics section (her2st / Ståhl layout).

    Counts rows are joined to spots by *rounded* array coordinate: the count row
    ``"10x21"`` matches the spot whose ``x, y`` columns round to ``(10, 21)``. Only
    spots with ``selected == 1`` are kept (when the column exists). Every drop is
    logged with its count and reason; count rows matching no spot at all are a
    warning, and a :class:`DataError` when none match.

    Parameters
    ----------
    counts
        Tab-separated (optionally gzipped) table, spots x genes, rows named ``"XxY"``
        (genes x spots is detected and transposed).
    spots
        Spot table (tab or comma separated) with ``x, y, pixel_x, pixel_y`` and
        optionally ``selected``; pixel coordinates are in ``image`` pixels.
    image
        The H&E image. Spot pixel coordinates are multiplied by the scale factor to land on it
        (1 when the image is the one the spot table was made on).
    sample, donor, batch
        ``obs`` labels; ``sample`` defaults to the counts file's folder name.
    mpp
        Microns per pixel of ``image``; estimated from the 200 um spot pitch (in ``image``
        pixels, after scaling) when omitted.
    scale_factor
        ``image`` pixels per spot-table pixel, for an image resized after the spots were
        located (as Visium's ``scalefactors_json.json`` does for its hires/lowres images).
        Default: ``image_scale`` of a ``scalefactors.json`` beside the image, else 1.

    Returns
    -------
    anndata.AnnData
        Biomodal spatial convention; ``obs_names`` are the ``"XxY"`` spot names,
        ``obs["array_col"]`` = x and ``obs["array_row"]`` = y; ``obsm["spatial"]`` in ``image``
        pixels; ``uns["spatial"]`` records ``image_scale`` and ``image_scale_source``.

    Raises
    ------
    ReaderError
        A file is missing, unreadable or lacks required columns.
    DataError
        Negative/NaN counts, duplicated array positions, no matching spot, empty section.
    """
    import pandas as pd
    import scipy.sparse as sp

    counts_path = require_file(counts, "legacy ST counts table")
    spots_path = require_file(spots, "legacy ST spot table")
    image_path = require_file(image, "legacy ST H&E image")
    wh = image_size(image_path)
    scale, scale_source = image_scale(image_path, scale_factor)

    df, cxy = _read_counts(counts_path)
    tab = _read_spots(spots_path)
    ckey = np.round(cxy).astype(np.int64)
    skey = np.round(tab[["x", "y"]].to_numpy(dtype=np.float64)).astype(np.int64)
    ck = pd.MultiIndex.from_arrays([ckey[:, 0], ckey[:, 1]])
    sk = pd.MultiIndex.from_arrays([skey[:, 0], skey[:, 1]])
    if ck.duplicated().any():
        raise DataError(
            f"{counts_path}: count rows {df.index[ck.duplicated()][:5].tolist()} round to duplicated spots"
        )
    if sk.duplicated().any():
        raise DataError(f"{spots_path}: duplicated array positions {sk[sk.duplicated()][:5].tolist()}")

    selected = tab["selected"].to_numpy() == 1 if "selected" in tab.columns else np.ones(len(tab), bool)
    pos = sk.get_indexer(ck)  # spot row of each count row, -1 if none
    no_spot = pos < 0
    if no_spot.all():
        raise DataError(
            f"{counts_path}: none of {len(ck)} count rows (e.g. {df.index[0]!r}) matches an array "
            f"position in {spots_path}; are the two files from the same section?"
        )
    if no_spot.any():
        log.warning(
            "%s: dropping %d of %d count rows that match no spot in %s (e.g. %s)",
            counts_path,
            no_spot.sum(),
            len(ck),
            spots_path,
            ", ".join(map(str, df.index[no_spot][:5])),
        )
    unsel = ~no_spot & ~selected[np.where(no_spot, 0, pos)]
    if unsel.any():
        log.info(
            "%s: dropping %d count rows whose spot is not selected (selected != 1)", counts_path, unsel.sum()
        )
    keep = ~no_spot & ~unsel
    n_sel_without = int(selected.sum() - keep.sum())
    if n_sel_without > 0:
        log.info("%s: %d selected spots have no count row in %s", spots_path, n_sel_without, counts_path)

    values = df.to_numpy(dtype=np.float64)
    is_int = check_counts(values, counts_path)
    X = sp.csr_matrix(values[keep].astype(np.float32))
    rows = tab.iloc[pos[keep]]
    coords = rows[["pixel_x", "pixel_y"]].to_numpy(dtype=np.float64) * scale

    if mpp is None:
        mpp_val = estimate_mpp_from_spots(
            tab[["pixel_x", "pixel_y"]].to_numpy(dtype=np.float64) * scale,
            skey,
            pitch_um=LEGACY_SPOT_PITCH_UM,
        )
        log.info(
            "%s: estimated %.4f um/px from the %.0f um spot pitch", image_path, mpp_val, LEGACY_SPOT_PITCH_UM
        )
        source = "estimated"
    else:
        mpp_val, source = float(mpp), "user"
    if not mpp_val > 0:
        raise DataError(f"mpp must be > 0, got {mpp_val}")

    var = pd.DataFrame(index=pd.Index(make_unique(df.columns.tolist(), counts_path)))
    obs = pd.DataFrame(
        {"array_row": ckey[keep, 1], "array_col": ckey[keep, 0]},
        index=pd.Index(df.index[keep].astype(str)),
    )
    uns = {
        "slide_path": str(image_path),
        "mpp": float(mpp_val),
        "mpp_source": source,
        "image_scale": scale,
        "image_scale_source": scale_source,
        "spot_diameter_um": LEGACY_SPOT_DIAMETER_UM,
        "spot_pitch_um": LEGACY_SPOT_PITCH_UM,
        "technology": "legacy_st",
        "source_path": str(counts_path),
    }
    return build_anndata(
        X,
        obs=obs,
        var=var,
        coords=coords,
        uns_spatial=uns,
        sample=sample if sample is not None else counts_path.parent.name,
        donor=donor,
        batch=batch,
        source=counts_path,
        image_wh=wh,
        is_integer=is_int,
        coords_source=spots_path,
    )
