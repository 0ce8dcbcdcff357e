"""Recipe data stage: sections -> gene pipeline -> paired spot/tile datasets per split."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from biomodal.errors import ConfigError, DataError
from biomodal.recipes.schema import Recipe, SectionConfig

log = logging.getLogger("biomodal")

SPLITS = ("train", "val", "test")


@dataclass
class PreparedData:
    """Sections read for a recipe, the fitted gene pipeline and one dataset per split."""

    sections: dict[str, list[Any]]
    pipeline: Any
    datasets: dict[str, Any] = field(default_factory=dict)
    eval_datasets: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        parts = ", ".join(f"{s}={len(v)} sections" for s, v in self.sections.items() if v)
        return f"PreparedData({parts}, genes={len(self.pipeline.var_names_)})"


def _read_section(source: str, sec: SectionConfig, recipe: Recipe) -> Any:
    from biomodal import io

    donor = sec.donor or sec.name
    batch = sec.batch or sec.name
    if source == "legacy_st":
        missing = [k for k in ("counts", "spots", "image") if not getattr(sec, k)]
        if missing:
            raise ConfigError(f"data.sections[{sec.name}]: legacy_st needs {', '.join(missing)}")
        return io.read_legacy_st(
            sec.counts, sec.spots, sec.image, sample=sec.name, donor=donor, batch=batch, mpp=sec.mpp
        )
    if not sec.path:
        raise ConfigError(f"data.sections[{sec.name}]: source {source!r} needs 'path'")
    if source == "visium":
        adata = io.read_visium(sec.path, sample=sec.name, donor=donor, batch=batch)
    elif source == "xenium":
        adata = io.read_xenium(
            sec.path,
            pseudo_spot_um=recipe.data.xenium_pseudo_spot_um,
            sample=sec.name,
            donor=donor,
            batch=batch,
        )
    else:
        adata = io.read_h5ad(sec.path, slide=sec.slide, mpp=sec.mpp)
        adata.obs["sample"] = sec.name
        adata.obs["donor"] = donor
        adata.obs["batch"] = batch
    return adata


def _attach_labels(adata: Any, sec: SectionConfig) -> None:
    """Join a per-spot label table (CSV with an index column matching obs_names)."""
    if not sec.labels:
        return
    import pandas as pd

    path = Path(sec.labels)
    if not path.is_file():
        raise ConfigError(f"data.sections[{sec.name}].labels: file not found: {path}")
    table = pd.read_csv(path, sep=None, engine="python", index_col=0)
    hits = adata.obs_names.isin(table.index)
    if not hits.any():
        raise DataError(f"{path}: no row index matches the spot names of section {sec.name!r}")
    log.info("section %s: %d/%d spots have labels from %s", sec.name, hits.sum(), adata.n_obs, path)
    for col in table.columns:
        adata.obs[col] = table.reindex(adata.obs_names)[col].astype(str).where(hits, "unlabelled").values


def _demo_dataset(root: Path, demo: Any) -> Any:
    """Reuse generated demo data in ``root`` when its parameters match, else generate it."""
    import json

    from biomodal.datasets import make_demo_spatial
    from biomodal.datasets._demo_io import DemoDataset

    wanted = {
        "seed": demo.seed,
        "n_donors": demo.n_donors,
        "sections_per_donor": demo.sections_per_donor,
        "small": demo.small,
        "n_test_donors": demo.n_test_donors,
    }
    if demo.spot_pitch_um is not None:
        wanted["spot_pitch_um"] = demo.spot_pitch_um
    gen = root / "generation.json"
    if gen.is_file() and (root / "manifest.csv").is_file():
        have = json.loads(gen.read_text())
        if all(have.get(k) == v for k, v in wanted.items()):
            ds = DemoDataset.load(root)
            if all(Path(s["h5ad_path"]).is_file() and Path(s["slide_path"]).is_file() for s in ds.sections):
                log.info("reusing demo data in %s", root)
                return ds
    return make_demo_spatial(root, **wanted)


def read_sections(recipe: Recipe, run_dir: Path) -> dict[str, list[Any]]:
    """Read every section of the recipe, grouped by split, each with ``obs['split']``."""
    data = recipe.data
    out: dict[str, list[Any]] = {s: [] for s in SPLITS}
    if data.source == "demo":
        demo = data.demo
        root = Path(demo.root) if demo.root else run_dir / "data"
        ds = _demo_dataset(root, demo)
        for sec in ds.sections:
            adata = ds.read(sec["sample"])
            out[sec["split"]].append(adata)
    else:
        for sec in data.sections:
            adata = _read_section(data.source, sec, recipe)
            _attach_labels(adata, sec)
            adata.obs["split"] = sec.split
            out[sec.split].append(adata)
    for split, adatas in out.items():
        for a in adatas:
            a.obs["split"] = split
            if data.batch_key not in a.obs:
                cols = ", ".join(a.obs.columns)
                raise ConfigError(f"data.batch_key {data.batch_key!r} is not in obs; available: {cols}")
    if not out["train"] or not out["test"]:
        raise ConfigError("the recipe needs at least one train and one test section")
    return out


def prepare_data(recipe: Recipe, run_dir: Path, *, pipeline: Any = None) -> PreparedData:
    """Read sections, fit the gene pipeline on training sections and build datasets.

    Parameters
    ----------
    recipe
        The validated recipe.
    run_dir
        Run directory (demo data is generated under it unless ``data.demo.root`` is set).
    pipeline
        An already fitted gene pipeline (from a checkpoint) to use instead of fitting one.
    """
    from biomodal.data import SpotTileDataset
    from biomodal.data.transforms import default_histology_transforms
    from biomodal.pp import GenePipeline, intersect_panels

    sections = read_sections(recipe, run_dir)
    g = recipe.data.genes
    if pipeline is None:
        hvg_kw = {"n_top_genes": g.n_top_genes} if g.n_top_genes is not None else {}
        pipeline = GenePipeline(
            **hvg_kw,
            hvg=g.hvg,
            normalize=g.normalize,
            target_sum=g.target_sum,
            scale=g.scale,
        )
        # panel choice and statistics from training sections only; held-out sections contribute
        # nothing but the names of the genes they measure, so every section can be transformed
        everything = [a for s in SPLITS for a in sections[s]]
        pipeline.fit(sections["train"], candidates=intersect_panels(everything))
    log.info(
        "gene panel: %d genes fitted on %d training sections",
        len(pipeline.var_names_),
        len(sections["train"]),
    )
    prepared = PreparedData(sections=sections, pipeline=pipeline)
    common = dict(
        tile_um=recipe.data.tile_um,
        mpp=recipe.data.mpp,
        genes=pipeline,
        batch_key=recipe.data.batch_key,
        cache=None if recipe.data.cache == "none" else recipe.data.cache,
    )
    for split in SPLITS:
        if not sections[split]:
            continue
        aug = default_histology_transforms(train=True) if (split == "train" and recipe.data.augment) else None
        prepared.datasets[split] = SpotTileDataset(sections[split], transform=aug, **common)
        prepared.eval_datasets[split] = (
            SpotTileDataset(sections[split], transform=None, **common)
            if aug is not None
            else prepared.datasets[split]
        )
    if g.post_hoc != "none":
        _post_hoc_expression(prepared, g.post_hoc)
    return prepared


def _post_hoc_expression(prepared: PreparedData, method: str) -> None:
    """Per-section correction of the expression targets before training (BLEEP-style)."""
    from biomodal.pp import center_scale

    for split, ds in {**prepared.datasets, **prepared.eval_datasets}.items():
        codes = np.asarray(ds.obs["sample"].astype(str))
        if method == "center_scale":
            ds.expression = center_scale(ds.expression, codes).astype(np.float32)
        else:  # combat works on AnnData
            import anndata as ad

            from biomodal.pp import combat

            tmp = ad.AnnData(ds.expression.copy(), obs={"sample": codes})
            combat(tmp, "sample")
            ds.expression = np.asarray(tmp.X, dtype=np.float32)
        log.info("post-hoc %s applied to %s expression", method, split)
