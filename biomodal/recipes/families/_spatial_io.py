"""Reading the sections of a spatial recipe: generated demo data or real files via the reader registry."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from biomodal.errors import ConfigError, DataError

log = logging.getLogger("biomodal")

SPLITS = ("train", "val", "test")

#: reader name -> (files a section must name, how a section becomes the reader's arguments,
#: whether the recipe's sample/donor/batch names replace what the file's obs recorded)
_READER_ARGS: dict[str, tuple[tuple[str, ...], Any, bool]] = {
    "legacy_st": (
        ("counts", "spots", "image"),
        lambda sec, data: ((sec.counts,), {"spots": sec.spots, "image": sec.image, "mpp": sec.mpp}),
        False,
    ),
    "visium": (("path",), lambda sec, data: ((sec.path,), {}), False),
    "xenium": (
        ("path",),
        lambda sec, data: ((sec.path,), {"pseudo_spot_um": data.xenium_pseudo_spot_um}),
        False,
    ),
    "h5ad": (("path",), lambda sec, data: ((sec.path,), {"slide": sec.slide, "mpp": sec.mpp}), True),
}


def read_section(sec: Any, data: Any) -> Any:
    """Read one configured section with the registered reader named by ``data.source``."""
    from biomodal import io

    needs, make_args, rename = _READER_ARGS[data.source]
    missing = [k for k in needs if not getattr(sec, k)]
    if missing:
        raise ConfigError(f"data.sections[{sec.name}]: source {data.source!r} needs {', '.join(missing)}")
    args, kwargs = make_args(sec, data)
    donor, batch = sec.donor or sec.name, sec.batch or sec.name
    adata = io.read(*args, reader=data.source, sample=sec.name, donor=donor, batch=batch, **kwargs)
    if rename:  # an h5ad may carry its own names: the recipe's win
        adata.obs["sample"], adata.obs["donor"], adata.obs["batch"] = sec.name, donor, batch
    return adata


def attach_labels(adata: Any, sec: Any) -> None:
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


def demo_dataset(root: Path, demo: Any) -> Any:
    """Reuse generated demo data in ``root`` when its parameters match, else generate it."""
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


def read_sections(data: Any, run_dir: Path) -> dict[str, list[Any]]:
    """Read every section of a spatial data config, grouped by split, each with ``obs['split']``."""
    out: dict[str, list[Any]] = {s: [] for s in SPLITS}
    if data.source == "demo":
        demo = data.demo
        ds = demo_dataset(Path(demo.root) if demo.root else run_dir / "data", demo)
        for sec in ds.sections:
            out[sec["split"]].append(ds.read(sec["sample"]))
    else:
        for sec in data.sections:
            adata = read_section(sec, data)
            attach_labels(adata, sec)
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
