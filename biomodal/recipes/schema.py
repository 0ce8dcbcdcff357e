"""Typed, validated recipe schema.

A recipe YAML is parsed into :class:`Recipe`. Unknown or misspelt keys are
errors that name the key and suggest the closest valid one; values are checked
against their allowed set. Notebooks build the same objects in Python::

    from biomodal.recipes import Recipe, load_recipe
    recipe = load_recipe("recipes/spatial/demo.yaml", overrides=["trainer.max_steps=20"])
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from biomodal.errors import ConfigError
from biomodal.modalities import MODALITIES

__all__ = ["SHIPPED_DIR", "Recipe", "apply_overrides", "load_recipe"]

#: Folder of the recipes shipped with the repository (``recipes/`` at the project root).
SHIPPED_DIR = Path(__file__).resolve().parents[2] / "recipes"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SectionConfig(_Strict):
    """One tissue section of a real dataset.

    For ``legacy_st`` give ``counts``, ``spots`` and ``image``; for ``visium`` and
    ``xenium`` give ``path``; for ``h5ad`` give ``path`` (and ``slide`` when the
    file does not record it). Relative paths resolve against ``data.root``.
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
    post_hoc: Literal["none", "combat", "center_scale"] = "none"


class DataConfig(_Strict):
    """Where the sections come from and how spots become (tile, expression) pairs."""

    source: Literal["demo", "legacy_st", "visium", "xenium", "h5ad"] = "demo"
    root: str | None = None
    demo: DemoConfig = DemoConfig()
    sections: list[SectionConfig] = []
    tile_um: float = Field(default=112.0, gt=0)
    mpp: float = Field(default=1.0, gt=0)
    genes: GenesConfig = GenesConfig()
    batch_key: str = "sample"
    label_key: str | None = None
    augment: bool = True
    cache: Literal["memory", "preload", "none"] = "memory"
    xenium_pseudo_spot_um: float | None = None

    @model_validator(mode="after")
    def _sections_needed(self) -> DataConfig:
        if self.source != "demo":
            if not self.sections:
                raise ValueError(f"data.sections is required when data.source is {self.source!r}")
            splits = {s.split for s in self.sections}
            for need in ("train", "test"):
                if need not in splits:
                    raise ValueError(f"data.sections needs at least one section with split: {need}")
        return self


class ModalityConfig(_Strict):
    """Encoder of one modality."""

    encoder: str
    params: dict[str, Any] = {}
    freeze: bool = False
    unfreeze_last: int | None = None
    lora: dict[str, Any] | None = None


class ModelConfig(_Strict):
    """Shared embedding space."""

    embed_dim: int = Field(default=128, ge=2)
    head: Literal["linear", "mlp"] = "linear"


class LossConfig(_Strict):
    """The contrastive objective (any name from ``biomodal.losses.list_losses()``)."""

    name: str = "clip"
    params: dict[str, Any] = {}


class AdversarialConfig(_Strict):
    """Batch discriminator on every modality's embedding behind a gradient-reversal layer.

    ``weight`` scales the discriminator's cross-entropy (0 switches it off); the
    reversal strength follows ``schedule`` from 0 to ``max_reversal`` (DANN ramp).
    """

    weight: float = Field(default=0.0, ge=0)
    hidden: int = 128
    schedule: Literal["constant", "dann", "linear"] = "dann"
    max_reversal: float = Field(default=1.0, ge=0)


class BatchCorrectionConfig(_Strict):
    """Batch-robust training and post-hoc correction switches."""

    adversarial: AdversarialConfig = AdversarialConfig()
    sampler: Literal["none", "within", "mixed"] = "none"
    mix_fraction: float = Field(default=0.5, ge=0, le=1)
    conditional_norm: bool = False
    post_hoc: Literal["none", "harmony", "center_scale"] = "none"


class EvalConfig(_Strict):
    """What the run reports."""

    ks: list[int] = [1, 5, 10]
    within_section: bool = True
    pca_components: int = 256
    top_genes: int = 50
    knn_k: int = 50
    probe_labels: list[str] = []
    batch_metrics: bool = True
    baselines: bool = True
    plots: bool = True
    split: Literal["test", "val"] = "test"


class OutputConfig(_Strict):
    """Run directory."""

    dir: str = "runs/{name}"


class Recipe(_Strict):
    """A complete, validated recipe."""

    name: str = "recipe"
    seed: int = 0
    data: DataConfig = DataConfig()
    modalities: dict[str, ModalityConfig] = {
        "histology": ModalityConfig(encoder="cnn_small"),
        "expression": ModalityConfig(encoder="mlp"),
    }
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    batch_correction: BatchCorrectionConfig = BatchCorrectionConfig()
    trainer: dict[str, Any] = {}
    eval: EvalConfig = EvalConfig()
    output: OutputConfig = OutputConfig()
    sweep: dict[str, list[str]] = {}

    @field_validator("modalities")
    @classmethod
    def _known_modalities(cls, v: dict[str, ModalityConfig]) -> dict[str, ModalityConfig]:
        for name in v:
            if name not in MODALITIES:
                close = difflib.get_close_matches(name, MODALITIES, n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise ValueError(f"unknown modality {name!r}; allowed: {', '.join(MODALITIES)}.{hint}")
        if len(v) < 2:
            raise ValueError("a contrastive recipe needs at least two modalities")
        return v

    @field_validator("trainer")
    @classmethod
    def _valid_trainer(cls, v: dict[str, Any]) -> dict[str, Any]:
        from biomodal.train.config import TrainConfig  # light: no torch

        TrainConfig.from_dict(v)  # raises ConfigError naming the field and the allowed values
        return v

    def run_dir(self, out: str | os.PathLike | None = None) -> Path:
        """Resolve the run directory (``--out`` wins over ``output.dir``)."""
        return Path(out if out is not None else self.output.dir.format(name=self.name))

    def to_dict(self) -> dict[str, Any]:
        """Plain, YAML-serialisable dict of the resolved recipe."""
        return self.model_dump(mode="json")


def _model_for_path(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """Walk the schema along an error location to find the model owning the last key."""
    model: Any = Recipe
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        if model is None or not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        ann = field.annotation
        args = getattr(ann, "__args__", ())
        sub = [a for a in (ann, *args) if isinstance(a, type) and issubclass(a, BaseModel)]
        model = sub[0] if sub else None
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _format_validation_error(exc: ValidationError, source: str) -> str:
    lines = [f"invalid recipe {source}:"]
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        key = ".".join(str(p) for p in loc) or "<root>"
        if err["type"] == "extra_forbidden":
            owner = _model_for_path(loc)
            allowed = sorted(owner.model_fields) if owner else []
            close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            hint = f" Did you mean {'.'.join([*map(str, loc[:-1]), close[0]])!r}?" if close else ""
            lines.append(f"  - unknown key {key!r}; allowed here: {', '.join(allowed)}.{hint}")
        else:
            lines.append(f"  - {key}: {err['msg']} (got {err.get('input')!r})")
    return "\n".join(lines)


def _parse_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides (values parsed as YAML) to a raw recipe dict."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.subkey=value")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        node = raw
        for p in parts[:-1]:
            nxt = node.get(p)
            if nxt is None:
                nxt = node[p] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"override {item!r}: {p!r} is not a section")
            node = nxt
        node[parts[-1]] = _parse_value(value)
    return raw


def resolve_recipe_path(recipe: str | os.PathLike) -> Path:
    """Find a recipe file: a path, or a shipped name such as ``spatial/demo``."""
    p = Path(recipe)
    if p.is_file():
        return p
    for cand in (SHIPPED_DIR / f"{recipe}.yaml", SHIPPED_DIR / str(recipe)):
        if cand.is_file():
            return cand
    shipped = sorted(str(f.relative_to(SHIPPED_DIR).with_suffix("")) for f in SHIPPED_DIR.rglob("*.yaml"))
    raise ConfigError(f"recipe {str(recipe)!r} not found; give a YAML path or one of: {', '.join(shipped)}")


def load_recipe(
    recipe: str | os.PathLike | dict[str, Any] | Recipe, overrides: list[str] | None = None
) -> Recipe:
    """Parse and validate a recipe.

    Parameters
    ----------
    recipe
        A YAML path, a shipped recipe name (``"spatial/demo"``), a dict or a :class:`Recipe`.
    overrides
        ``key=value`` strings applied before validation (``trainer.max_steps=10``).

    Returns
    -------
    Recipe
        The validated recipe. Relative section paths are resolved against
        ``data.root``, else ``$BIOMODAL_DATA_DIR``, else the recipe file's folder.
    """
    if isinstance(recipe, Recipe):
        if not overrides:
            return recipe
        recipe = recipe.to_dict()
    base_dir: Path | None = None
    if isinstance(recipe, dict):
        raw, source = dict(recipe), "<dict>"
    else:
        path = resolve_recipe_path(recipe)
        source = str(path)
        base_dir = path.resolve().parent
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: a recipe must be a mapping of sections, got {type(raw).__name__}")
    raw = apply_overrides(raw, list(overrides or []))
    try:
        parsed = Recipe.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, source)) from None
    _resolve_paths(parsed, base_dir)
    return parsed


def _resolve_paths(recipe: Recipe, base_dir: Path | None) -> None:
    data = recipe.data
    root_text = data.root or os.environ.get("BIOMODAL_DATA_DIR")
    if root_text:
        root = Path(os.path.expandvars(os.path.expanduser(root_text)))
        if not root.is_absolute() and base_dir is not None:
            root = base_dir / root
    else:
        root = base_dir or Path.cwd()
    for sec in data.sections:
        for attr in ("counts", "spots", "image", "path", "slide", "labels"):
            val = getattr(sec, attr)
            if val:
                p = Path(os.path.expandvars(os.path.expanduser(val)))
                setattr(sec, attr, str(p if p.is_absolute() else (root / p).resolve()))
