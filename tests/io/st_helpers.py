"""Writers of small, format-faithful spatial-transcriptomics folders for tests.

They write the on-disk layouts biomodal's readers consume, independently of the
readers: 10x HDF5 feature-barcode matrices (features x barcodes stored CSC:
``matrix/data, indices, indptr, shape, barcodes, features/{name,id,feature_type}``),
Space Ranger ``spatial/`` folders, Xenium output folders and legacy ST tables.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
from PIL import Image


def write_10x_h5(
    path: Path,
    counts: np.ndarray,
    barcodes: list[str],
    names: list[str],
    ids: list[str] | None = None,
    feature_types: list[str] | None = None,
) -> None:
    """Write ``counts`` (cells x features, dense) in the 10x HDF5 v3 layout."""
    counts = np.asarray(counts)
    n_cells, n_feat = counts.shape
    ids = ids or [f"ENSG{i:011d}" for i in range(n_feat)]
    feature_types = feature_types or ["Gene Expression"] * n_feat
    # CSC of the features x cells matrix: one column per cell.
    data, indices, indptr = [], [], [0]
    for c in range(n_cells):
        nz = np.flatnonzero(counts[c])
        indices.extend(nz.tolist())
        data.extend(counts[c, nz].tolist())
        indptr.append(len(indices))
    with h5py.File(path, "w") as f:
        g = f.create_group("matrix")
        g.create_dataset("data", data=np.asarray(data, dtype=np.int32))
        g.create_dataset("indices", data=np.asarray(indices, dtype=np.int64))
        g.create_dataset("indptr", data=np.asarray(indptr, dtype=np.int64))
        g.create_dataset("shape", data=np.asarray([n_feat, n_cells], dtype=np.int32))
        g.create_dataset("barcodes", data=np.asarray(barcodes, dtype="S"))
        fe = g.create_group("features")
        fe.create_dataset("name", data=np.asarray(names, dtype="S"))
        fe.create_dataset("id", data=np.asarray(ids, dtype="S"))
        fe.create_dataset("feature_type", data=np.asarray(feature_types, dtype="S"))
        fe.create_dataset("genome", data=np.asarray(["GRCh38"] * n_feat, dtype="S"))
        f.attrs["filetype"] = "matrix"
        f.attrs["version"] = 2


def write_image(path: Path, width: int, height: int) -> None:
    """Write a small RGB image (format from the suffix)."""
    Image.new("RGB", (width, height), (230, 200, 220)).save(path)


def make_xenium(
    folder: Path,
    *,
    n_cells: int = 300,
    n_genes: int = 12,
    n_controls: int = 2,
    extent_um: float = 200.0,
    pixel_size: float | None = 0.2125,
    seed: int = 0,
) -> dict:
    """Write a Xenium-format folder; return the ground truth used to write it."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    counts = rng.poisson(1.5, size=(n_cells, n_genes + n_controls))
    genes = [f"GENE{i}" for i in range(n_genes)]
    names = genes + [f"NegControlProbe_{i}" for i in range(n_controls)]
    types = ["Gene Expression"] * n_genes + ["Negative Control Probe"] * n_controls
    cell_ids = [f"cell{i:05d}-1" for i in range(n_cells)]
    write_10x_h5(folder / "cell_feature_matrix.h5", counts, cell_ids, names, feature_types=types)
    xy = rng.uniform(0, extent_um, size=(n_cells, 2))
    cells = pd.DataFrame(
        {
            "cell_id": cell_ids,
            "x_centroid": xy[:, 0],
            "y_centroid": xy[:, 1],
            "transcript_counts": counts[:, :n_genes].sum(1),
            "control_probe_counts": counts[:, n_genes:].sum(1),
            "cell_area": rng.uniform(50, 150, n_cells),
            "nucleus_area": rng.uniform(10, 40, n_cells),
        }
    )
    with gzip.open(folder / "cells.csv.gz", "wt") as fh:
        cells.to_csv(fh, index=False)
    px = pixel_size if pixel_size is not None else 0.2125
    if pixel_size is not None:
        (folder / "experiment.xenium").write_text(json.dumps({"pixel_size": pixel_size, "run_name": "test"}))
    side = int(np.ceil(extent_um / px)) + 2
    Image.fromarray(np.zeros((side, side), dtype=np.uint16)).save(folder / "morphology_focus.ome.tif")
    return {"counts": counts, "genes": genes, "cell_ids": cell_ids, "xy_um": xy, "pixel_size": px}


def make_visium(
    folder: Path,
    *,
    n_rows: int = 6,
    n_cols: int = 10,
    n_genes: int = 8,
    px_per_um: float = 1.5,
    header: bool = True,
    seed: int = 0,
) -> dict:
    """Write a Space Ranger-like folder on a hexagonal Visium grid; return the truth."""
    rng = np.random.default_rng(seed)
    spatial = folder / "spatial"
    spatial.mkdir(parents=True, exist_ok=True)
    rows = []
    for r in range(n_rows):
        for c in range(r % 2, 2 * n_cols, 2):  # Visium: even rows use even columns
            x_um, y_um = 200 + 50.0 * c, 200 + 100 * np.sqrt(3) / 2 * r
            rows.append((f"BC{r:02d}{c:03d}-1", 1, r, c, y_um * px_per_um, x_um * px_per_um))
    pos = pd.DataFrame(
        rows,
        columns=[
            "barcode",
            "in_tissue",
            "array_row",
            "array_col",
            "pxl_row_in_fullres",
            "pxl_col_in_fullres",
        ],
    )
    pos.loc[0, "in_tissue"] = 0
    if header:
        pos.to_csv(spatial / "tissue_positions.csv", index=False)
    else:
        pos.to_csv(spatial / "tissue_positions_list.csv", index=False, header=False)
    d_full = 65.0 * px_per_um
    hires, lowres = 0.5, 0.1
    sf = {
        "spot_diameter_fullres": d_full,
        "tissue_hires_scalef": hires,
        "fiducial_diameter_fullres": 1.6 * d_full,
        "tissue_lowres_scalef": lowres,
    }
    (spatial / "scalefactors_json.json").write_text(json.dumps(sf))
    full_w = int((200 + 50 * 2 * n_cols + 200) * px_per_um)
    full_h = int((200 + 100 * n_rows + 200) * px_per_um)
    write_image(spatial / "tissue_hires_image.png", int(full_w * hires) + 1, int(full_h * hires) + 1)
    write_image(spatial / "tissue_lowres_image.png", int(full_w * lowres) + 1, int(full_h * lowres) + 1)
    write_image(folder / "fullres.png", full_w, full_h)
    counts = rng.poisson(2.0, size=(len(pos), n_genes))
    names = [f"G{i}" for i in range(n_genes)]
    write_10x_h5(folder / "filtered_feature_bc_matrix.h5", counts, pos["barcode"].tolist(), names)
    return {"pos": pos, "counts": counts, "names": names, "scalefactors": sf, "px_per_um": px_per_um}


def make_legacy_st(
    folder: Path,
    *,
    n_x: int = 6,
    n_y: int = 5,
    n_genes: int = 7,
    px_per_step: float = 290.0,
    offset: tuple[float, float] = (300.0, 400.0),
    seed: int = 0,
    image_wh: tuple[int, int] | None = None,
) -> dict:
    """Write counts.tsv.gz / spots.tsv / image.jpg in the her2st layout; return the truth.

    Spots have integer ``x, y`` and jittered ``pixel_x, pixel_y``; the first spot is
    not selected. Count rows are named ``"XxY"``.
    """
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    xs, ys = np.meshgrid(np.arange(1, n_x + 1), np.arange(1, n_y + 1))
    xs, ys = xs.ravel(), ys.ravel()
    px = offset[0] + xs * px_per_step + rng.normal(0, 3, xs.size)
    py = offset[1] + ys * px_per_step + rng.normal(0, 3, xs.size)
    selected = np.ones(xs.size, dtype=int)
    selected[0] = 0
    spots = pd.DataFrame(
        {
            "x": xs,
            "y": ys,
            "new_x": xs + rng.normal(0, 0.01, xs.size),
            "new_y": ys + rng.normal(0, 0.01, xs.size),
            "pixel_x": px.round(2),
            "pixel_y": py.round(2),
            "selected": selected,
        }
    )
    spots.to_csv(folder / "spots.tsv", sep="\t", index=False)
    genes = [f"GENE{i}" for i in range(n_genes)]
    counts = pd.DataFrame(
        rng.poisson(3, size=(xs.size, n_genes)), index=[f"{x}x{y}" for x, y in zip(xs, ys)], columns=genes
    )
    write_counts(folder / "counts.tsv.gz", counts)
    w, h = image_wh or (int(px.max() + px_per_step), int(py.max() + px_per_step))
    write_image(folder / "image.jpg", w, h)
    return {"spots": spots, "counts": counts, "genes": genes, "image_wh": (w, h)}


def write_counts(path: Path, counts: pd.DataFrame) -> None:
    """Write a her2st-style counts table (tab separated, gzipped, empty first header cell)."""
    counts.to_csv(path, sep="\t", compression="gzip")
