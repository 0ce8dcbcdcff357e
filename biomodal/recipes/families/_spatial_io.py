"""Reading the sections of a spatial recipe: generated demo data or real files via the reader registry."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from biomodal.errors import ConfigError, DataError
from biomodal.recipes.families._spatial_checks import check_section

log = logging.getLogger("biomodal")

SPLITS = ("train", "val", "test")

#: reader name -> (files a section must name, how a section becomes the reader's arguments,
#: whether the recipe's sample/donor/batch names replace what the file's obs recorded)
_READER_ARGS: dict[str, tuple[tuple[str, ...], Any, bool]] = {
    "legacy_st": (
        ("counts", "spots", "image"),
        lambda sec, data: (
            (sec.counts,),
            {"spots": sec.spots, "image": sec.image, "mpp": sec.mpp, "scale_factor": sec.scale_factor},
        ),
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


def check_split_guards(
    items: list[tuple[str, str, str]], split_unit: str, where: str = "data.sections"
) -> None:
    """Refuse a section in two splits and, with ``split_unit: donor``, a donor in two splits.

    Parameters
    ----------
    items
        ``(section, split, donor)`` of every section.
    split_unit
        ``"donor"`` (a donor's sections share one split) or ``"section"`` (the opt-in that lets
        one donor's sections sit in different splits).
    where
        Name of the configuration the sections come from, for messages.

    Raises
    ------
    ConfigError
        Naming the section or donor and the splits it appears in.
    """
    by_section: dict[str, list[str]] = {}
    by_donor: dict[str, dict[str, list[str]]] = {}
    for name, split, donor in items:
        by_section.setdefault(name, []).append(split)
        by_donor.setdefault(donor, {}).setdefault(split, []).append(name)
    for name, splits in by_section.items():
        if len(splits) > 1:
            raise ConfigError(
                f"{where}: section {name!r} is listed {len(splits)} times (splits {', '.join(splits)}); "
                "a section's spots belong to exactly one split"
            )
    if split_unit == "section":
        return
    for donor, splits in by_donor.items():
        if len(splits) > 1:
            detail = "; ".join(f"{sp}: {', '.join(names)}" for sp, names in splits.items())
            raise ConfigError(
                f"{where}: donor {donor!r} has sections in {len(splits)} splits ({detail}); with "
                "data.split_unit: donor (the default) a held-out donor is never seen in training or "
                "early stopping. Move the sections, or set data.split_unit: section to split by "
                "section within donors (held-out figures are then within-donor)"
            )


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


#: columns of a label table that locate a spot rather than describe it
_COORD_COLUMNS = {"x", "y", "new_x", "new_y", "pixel_x", "pixel_y", "selected", "array_row", "array_col"}
#: the value a spot without a label gets
UNLABELLED = "unlabelled"


def _label_rows(table: Any, adata: Any, path: Path) -> tuple[Any, str]:
    """Reindex ``table`` to the spots of ``adata`` (by spot name, else by rounded array x/y); say how."""
    import numpy as np
    import pandas as pd

    if table.index.astype(str).isin(adata.obs_names).any():
        return table.reindex(adata.obs_names), "spot name"
    if not {"x", "y"} <= set(table.columns) or not {"array_col", "array_row"} <= set(adata.obs.columns):
        raise DataError(
            f"{path}: no row index matches the spot names of the section (e.g. {adata.obs_names[0]!r}) "
            "and the table has no x, y array-coordinate columns to join on"
        )
    xy = table[["x", "y"]].to_numpy(dtype=np.float64)
    if not np.isfinite(xy).all():
        raise DataError(f"{path}: {int((~np.isfinite(xy)).any(axis=1).sum())} rows have no x, y coordinate")
    xy = np.round(xy).astype(np.int64)
    key = pd.MultiIndex.from_arrays([xy[:, 0], xy[:, 1]])
    if key.duplicated().any():
        raise DataError(f"{path}: rows {key[key.duplicated()][:5].tolist()} round to the same array x, y")
    spots = pd.MultiIndex.from_arrays(
        [adata.obs["array_col"].to_numpy(np.int64), adata.obs["array_row"].to_numpy(np.int64)]
    )
    pos = key.get_indexer(spots)
    rows = table.iloc[np.where(pos < 0, 0, pos)].copy()
    rows.index = adata.obs_names
    rows[pos < 0] = np.nan
    return rows, "rounded array x, y"


def attach_labels(adata: Any, sec: Any) -> list[str]:
    """Join a per-spot label table (CSV/TSV) by spot name, or by rounded array ``x``/``y`` columns.

    Every descriptive column becomes an ``obs`` column (coordinate columns are not labels); spots
    the table does not cover get ``"unlabelled"``. Returns the label columns added.
    """
    if not sec.labels:
        return []
    import pandas as pd

    path = Path(sec.labels)
    if not path.is_file():
        raise ConfigError(f"data.sections[{sec.name}].labels: file not found: {path}")
    table = pd.read_csv(path, sep=None, engine="python", index_col=0)
    rows, how = _label_rows(table, adata, path)
    hits = rows.notna().any(axis=1).to_numpy()
    if not hits.any():
        raise DataError(f"{path}: no row matches a spot of section {sec.name!r} (joined by {how})")
    cols = [c for c in table.columns if c not in _COORD_COLUMNS]
    if not cols:
        raise DataError(f"{path}: no label column besides coordinates ({list(table.columns)})")
    log.info("section %s: %d/%d spots have labels (%s) from %s, joined by %s", sec.name, hits.sum(),
             adata.n_obs, ", ".join(cols), path, how)  # fmt: skip
    for col in cols:
        adata.obs[col] = rows[col].astype(str).where(hits, UNLABELLED).values
    return cols


def demo_dataset(root: Path, demo: Any, *, generate: bool = True) -> Any:
    """Reuse generated demo data in ``root`` when its parameters match, else generate it.

    With ``generate=False`` (a trained checkpoint's data) missing or different data are an error.
    """
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
    if not generate:
        from biomodal.errors import CheckpointError

        raise CheckpointError(
            f"{root}: the checkpoint's recipe reads demo data from here (data.demo.root), but it holds no "
            "dataset with the recorded parameters; a checkpoint is never evaluated on regenerated data: "
            "point data.demo.root at the data the model was trained on"
        )
    return make_demo_spatial(root, **wanted)


def read_sections(data: Any, run_dir: Path, *, generate: bool = True) -> dict[str, list[Any]]:
    """Read every section of a spatial data config, grouped by split, each with ``obs['split']``.

    ``generate=False``: demo data must already exist (see :func:`demo_dataset`).
    """
    out: dict[str, list[Any]] = {s: [] for s in SPLITS}
    if data.source == "demo":
        demo = data.demo
        ds = demo_dataset(Path(demo.root) if demo.root else run_dir / "data", demo, generate=generate)
        for sec in ds.sections:
            out[sec["split"]].append(ds.read(sec["sample"]))
    else:
        labelled: set[str] = set()
        for sec in data.sections:
            adata = read_section(sec, data)
            # counts and slide checked now (file named), not after minutes of training
            check_section(adata, sec.counts or sec.path, data.tile_um, data.mpp)
            labelled.update(attach_labels(adata, sec))
            out[sec.split].append(adata)
        for a in (a for adatas in out.values() for a in adatas):  # no NaN labels in other sections
            for col in labelled - set(a.obs.columns):
                a.obs[col] = UNLABELLED
    donors = [(str(a.obs["sample"].iloc[0]), split, str(a.obs["donor"].iloc[0]))
              for split, adatas in out.items() for a in adatas]  # fmt: skip
    check_split_guards(donors, data.split_unit, where=f"data ({data.source} sections)")
    for split, adatas in out.items():
        for a in adatas:
            a.obs["split"] = split
            if data.batch_key not in a.obs:
                cols = ", ".join(a.obs.columns)
                raise ConfigError(f"data.batch_key {data.batch_key!r} is not in obs; available: {cols}")
    if not out["train"] or not out["test"]:
        raise ConfigError("the recipe needs at least one train and one test section")
    return out
