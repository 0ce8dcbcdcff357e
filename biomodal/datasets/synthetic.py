"""Synthetic multi-donor spatial-transcriptomics demo dataset (histology + spot counts).

:func:`make_demo_spatial` writes, per section, a pyramidal tiled JPEG TIFF slide
that OpenSlide opens (with its microns per pixel) and an ``.h5ad`` of spot counts
that follows biomodal's spatial AnnData convention, plus ``manifest.csv``,
``generation.json`` and a ``README.md``.  Ground truth (tissue type, tissue
fractions, local nuclei density) is stored with the spots, so tutorials and tests
can check what a model learnt.  See ``datasets/demo_spatial.md`` for the card.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from biomodal.datasets._demo_genes import GeneModel, make_gene_model, sample_counts
from biomodal.datasets._demo_io import DemoDataset, publish_folder, staging_folder, write_pyramid_tiff
from biomodal.datasets._textures import DENSITY_SD, TISSUE_TYPES, make_layout, random_stain, render_he
from biomodal.errors import ConfigError, DataError

__all__ = ["DemoDataset", "make_demo_spatial", "write_pyramid_tiff"]

_DEFAULTS = {  # (slide side px, spot pitch um, genes) for the default and the small preset
    False: (3000, 100.0, 300),
    True: (1536, 75.0, 100),
}


def _splits(n_donors: int, sections_per_donor: int, n_test_donors: int = 1) -> dict[tuple[int, int], str]:
    if n_test_donors < 1 or (n_test_donors > 1 and n_donors < n_test_donors + 2):
        raise ConfigError(
            f"n_test_donors={n_test_donors} needs n_donors >= n_test_donors + 2 (a val and a train donor); "
            f"got n_donors={n_donors}"
        )
    out = {}
    for d in range(n_donors):
        for s in range(sections_per_donor):
            if n_donors >= 3:
                first_test = n_donors - n_test_donors
                split = "test" if d >= first_test else "val" if d == first_test - 1 else "train"
            elif n_donors == 2:
                split = "train" if d == 0 else ("val" if s == 0 and sections_per_donor > 1 else "test")
            else:
                last = sections_per_donor - 1
                split = "test" if s == last and last > 0 else "val" if s == last - 1 and last > 1 else "train"
            out[(d, s)] = split
    return out


def _hex_grid(shape: tuple[int, int], mpp: float, pitch_um: float, margin_um: float) -> np.ndarray:
    """Visium-like hexagonal spot centres (x, y, row, col) in level-0 pixels."""
    h_um, w_um = shape[0] * mpp, shape[1] * mpp
    dy = pitch_um * np.sqrt(3) / 2
    rows = np.arange(int((h_um - 2 * margin_um) // dy) + 1)
    out = []
    for r in rows:
        xs = np.arange(margin_um + (r % 2) * pitch_um / 2, w_um - margin_um + 1e-9, pitch_um)
        out += [(x / mpp, (margin_um + r * dy) / mpp, r, c) for c, x in enumerate(xs)]
    return np.array(out, dtype=np.float64)


def _spot_summaries(layout, counts_c, centres: np.ndarray, radius_um: float, mpp: float) -> dict:
    """Tissue fractions, tissue coverage, mean log density and nuclei count under each spot disc."""
    cell_um = layout.step * mpp
    r = radius_um / cell_um
    o = np.arange(-int(np.ceil(r)), int(np.ceil(r)) + 1)
    oy, ox = np.meshgrid(o, o, indexing="ij")
    inside = oy**2 + ox**2 <= r**2
    oy, ox = oy[inside], ox[inside]
    hc, wc = layout.labels.shape
    cy = np.clip(np.round(centres[:, 1, None] / layout.step).astype(int) + oy[None], 0, hc - 1)
    cx = np.clip(np.round(centres[:, 0, None] / layout.step).astype(int) + ox[None], 0, wc - 1)
    tis = layout.tissue[cy, cx]
    lab = layout.labels[cy, cx]
    k = len(TISSUE_TYPES)
    frac = np.stack([((lab == t) & tis).sum(1) for t in range(k)], axis=1).astype(np.float64)
    frac /= np.maximum(frac.sum(1, keepdims=True), 1)
    return {
        "fractions": frac,
        "coverage": tis.mean(1),
        "density_z": np.log(layout.density[cy, cx]).mean(1) / DENSITY_SD,
        "n_nuclei": counts_c[cy, cx].sum(1),
    }


def _make_section(task: dict[str, Any], out: Path, genes: GeneModel) -> dict[str, Any]:
    import anndata as ad
    import pandas as pd
    from scipy import sparse

    rng = np.random.default_rng(task["seed_seq"])
    shape, mpp = task["shape"], task["mpp"]
    stain = random_stain(rng, strength=0.25, base=task["donor_stain"])
    layout = make_layout(rng, shape, mpp)
    image, counts_c = render_he(rng, layout, shape, mpp, stain)
    slide_name = f"{task['sample']}.tiff"
    levels = write_pyramid_tiff(out / slide_name, image, mpp)

    grid = _hex_grid(shape, mpp, task["pitch_um"], task["margin_um"])
    summ = _spot_summaries(layout, counts_c, grid[:, :2], task["diameter_um"] / 2, mpp)
    keep = summ["coverage"] >= 0.5
    grid, summ = grid[keep], {k: v[keep] for k, v in summ.items()}
    if len(grid) == 0:
        raise DataError(f"section {task['sample']}: no spot lies on tissue; use a larger slide_px")
    ref_nuclei = 3500.0 * np.pi * (task["diameter_um"] / 2000.0) ** 2
    library = task["library"] * task["donor_lib"] * float(np.exp(rng.normal(0, 0.1)))
    library = library * np.sqrt((summ["n_nuclei"] + 1.0) / (ref_nuclei + 1.0))
    counts, _ = sample_counts(rng, genes, summ["fractions"], summ["density_z"], library, task["donor_lfc"])

    n = len(grid)
    obs = pd.DataFrame(
        {
            "sample": task["sample"],
            "donor": task["donor"],
            "batch": task["sample"],
            "split": task["split"],
            "tissue_type": pd.Categorical(
                np.array(TISSUE_TYPES)[summ["fractions"].argmax(1)], categories=list(TISSUE_TYPES)
            ),
            "in_tissue": 1,
            "array_row": grid[:, 2].astype(int),
            "array_col": grid[:, 3].astype(int),
            "nuclei_density": summ["density_z"].astype(np.float32),
            "n_nuclei": summ["n_nuclei"].astype(int),
        },
        index=[f"{task['sample']}_{i:04d}" for i in range(n)],
    )
    for col in ("sample", "donor", "batch", "split"):
        obs[col] = obs[col].astype("category")
    var = pd.DataFrame(
        {"program": pd.Categorical(genes.program), "marker_of": pd.Categorical(genes.marker_of)},
        index=genes.names,
    )
    x = sparse.csr_matrix(counts.astype(np.float32))
    adata = ad.AnnData(X=x, obs=obs, var=var)
    adata.layers["counts"] = x.copy()
    adata.obsm["spatial"] = grid[:, :2].copy()
    adata.obsm["tissue_fractions"] = summ["fractions"].astype(np.float32)
    adata.uns["spatial"] = {
        "slide_path": slide_name,
        "mpp": float(mpp),
        "mpp_source": "synthetic (TIFF resolution tags)",
        "spot_diameter_um": float(task["diameter_um"]),
        "spot_pitch_um": float(task["pitch_um"]),
        "technology": "synthetic-visium",
    }
    adata.uns["tissue_types"] = list(TISSUE_TYPES)
    adata.uns["demo"] = {"stain": stain.as_dict(), "donor_library_factor": float(task["donor_lib"])}
    h5ad_name = f"{task['sample']}.h5ad"
    adata.write_h5ad(out / h5ad_name)
    return {
        "sample": task["sample"],
        "donor": task["donor"],
        "batch": task["sample"],
        "split": task["split"],
        "slide_path": slide_name,
        "h5ad_path": h5ad_name,
        "n_spots": n,
        "width": shape[1],
        "height": shape[0],
        "mpp": mpp,
        "levels": len(levels),
    }


def make_demo_spatial(
    out_dir: str | os.PathLike,
    *,
    n_donors: int = 3,
    sections_per_donor: int = 2,
    seed: int = 0,
    small: bool = False,
    n_genes: int | None = None,
    slide_px: int | None = None,
    mpp: float = 0.5,
    spot_diameter_um: float = 55.0,
    spot_pitch_um: float | None = None,
    library_size: float = 2500.0,
    donor_effect: float = 1.0,
    n_jobs: int | None = None,
    overwrite: bool = True,
    n_test_donors: int = 1,
) -> DemoDataset:
    """Generate the synthetic multi-donor histology + spatial-transcriptomics demo dataset.

    Each section is an H&E-like slide with five tissue types (tumour, stroma, immune,
    fat, normal epithelium) in smooth random regions, spots on a Visium-like hexagonal
    grid and negative-binomial counts whose means depend on the tissue-type mix under
    the spot *and* on the local nuclei density seen in the image.  Donors differ in
    library size, gene-wise log-fold shifts and H&E staining.  Splits are by donor: the
    last donor is ``"test"``, the one before ``"val"``, the rest ``"train"`` (with two
    donors: donor 0 train, donor 1's first section val and the others test; with one
    donor, by section).

    Parameters
    ----------
    out_dir
        Output folder (created).  Holds ``<sample>.tiff``, ``<sample>.h5ad``,
        ``manifest.csv``, ``generation.json`` and ``README.md``.  ``uns["spatial"]["slide_path"]``
        is the slide's file name, relative to the ``.h5ad``'s folder, so the folder can move.
        Everything is written into a hidden sibling folder first and moved into place only when
        complete: a failure (bad parameter, full disk) leaves ``out_dir`` as it was.
    n_donors, sections_per_donor
        Dataset size; section names are ``d<donor>_s<section>``.
    seed
        Everything is a deterministic function of the seed and the other parameters.
    small
        Test preset: 1536x1536 px slides, 75 um spot pitch (~60-100 spots) and 100 genes.
    n_genes
        Gene panel size (default 300, or 100 when ``small``); at least 76.
    slide_px
        Slide side in pixels (default 3000, or 1536 when ``small``).
    mpp
        Microns per pixel of the slides' level 0.
    spot_diameter_um, spot_pitch_um
        Spot geometry (pitch default 100 um, 75 um when ``small``).
    library_size
        Typical total counts per spot.
    donor_effect
        Scales every donor effect (0 removes batch effects except section-level staining).
    n_jobs
        Threads used to render sections (default: up to the CPU count).
    overwrite
        Overwrite existing files; when False an existing manifest raises :class:`ConfigError`.
    n_test_donors
        With 3+ donors, how many of the last donors form the test split (the donor before
        them validates). Two or more held-out donors let batch mixing be measured on
        unseen donors.

    Returns
    -------
    DemoDataset
        The dataset on disk.
    """
    if n_donors < 1 or sections_per_donor < 1:
        raise ConfigError(f"n_donors={n_donors}, sections_per_donor={sections_per_donor}: both must be >= 1")
    for key, value in (("mpp", mpp), ("spot_diameter_um", spot_diameter_um), ("spot_pitch_um", spot_pitch_um),
                       ("slide_px", slide_px), ("library_size", library_size)):  # fmt: skip
        if value is not None and not (np.isfinite(float(value)) and float(value) > 0):
            raise ConfigError(f"{key}={value!r} is invalid; expected a positive number")
    side, pitch_default, genes_default = _DEFAULTS[bool(small)]
    side = int(slide_px or side)
    pitch = float(spot_pitch_um or pitch_default)
    n_genes = int(n_genes or genes_default)
    out = Path(out_dir).resolve()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: exists and is not a folder; expected an output folder")
    if not overwrite and (out / "manifest.csv").exists():
        raise ConfigError(f"{out}: already holds a dataset (manifest.csv); pass overwrite=True")
    # Everything is written into a hidden sibling folder, moved into place once complete: an
    # error or a kill never leaves slides without a manifest in ``out``.
    staging = staging_folder(out)
    try:
        _generate(staging, dict(
            n_donors=n_donors, sections_per_donor=sections_per_donor, seed=seed, small=small, n_genes=n_genes,
            side=side, mpp=mpp, spot_diameter_um=spot_diameter_um, pitch=pitch, library_size=library_size,
            donor_effect=donor_effect, n_jobs=n_jobs, n_test_donors=n_test_donors))  # fmt: skip
        publish_folder(staging, out)
    except OSError as exc:  # disk full, file-size limit...: name the dataset folder, not the staging one
        raise OSError(exc.errno, f"cannot write the demo dataset ({exc.strerror or exc})", str(out)) from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return DemoDataset.load(out)


def _generate(out: Path, params: dict[str, Any]) -> None:
    """Write the sections, ``manifest.csv``, ``generation.json`` and ``README.md`` into ``out``."""
    import pandas as pd

    n_donors, sections_per_donor, seed = params["n_donors"], params["sections_per_donor"], params["seed"]
    n_genes, side, mpp, pitch = params["n_genes"], params["side"], params["mpp"], params["pitch"]
    spot_diameter_um, library_size = params["spot_diameter_um"], params["library_size"]
    donor_effect, n_jobs, n_test_donors = params["donor_effect"], params["n_jobs"], params["n_test_donors"]
    small = params["small"]
    t0 = time.perf_counter()

    root_ss = np.random.SeedSequence([int(seed), 20240611])
    gene_ss, donor_ss, section_ss = root_ss.spawn(3)
    try:
        genes = make_gene_model(np.random.default_rng(gene_ss), n_genes, TISSUE_TYPES)
    except ValueError as exc:
        raise ConfigError(f"n_genes={n_genes}: {exc}") from exc
    donors = []
    for ss in donor_ss.spawn(n_donors):
        rng = np.random.default_rng(ss)
        strength = float(donor_effect)
        lfc = rng.normal(0.0, 0.25 * strength, n_genes)
        strong = rng.random(n_genes) < 0.05
        lfc[strong] += rng.normal(0.0, 1.0 * strength, int(strong.sum()))
        stain = random_stain(rng, strength=strength)
        donors.append({"lib": float(np.exp(rng.normal(0.0, 0.35 * strength))), "lfc": lfc, "stain": stain})

    splits = _splits(n_donors, sections_per_donor, n_test_donors)
    tasks = []
    sec_seeds = section_ss.spawn(n_donors * sections_per_donor)
    for d in range(n_donors):
        for s in range(sections_per_donor):
            tasks.append(
                {
                    "sample": f"d{d}_s{s}",
                    "donor": f"donor{d}",
                    "split": splits[(d, s)],
                    "seed_seq": sec_seeds[d * sections_per_donor + s],
                    "shape": (side, side),
                    "mpp": float(mpp),
                    "pitch_um": pitch,
                    "diameter_um": float(spot_diameter_um),
                    "margin_um": 60.0,
                    "library": float(library_size),
                    "donor_lib": donors[d]["lib"],
                    "donor_lfc": donors[d]["lfc"],
                    "donor_stain": donors[d]["stain"],
                }
            )
    workers = max(1, min(len(tasks), n_jobs or os.cpu_count() or 1))
    if workers == 1:
        rows = [_make_section(t, out, genes) for t in tasks]
    else:
        with ThreadPoolExecutor(workers) as pool:
            rows = list(pool.map(lambda t: _make_section(t, out, genes), tasks))
    manifest = pd.DataFrame(rows)
    manifest.to_csv(out / "manifest.csv", index=False)

    params = {
        "generator": "biomodal.datasets.make_demo_spatial",
        "seed": int(seed),
        "n_donors": n_donors,
        "sections_per_donor": sections_per_donor,
        "n_test_donors": int(n_test_donors),
        "small": bool(small),
        "n_genes": n_genes,
        "slide_px": side,
        "mpp": float(mpp),
        "spot_diameter_um": float(spot_diameter_um),
        "spot_pitch_um": pitch,
        "library_size": float(library_size),
        "donor_effect": float(donor_effect),
        "tissue_types": list(TISSUE_TYPES),
        "donors": {
            f"donor{d}": {"library_factor": v["lib"], "stain": v["stain"].as_dict()}
            for d, v in enumerate(donors)
        },
        "seconds": round(time.perf_counter() - t0, 3),
    }
    (out / "generation.json").write_text(json.dumps(params, indent=2))
    (out / "README.md").write_text(_README.format(**params, n_spots=int(manifest["n_spots"].sum())))


_README = """# biomodal synthetic spatial demo dataset

Generated by `biomodal.datasets.make_demo_spatial` (seed {seed}): {n_donors} donors x
{sections_per_donor} sections, {n_spots} spots, {n_genes} genes, slides {slide_px}x{slide_px} px
at {mpp} um/px. Synthetic data: no real patient data, free to use.

- `<sample>.tiff`: pyramidal tiled JPEG TIFF H&E-like slide (OpenSlide "generic-tiff").
- `<sample>.h5ad`: spot counts (X and layers["counts"]), obsm["spatial"] (x, y level-0 px),
  obsm["tissue_fractions"], obs sample/donor/batch/split/tissue_type/nuclei_density;
  uns["spatial"]["slide_path"] is relative to this folder.
- `manifest.csv`: one row per section; `generation.json`: all parameters and donor effects.

See datasets/demo_spatial.md in the biomodal repository for the full description.
"""
