"""10x Visium (Space Ranger output folder) reader; public entry point is :func:`biomodal.io.read_visium`."""

from __future__ import annotations

import json
import os
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
    read_10x_h5,
    require_file,
)

if TYPE_CHECKING:  # pragma: no cover
    import anndata as ad
    import pandas as pd

#: Physical diameter of a Visium capture spot, and centre-to-centre pitch (microns).
VISIUM_SPOT_DIAMETER_UM = 55.0
VISIUM_SPOT_PITCH_UM = 100.0
#: Space Ranger's ``spot_diameter_fullres`` spans a *theoretical 65 um* spot (10x
#: scalefactors documentation), not the 55 um capture area; 55 would overstate the
#: pixel density by ~18 % (checked against the 100 um pitch on real data).
SPACERANGER_SPOT_DIAMETER_REF_UM = 65.0

_POSITION_COLUMNS = [
    "barcode",
    "in_tissue",
    "array_row",
    "array_col",
    "pxl_row_in_fullres",
    "pxl_col_in_fullres",
]


def _read_positions(spatial_dir: Path) -> tuple[pd.DataFrame, Path]:
    import pandas as pd

    v2 = spatial_dir / "tissue_positions.csv"  # Space Ranger >= 2.0: with a header
    v1 = spatial_dir / "tissue_positions_list.csv"  # Space Ranger 1.x: no header
    if v2.exists():
        pos, path = pd.read_csv(v2), v2
        missing = [c for c in _POSITION_COLUMNS if c not in pos.columns]
        if missing:
            raise ReaderError(v2, f"missing column(s) {missing}; expected {_POSITION_COLUMNS}")
    elif v1.exists():
        pos, path = pd.read_csv(v1, header=None), v1
        if pos.shape[1] != 6:
            raise ReaderError(v1, f"expected 6 columns {_POSITION_COLUMNS}, found {pos.shape[1]}")
        pos.columns = _POSITION_COLUMNS
    else:
        raise ReaderError(
            v2, "spot positions not found (neither tissue_positions.csv nor tissue_positions_list.csv)"
        )
    pos["barcode"] = pos["barcode"].astype(str)
    if pos["barcode"].duplicated().any():
        raise DataError(
            f"{path}: duplicated barcodes {pos['barcode'][pos['barcode'].duplicated()].head().tolist()}"
        )
    return pos.set_index("barcode"), path


def read_visium(
    path: str | os.PathLike,
    *,
    sample: str | None = None,
    donor: str | None = None,
    batch: str | None = None,
    image: str | os.PathLike = "hires",
    count_file: str = "filtered_feature_bc_matrix.h5",
    mpp: float | None = None,
    in_tissue_only: bool = True,
) -> ad.AnnData:
    """Read a Space Ranger output folder into the biomodal spatial AnnData convention.

    Parameters
    ----------
    path
        Space Ranger ``outs`` folder holding ``count_file`` and ``spatial/``
        (``tissue_positions.csv`` or ``tissue_positions_list.csv``, ``scalefactors_json.json``).
    sample, donor, batch
        Labels written to ``obs``; ``sample`` defaults to the folder name, ``donor``
        and ``batch`` to ``sample``.
    image
        ``"hires"`` or ``"lowres"`` (the PNGs in ``spatial/``; coordinates are scaled by
        ``tissue_<image>_scalef``) or the path of the full-resolution image (scale 1).
    count_file
        Matrix file inside ``path`` (``filtered_feature_bc_matrix.h5`` or ``raw_feature_bc_matrix.h5``).
    mpp
        Microns per pixel *of the chosen image*; by default derived from
        ``spot_diameter_fullres`` (a 65 um reference spot in full-resolution pixels).
    in_tissue_only
        Keep only spots flagged ``in_tissue`` (the dropped number is logged).

    Returns
    -------
    anndata.AnnData
        Raw counts in ``X`` and ``layers["counts"]``, ``obsm["spatial"]`` in pixels of
        the chosen image, ``uns["spatial"]`` with ``slide_path``, ``mpp``, ``scalefactor``...

    Raises
    ------
    ReaderError
        A required file is missing or unreadable.
    DataError
        Invalid counts, no barcode with a position, empty section.
    """
    import pandas as pd

    folder = require_file(path, "Space Ranger output folder")
    counts_path = require_file(folder / count_file, "Visium count matrix")
    spatial_dir = folder / "spatial"
    sf_path = require_file(spatial_dir / "scalefactors_json.json", "Visium scale factors")
    try:
        scalefactors = json.loads(sf_path.read_text())
    except ValueError as exc:
        raise ReaderError(sf_path, f"invalid JSON: {exc}") from exc
    pos, pos_path = _read_positions(spatial_dir)

    if str(image) in ("hires", "lowres"):
        key = f"tissue_{image}_scalef"
        if key not in scalefactors:
            raise ReaderError(sf_path, f"missing {key!r} (needed for image={image!r})")
        scale = float(scalefactors[key])
        slide = require_file(spatial_dir / f"tissue_{image}_image.png", f"Visium {image} image")
        image_kind = str(image)
    else:
        scale, slide, image_kind = 1.0, require_file(image, "full-resolution image"), "fullres"

    X, barcodes, var = read_10x_h5(counts_path)
    is_ge = (var["feature_types"] == "Gene Expression").to_numpy()
    if not is_ge.all():
        log.info("%s: keeping %d Gene Expression features of %d", counts_path, is_ge.sum(), len(var))
        X, var = X[:, is_ge], var.loc[is_ge]
    is_int = check_counts(X, counts_path)

    known = pd.Index(barcodes).isin(pos.index)
    if not known.any():
        raise DataError(f"{counts_path}: none of {len(barcodes)} barcodes has a position in {pos_path}")
    if not known.all():
        log.warning(
            "%s: dropping %d of %d barcodes without a position in %s",
            counts_path,
            (~known).sum(),
            len(known),
            pos_path,
        )
        X, barcodes = X[known], barcodes[known]
    p = pos.loc[barcodes]
    if in_tissue_only:
        keep = p["in_tissue"].to_numpy() == 1
        if not keep.all():
            log.info(
                "%s: dropping %d barcodes outside the tissue (in_tissue == 0)", counts_path, (~keep).sum()
            )
            X, barcodes, p = X[keep], barcodes[keep], p.loc[keep]

    full_xy = p[["pxl_col_in_fullres", "pxl_row_in_fullres"]].to_numpy(dtype=np.float64)
    coords = full_xy * scale
    d_full = float(scalefactors.get("spot_diameter_fullres", np.nan))
    mpp_pitch = None
    if len(pos) >= 2:
        try:
            mpp_pitch = estimate_mpp_from_spots(
                pos[["pxl_col_in_fullres", "pxl_row_in_fullres"]].to_numpy(),
                pos[["array_col", "array_row"]].to_numpy(),
                pitch_um=VISIUM_SPOT_PITCH_UM,
            )
        except DataError as exc:
            log.info("%s: no pitch-based mpp cross-check (%s)", pos_path, exc)
    if mpp is not None:
        mpp_img, source = float(mpp), "user"
        mpp_full = mpp_img * scale
    elif np.isfinite(d_full) and d_full > 0:
        mpp_full, source = SPACERANGER_SPOT_DIAMETER_REF_UM / d_full, "estimated"
        mpp_img = mpp_full / scale
        if mpp_pitch is not None and abs(mpp_pitch / mpp_full - 1) > 0.1:
            log.warning(
                "%s: mpp from spot_diameter_fullres (%.4f) and from the 100 um spot pitch (%.4f) disagree",
                sf_path,
                mpp_full,
                mpp_pitch,
            )
    elif mpp_pitch is not None:
        mpp_full, source = mpp_pitch, "estimated"
        mpp_img = mpp_full / scale
    else:
        raise ReaderError(sf_path, "no spot_diameter_fullres and too few spots to estimate microns per pixel")

    var = var.copy()
    var.index = pd.Index(make_unique(var.pop("name").tolist(), counts_path))
    obs = pd.DataFrame(
        {
            "in_tissue": p["in_tissue"].to_numpy(),
            "array_row": p["array_row"].to_numpy(),
            "array_col": p["array_col"].to_numpy(),
        },
        index=pd.Index(barcodes, dtype=str),
    )
    uns = {
        "slide_path": str(slide),
        "mpp": float(mpp_img),
        "mpp_source": source,
        "spot_diameter_um": VISIUM_SPOT_DIAMETER_UM,
        "spot_pitch_um": VISIUM_SPOT_PITCH_UM,
        "technology": "visium",
        "image": image_kind,
        "scalefactor": scale,
        "mpp_fullres": float(mpp_full),
        "scalefactors": {k: float(v) for k, v in scalefactors.items() if isinstance(v, int | float)},
        "source_path": str(folder),
    }
    if mpp_pitch is not None:
        uns["mpp_fullres_from_pitch"] = float(mpp_pitch)
    return build_anndata(
        X,
        obs=obs,
        var=var,
        coords=coords,
        uns_spatial=uns,
        sample=sample if sample is not None else folder.name,
        donor=donor,
        batch=batch,
        source=counts_path,
        image_wh=image_size(slide),
        is_integer=is_int,
    )
