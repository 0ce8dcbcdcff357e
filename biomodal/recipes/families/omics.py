"""The ``omics`` family: several omics tables of the same subjects (mRNA, methylation, miRNA...).

One table per modality (CSV/TSV/h5ad/parquet, rows = subjects) for the training files and,
optionally, the test files; subjects are matched by id, or by row order where the files have
none (MOGONET's ``1_tr.csv``...). A subject missing from a modality's table (or with an all-empty
row) gets ``<name>_mask`` False. Labels (``data.labels``) feed classification; an ``obs`` table
(``data.obs``) adds per-subject columns such as survival time and event.

Splits are by subject: the test files are the test split; without them ``data.holdout`` of the
training subjects (stratified by label, seeded) is held out. A validation part
(``data.val_fraction``) of the remaining training subjects serves model selection and early
stopping; the test split is never used for either. Each modality's :class:`FeatureScaler` is
fitted on the training split only.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from biomodal.errors import ConfigError, DataError
from biomodal.recipes.families import register_family
from biomodal.recipes.families.base import SPLITS, Family, FamilyConfig, PreparedData, resolve_path

__all__ = [
    "LabelFiles",
    "ObsFiles",
    "OmicsData",
    "OmicsFamily",
    "TableFiles",
    "omics_anndata",
    "predict_proba",
]

log = logging.getLogger("biomodal")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TableFiles(_Strict):
    """The matrix files of one omics modality (paths relative to ``data.root``).

    Attributes
    ----------
    train, test
        Training and (optional) test matrix, rows = subjects.
    features
        File of feature names, one per line (MOGONET's ``1_featname.csv``).
    header, id_column
        CSV/TSV header row (``None``: detect) and subject-id column (``"auto"``: the first
        column when it is not numeric; ``null``: none, match by row order).
    transpose
        The files store features as rows.
    layer
        AnnData layer read instead of ``X`` for ``.h5ad`` files.
    """

    train: str
    test: str | None = None
    features: str | None = None
    header: bool | None = None
    id_column: str | int | None = "auto"
    transpose: bool = False
    layer: str | None = None


class LabelFiles(_Strict):
    """Per-subject class labels: ``names`` maps raw values to class names (``{"1": AD}``)."""

    train: str
    test: str | None = None
    column: str | None = None
    header: bool | None = None
    id_column: str | int | None = "auto"
    names: dict[str, str] = {}


class ObsFiles(_Strict):
    """Per-subject metadata tables with a header (e.g. survival ``time``/``event`` columns)."""

    train: str
    test: str | None = None
    id_column: str | int | None = "auto"


class OmicsData(FamilyConfig):
    """``data:`` of an omics recipe (see the module docstring)."""

    family: Literal["omics"] = "omics"
    modalities: dict[str, TableFiles] = Field(default_factory=dict)
    labels: LabelFiles | None = None
    obs: ObsFiles | None = None
    match: Literal["auto", "id", "order"] = "auto"
    holdout: float = Field(default=0.3, gt=0, lt=1)
    val_fraction: float = Field(default=0.15, ge=0, lt=1)
    split_seed: int | None = None
    scale: Literal["standard", "minmax", "none"] = "standard"
    label_key: str = "label"

    @field_validator("modalities")
    @classmethod
    def _names(cls, v: dict[str, TableFiles]) -> dict[str, TableFiles]:
        from biomodal.modalities import check_modality

        if not v:
            raise ValueError(
                "data.modalities needs one table per omics modality, e.g. {mrna: {train: 1_tr.csv}}"
            )
        for name in v:
            check_modality(name)
        return v

    @model_validator(mode="after")
    def _test_files(self) -> OmicsData:
        with_test = [m for m, t in self.modalities.items() if t.test]
        if with_test and len(with_test) != len(self.modalities):
            lack = [m for m in self.modalities if m not in with_test]
            raise ValueError(
                f"data.modalities: {with_test} name test files but {lack} do not; give all or none"
            )
        if self.labels is not None and bool(self.labels.test) != bool(with_test) and not with_test:
            raise ValueError("data.labels.test is given but no data.modalities.<name>.test files")
        if self.obs is not None and bool(self.obs.test) != bool(with_test):
            raise ValueError("data.obs.test must be given exactly when data.modalities.<name>.test files are")
        return self


@register_family
class OmicsFamily(Family):
    """Multi-omics tables of the same subjects (see the module docstring)."""

    name = "omics"
    config = OmicsData

    def default_modalities(self) -> dict[str, dict[str, Any]]:
        """MLP encoders for ``mrna``, ``methylation`` and ``mirna`` (MOGONET's three omics)."""
        mlp = {"encoder": "mlp", "params": {"hidden": [128], "dropout": 0.2}}
        return {m: dict(mlp) for m in ("mrna", "methylation", "mirna")}

    def default_protocols(
        self, eval_section: dict[str, Any], data: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        """Cross-omics retrieval (every ordered pair) and, with labels, classification."""
        protocols: list[dict[str, Any]] = [{"name": "retrieval", "params": {"ks": [1, 5, 10]}}]
        if data.get("labels"):
            protocols.append({"name": "classification"})
        return protocols

    def resolve_paths(self, cfg: FamilyConfig, root: Path) -> None:
        """Table, feature-name, label and obs files relative to ``data.root`` become absolute."""
        for spec in [*cfg.modalities.values(), cfg.labels, cfg.obs]:  # type: ignore[attr-defined]
            if spec is None:
                continue
            for attr in ("train", "test", "features"):
                if hasattr(spec, attr):
                    setattr(spec, attr, resolve_path(getattr(spec, attr), root))

    # ------------------------------------------------------------------ data
    def prepare(
        self, recipe: Any, run_dir: Path, *, preprocessors: dict[str, Any] | None = None
    ) -> PreparedData:
        """Read and match the tables, split subjects, fit the scalers on training subjects."""
        from biomodal.recipes.families._omics_data import FeatureScaler, OmicsDataset
        from biomodal.recipes.families._omics_prepare import read_source, split_subjects

        data: OmicsData = recipe.data
        unknown = [m for m in recipe.modalities if m not in data.modalities]
        if unknown:
            raise ConfigError(
                f"modalities {unknown} have no table in data.modalities (have {list(data.modalities)}); "
                "list the recipe's `modalities:` explicitly (the omics default is mrna, methylation, mirna)"
            )
        sources = {"train": read_source(data, "train")}
        if next(iter(data.modalities.values())).test:
            sources["test"] = read_source(data, "test")
        raw_classes, classes = _classes(data, sources)
        seed = recipe.seed if data.split_seed is None else data.split_seed
        subj = split_subjects(
            sources,
            raw_classes,
            classes,
            holdout=data.holdout,
            val_fraction=data.val_fraction,
            seed=seed,
            label_key=data.label_key,
        )
        obs = subj.obs
        pre = dict(preprocessors or {})
        train_rows = (obs["split"] == "train").to_numpy()
        for m in data.modalities:
            if m not in pre:
                keep = train_rows & obs[f"{m}_present"].to_numpy()
                pre[m] = FeatureScaler(data.scale).fit(subj.x[m][keep], subj.var_names[m])
        prepared = PreparedData(
            preprocessors=pre, group_key="subject", group_label="subject", unit="subjects"
        )
        hidden = [c for c in obs.columns if c.endswith("_present") or c.startswith("_")]
        for split in SPLITS:
            rows = (obs["split"] == split).to_numpy()
            if not rows.any():
                continue
            sub = obs.loc[rows]
            x = {
                m: pre[m].transform(subj.x[m][rows], subj.var_names[m], where=f"data.modalities.{m}")
                for m in data.modalities
            }
            present = {m: sub[f"{m}_present"].to_numpy() for m in data.modalities}
            ds = OmicsDataset(
                x,
                present,
                sub["_code"].to_numpy(),
                sub.drop(columns=hidden),
                {m: pre[m].var_names_ for m in x},
            )
            prepared.datasets[split] = prepared.eval_datasets[split] = ds
        if "test" not in prepared.eval_datasets:
            raise DataError("the omics recipe has no test subjects (check data.holdout and the test files)")
        prepared.input_specs = {m: p.input_spec() for m, p in pre.items()}
        prepared.label_keys = [data.label_key] if classes else []
        prepared.info = {"classes": classes, "split_seed": seed}
        eds = prepared.eval_datasets
        prepared.features = {"raw": lambda split, m: eds[split].features(m)}
        for split, ds in eds.items():
            log.info("omics %s: %r", split, ds)
        return prepared

    def load_preprocessors(self, states: Mapping[str, Any]) -> dict[str, Any]:
        """One :class:`FeatureScaler` per modality from a checkpoint."""
        from biomodal.recipes.families._omics_data import FeatureScaler

        return {m: FeatureScaler.from_state_dict(s, m) for m, s in states.items()}

    def embed_file(self, model: Any, path: Path) -> tuple[Any, Any]:
        """Subjects of a multi-omics ``.h5ad`` (``obsm[<modality>]`` DataFrames of raw values).

        A subject lacking a modality has an all-NaN row there; features are matched by name to
        the checkpoint's scaler (missing features are an error naming them).
        """
        import anndata as ad
        import numpy as np

        from biomodal.recipes.families._omics_data import OmicsDataset, read_omics_anndata

        adata = ad.read_h5ad(path)
        tables = read_omics_anndata(adata, model.modalities, where=str(path))
        x, present, names = {}, {}, {}
        for m in model.modalities:
            pre = model.preprocessors[m]
            if m in tables:
                raw = tables[m].to_numpy(np.float64)
                present[m] = ~np.isnan(raw).all(axis=1)
                x[m] = pre.transform(raw, [str(c) for c in tables[m].columns], where=f"{path}: obsm[{m!r}]")
            else:
                present[m] = np.zeros(adata.n_obs, bool)
                x[m] = np.zeros((adata.n_obs, len(pre.var_names_)), np.float32)
            names[m] = pre.var_names_
        ds = OmicsDataset(x, present, -np.ones(adata.n_obs, np.int64), adata.obs.copy(), names)
        return ds, adata


def _classes(data: OmicsData, sources: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """Raw label values in code order (sorted, numerically when numeric) and their class names."""
    if data.labels is None:
        return [], []
    raw = sorted({v for v in sources["train"]["_label"] if v != ""}, key=_sort_key)
    if len(raw) < 2:
        raise DataError(f"{data.labels.train}: data.labels.train needs >= 2 classes, found {raw}")
    for split, subj in sources.items():
        unseen = sorted({v for v in subj["_label"] if v != "" and v not in raw})
        if unseen:
            raise DataError(
                f"data.labels.{split}: classes {unseen} do not occur in the training labels {raw}"
            )
    bad = sorted(set(data.labels.names) - set(raw))
    if bad:
        raise ConfigError(f"data.labels.names: {bad} are not label values of the training file (have {raw})")
    return raw, [data.labels.names.get(v, v) for v in raw]


def _sort_key(v: str) -> tuple[int, float, str]:
    try:
        return (0, float(v), v)
    except ValueError:
        return (1, 0.0, v)


def predict_proba(model: Any, dataset: Any, *, batch_size: int = 512) -> Any:
    """Class probabilities of a model whose loss has a fusion classifier (``loss.predict_proba``).

    Embeds every subject of ``dataset`` with ``model`` (eval mode, no gradients) and applies the
    loss's classifier, e.g. :class:`biomodal.losses.m3col.M3CoLLoss`. Columns follow the label
    codes (the family's class order, ``PreparedData.info['classes']``).
    """
    from biomodal.eval import embed

    fn = getattr(model.loss, "predict_proba", None)
    if not callable(fn):
        raise ConfigError(f"loss {type(model.loss).__name__} has no fusion classifier (predict_proba)")
    emb = embed(model, dataset, batch_size=batch_size, progress=False)
    return fn({m: emb[m] for m in model.modalities if m in emb})


def omics_anndata(
    tables: Mapping[str, Any], obs: Any = None, var_names: Mapping[str, Any] | None = None
) -> Any:
    """Multi-omics AnnData with one DataFrame per omics in ``obsm`` (what ``biomodal embed`` reads).

    See :func:`biomodal.recipes.families._omics_data.omics_anndata`: ``tables`` maps an omics
    name to a subjects x features DataFrame (NaN rows where a subject lacks it), ``obs`` holds
    per-subject metadata.
    """
    from biomodal.recipes.families._omics_data import omics_anndata as make

    return make(tables, obs, var_names)
