"""The ``spatial`` family: whole-slide histology tiles paired with spot expression.

Data come from the generated demo (``source: demo``) or real sections read through the
reader registry (``legacy_st``, ``visium``, ``xenium``, ``h5ad``). The gene pipeline (panel,
highly variable genes, normalisation) is fitted on training sections only; each spot
becomes a (tile, expression) pair of a :class:`~biomodal.data.SpotTileDataset`. Modalities:
``histology`` (tiles) and ``expression`` (the gene panel).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

import biomodal.eval.protocols.spatial_probe  # noqa: F401  (registers the spatial_probe protocol)
from biomodal.errors import CheckpointError, ConfigError
from biomodal.recipes.families import register_family
from biomodal.recipes.families._spatial_io import check_split_guards
from biomodal.recipes.families.base import SPLITS, Family, FamilyConfig, PreparedData

__all__ = ["DemoConfig", "GenesConfig", "SectionConfig", "SpatialData", "SpatialFamily", "TileGeometry"]

log = logging.getLogger("biomodal")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SectionConfig(_Strict):
    """One tissue section of a real dataset.

    For ``legacy_st`` give ``counts``, ``spots`` and ``image`` (``scale_factor``: image pixels
    per spot-file pixel when the image was resized; default: ``scalefactors.json`` beside the
    image, else 1); for ``visium`` and ``xenium`` give ``path``; for ``h5ad`` give ``path``
    (and ``slide`` when the file does not record it). ``labels``: a per-spot table joined by
    spot name or by rounded array ``x``/``y``. Relative paths resolve against ``data.root``.
    """

    name: str
    split: Literal["train", "val", "test"]
    donor: str | None = None
    batch: str | None = None
    counts: str | None = None
    spots: str | None = None
    image: str | None = None
    path: str | None = None
    slide: str | None = None
    mpp: float | None = Field(default=None, gt=0)
    scale_factor: float | None = Field(default=None, gt=0)
    labels: str | None = None


class DemoConfig(_Strict):
    """Parameters of the generated multi-donor demo data."""

    n_donors: int = Field(default=3, ge=2)
    sections_per_donor: int = Field(default=2, ge=1)
    seed: int = 0
    small: bool = False
    spot_pitch_um: float | None = Field(default=None, gt=0)
    n_test_donors: int = Field(default=1, ge=1)
    root: str | None = None


class GenesConfig(_Strict):
    """The gene pipeline (fitted on training sections only)."""

    n_top_genes: int | None = Field(default=256, ge=1)
    hvg: Literal["union", "none"] = "union"
    normalize: Literal["total_log1p", "none"] = "total_log1p"
    target_sum: float = 1e4
    scale: bool = False
    post_hoc: Literal[
        "none", "combat", "center_scale", "combat_transductive", "center_scale_transductive"
    ] = "none"


class SpatialData(FamilyConfig):
    """``data:`` of a spatial recipe: where sections come from and how spots become pairs.

    Split guards: a section (name or file) belongs to one split; with ``split_unit: donor``
    (the default) a donor's sections all sit in one split, so nothing of a held-out donor is
    seen in training or early stopping. ``split_unit: section`` is the named opt-in for
    within-donor section splits. ``allow_val_scoring: true`` is the opt-in for
    ``eval.split: val``, which scores the sections early stopping selected the model on.
    """

    family: Literal["spatial"] = "spatial"
    source: Literal["demo", "legacy_st", "visium", "xenium", "h5ad"] = "demo"
    demo: DemoConfig = DemoConfig()
    sections: list[SectionConfig] = Field(default_factory=list)
    tile_um: float = Field(default=112.0, gt=0)
    mpp: float = Field(default=1.0, gt=0)
    genes: GenesConfig = GenesConfig()
    batch_key: str = "sample"
    label_key: str | None = None
    augment: bool = True
    cache: Literal["memory", "preload", "none"] = "memory"
    xenium_pseudo_spot_um: float | None = None
    split_unit: Literal["donor", "section"] = "donor"
    allow_val_scoring: bool = False

    @model_validator(mode="after")
    def _tile_pixels(self) -> SpatialData:
        ratio = self.tile_um / self.mpp
        px = round(ratio) if ratio < 1e9 else ratio  # inf/nan stay as they are (refused below)
        if not 8 <= px <= 4096:  # checked at load, not when the first tile is read
            raise ValueError(
                f"data.tile_um={self.tile_um:g} at data.mpp={self.mpp:g} makes {px} px tiles; allowed: "
                "tile_um / mpp from 8 to 4096 px (e.g. tile_um: 112, mpp: 1.0)"
            )
        return self

    @model_validator(mode="after")
    def _sections_needed(self) -> SpatialData:
        if self.source != "demo":
            if not self.sections:
                raise ValueError(f"data.sections is required when data.source is {self.source!r}")
            splits = {s.split for s in self.sections}
            for need in ("train", "test"):
                if need not in splits:
                    raise ValueError(f"data.sections needs at least one section with split: {need}")
            check_split_guards([(s.name, s.split, s.donor or s.name) for s in self.sections], self.split_unit)
            _one_file_one_section(self.sections)
        return self


@dataclass
class TileGeometry:
    """The histology preprocessor: physical tile size and output pixels around each spot."""

    tile_um: float
    tile_px: int
    mpp: float

    def state_dict(self) -> dict[str, Any]:
        """Plain-python state for checkpoints."""
        return {"tile_um": self.tile_um, "tile_px": self.tile_px, "mpp": self.mpp}

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> TileGeometry:
        """Inverse of :meth:`state_dict`; a :class:`CheckpointError` when a key is missing."""
        try:
            return cls(float(state["tile_um"]), int(state["tile_px"]), float(state["mpp"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"histology tile geometry state is malformed ({exc!r}): {state!r}") from exc


_SHORTHAND = ("ks", "within_section", "pca_components", "top_genes", "knn_k", "probe_labels",
              "batch_metrics", "baselines")  # fmt: skip


@register_family
class SpatialFamily(Family):
    """Histology tiles + spot expression (see the module docstring)."""

    name = "spatial"
    config = SpatialData

    def default_modalities(self) -> dict[str, dict[str, Any]]:
        """``histology`` with the small CNN and ``expression`` with an MLP."""
        return {"histology": {"encoder": "cnn_small"}, "expression": {"encoder": "mlp"}}

    def default_protocols(
        self, eval_section: dict[str, Any], data: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        """Return retrieval, HEST and kNN expression prediction, probes and batch mixing.

        Understands the shorthand keys of recipes written before ``eval.protocols`` existed
        (``ks``, ``within_section``, ``pca_components``, ``top_genes``, ``knn_k``,
        ``probe_labels``, ``batch_metrics``, ``baselines``) and consumes them.
        """
        ev = {k: eval_section.pop(k) for k in _SHORTHAND if k in eval_section}
        top = ev.get("top_genes", 50)
        labels = list(ev.get("probe_labels", []))
        label_key = data.get("label_key")
        if label_key and label_key not in labels:
            labels.append(label_key)
        within = {"within": "sample", "within_label": "section"} if ev.get("within_section", True) else {}
        h, e = "histology", "expression"
        baselines = ["untrained", "untrained_encoder", "trained_encoder"]
        baselines += ["colour_histogram"] if ev.get("baselines", True) else []
        retrieval = {"pairs": [[h, e], [e, h]], "ks": ev.get("ks", [1, 5, 10]), **within}
        hest = {
            "modality": h,
            "n_components": ev.get("pca_components", 256),
            "top_k": top,
            "baselines": baselines,
        }
        knn = {"query": h, "gallery": e, "k": ev.get("knn_k", 50), "top_k": top}
        protocols: list[dict[str, Any]] = [
            {"name": "retrieval", "params": retrieval},
            {"name": "hest_expression", "params": hest},
            {"name": "knn_expression", "params": knn},
        ]
        if labels:
            protocols.append({"name": "probe", "params": {"labels": labels, "modalities": [h, e]}})
        if ev.get("batch_metrics", True):
            mixing = {"label_key": labels[0] if labels else None, "bases": [h, "joint"]}
            protocols.append({"name": "batch_mixing", "params": mixing})
        return protocols

    def resolve_paths(self, cfg: FamilyConfig, root: Path) -> None:
        """Section files relative to ``data.root`` become absolute."""
        for sec in cfg.sections:  # type: ignore[attr-defined]
            for attr in ("counts", "spots", "image", "path", "slide", "labels"):
                val = getattr(sec, attr)
                if val:
                    p = Path(os.path.expandvars(os.path.expanduser(val)))
                    setattr(sec, attr, str(p if p.is_absolute() else (root / p).resolve()))

    def on_run_dir(self, cfg: FamilyConfig, run_dir: Path) -> None:
        """Record where generated demo data live (in the run directory), for ``biomodal eval``."""
        if cfg.source == "demo" and cfg.demo.root is None:  # type: ignore[attr-defined]
            cfg.demo.root = str((run_dir / "data").resolve())  # type: ignore[attr-defined]

    # ------------------------------------------------------------------ data
    def prepare(
        self, recipe: Any, run_dir: Path, *, preprocessors: dict[str, Any] | None = None
    ) -> PreparedData:
        """Read sections, fit the gene pipeline on training sections, build the spot datasets."""
        from biomodal.data import SpotTileDataset
        from biomodal.data.transforms import default_histology_transforms
        from biomodal.recipes.families._spatial_genes import evaluation_target, fit_genes, post_hoc_expression
        from biomodal.recipes.families._spatial_io import read_sections

        data: SpatialData = recipe.data
        sections = read_sections(data, run_dir, generate=preprocessors is None)  # checkpoints: no new data
        _check_eval_split(recipe, data, {s for s, v in sections.items() if v})
        pipeline = (preprocessors or {}).get("expression")
        if pipeline is None:
            pipeline = fit_genes(data.genes, sections)
        log.info("gene panel: %d genes fitted on %d training sections", len(pipeline.var_names_),
                 len(sections["train"]))  # fmt: skip
        geometry = (preprocessors or {}).get("histology")
        common = dict(
            tile_um=geometry.tile_um if geometry else data.tile_um,
            mpp=geometry.mpp if geometry else data.mpp,
            genes=pipeline,
            batch_key=data.batch_key,
            cache=None if data.cache == "none" else data.cache,
        )
        prepared = PreparedData(group_key="sample", group_label="section", unit="spots")
        for split in SPLITS:
            if not sections[split]:
                continue
            aug = default_histology_transforms(train=True) if (split == "train" and data.augment) else None
            ds = SpotTileDataset(sections[split], transform=aug, **common)
            prepared.datasets[split] = ds
            prepared.eval_datasets[split] = ds if aug is None else SpotTileDataset(sections[split], **common)
        # targets are taken before any post-hoc correction: scores never see corrected values
        target = evaluation_target(prepared.eval_datasets, pipeline, sections["train"], data.genes.post_hoc)
        if data.genes.post_hoc != "none":
            post_hoc_expression(prepared, data.genes.post_hoc)
        train = prepared.eval_datasets["train"]
        if geometry is not None and geometry.tile_px != train.tile_px:
            raise CheckpointError(f"histology tiles are {train.tile_px} px but the model was trained on "
                                  f"{geometry.tile_px} px")  # fmt: skip
        prepared.preprocessors = {"histology": TileGeometry(train.tile_um, train.tile_px, train.mpp),
                                  "expression": pipeline}  # fmt: skip
        prepared.input_specs = {"expression": {"in_features": len(pipeline.var_names_)}}
        prepared.batch_categories = list(prepared.datasets["train"].batch_categories)
        self._evaluation_inputs(prepared, data, target, sections, common)
        return prepared

    @staticmethod
    def _evaluation_inputs(prepared: PreparedData, data: SpatialData, target: Any,
                           sections: dict[str, list[Any]], common: dict[str, Any]) -> None:  # fmt: skip
        from biomodal.recipes.families._spatial_features import pretrained_features

        eds = prepared.eval_datasets
        prepared.targets = {"expression": target}
        prepared.coords = {s: d.spatial for s, d in eds.items()}
        prepared.label_keys = [data.label_key] if data.label_key else []

        def colour_histogram(split: str, modality: str) -> Any:
            import numpy as np

            from biomodal.eval.baselines import colour_histogram_features

            if modality != "histology":
                raise ConfigError(
                    f"the colour_histogram baseline describes histology tiles, not {modality!r}"
                )
            ds = eds[split]
            return colour_histogram_features(np.stack([ds.tile(i) for i in range(len(ds))]))

        prepared.features = {
            "colour_histogram": colour_histogram,
            "efficientnet_lite0": pretrained_features(sections, common, data.tile_um),
        }

    def load_preprocessors(self, states: Mapping[str, Any]) -> dict[str, Any]:
        """Gene pipeline and tile geometry from a checkpoint."""
        from biomodal.pp import GenePipeline

        out: dict[str, Any] = {}
        if "expression" in states:
            out["expression"] = GenePipeline.from_state_dict(states["expression"])
        if "histology" in states:
            out["histology"] = TileGeometry.from_state_dict(states["histology"])
        return out

    def check_checkpoint(self, preprocessors: Mapping[str, Any], input_specs: Mapping[str, Any]) -> None:
        """Check that the gene panel has as many genes as the expression encoder takes."""
        pipe = preprocessors.get("expression")
        want = dict(input_specs.get("expression", {})).get("in_features")
        if pipe is not None and want is not None and len(pipe.var_names_) != int(want):
            raise CheckpointError(
                f"checkpoint modality 'expression': the gene panel has {len(pipe.var_names_)} genes but the "
                f"encoder was built for {want}"
            )

    def upgrade_checkpoint(self, extra: dict[str, Any]) -> dict[str, Any]:
        """Checkpoints from before family plugins recorded ``genes`` and ``dataset``: convert."""
        if "preprocessors" in extra or "genes" not in extra:
            return extra
        ds, genes = dict(extra.get("dataset") or {}), extra["genes"]
        new = dict(extra, family=self.name)
        new["preprocessors"] = {
            "histology": {k: ds.get(k) for k in ("tile_um", "tile_px", "mpp")},
            "expression": genes,
        }
        new["input_specs"] = {"expression": {"in_features": len(genes.get("var_names", []))}}
        return new

    def embed_file(self, model: Any, path: Path) -> tuple[Any, Any]:
        """Spots of one ``.h5ad`` section (spatial convention); its panel must cover the model's."""
        from biomodal.data import SpotTileDataset
        from biomodal.io import read_h5ad

        pipe, geo = model.preprocessors["expression"], model.preprocessors["histology"]
        adata = read_h5ad(path)
        pipe.check_compatible(adata.var_names, allow_extra=True)
        bkey = model.recipe.data.batch_key
        if bkey not in adata.obs:
            adata.obs[bkey] = "unseen"
        ds = SpotTileDataset([adata], tile_um=geo.tile_um, tile_px=geo.tile_px, genes=pipe, batch_key=bkey)
        return ds, adata


def _one_file_one_section(sections: list[SectionConfig]) -> None:
    """Refuse one data file named by two sections (its spots would sit in two places or splits)."""
    seen: dict[str, str] = {}
    for sec in sections:
        for attr in ("counts", "path"):
            val = getattr(sec, attr)
            if not val:
                continue
            key = os.path.normpath(os.path.expandvars(os.path.expanduser(val)))
            if key in seen and seen[key] != sec.name:
                raise ValueError(
                    f"data.sections: {attr} {val!r} is named by sections {seen[key]!r} and {sec.name!r}; "
                    "one file is one section in one split"
                )
            seen[key] = sec.name


def _check_eval_split(recipe: Any, data: SpatialData, splits: set[str]) -> None:
    """``eval.split: val`` scores the early-stopping set: refuse unless the recipe opts in."""
    split = getattr(getattr(recipe, "eval", None), "split", "test")
    if split == "val" and "val" in splits and not data.allow_val_scoring:
        raise ConfigError(
            "eval.split: val scores the validation sections that early stopping and best.pt selected "
            "the model on, so its figures are optimistic; score test sections, or set "
            "data.allow_val_scoring: true to do it anyway"
        )
