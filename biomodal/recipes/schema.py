"""Typed, validated recipe schema.

A recipe YAML is parsed into :class:`Recipe`. Unknown or misspelt keys are
errors that name the key and suggest the closest valid one; values are checked
against their allowed set. Notebooks build the same objects in Python::

    from biomodal.recipes import Recipe, load_recipe
    recipe = load_recipe("recipes/spatial/demo.yaml", overrides=["trainer.max_steps=20"])
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    field_validator,
    model_validator,
)

from biomodal._suggest import did_you_mean
from biomodal.errors import ConfigError
from biomodal.modalities import MODALITIES
from biomodal.recipes._schema_errors import format_validation_error
from biomodal.recipes.families import DEFAULT_FAMILY, FamilyConfig, get_family

__all__ = ["SHIPPED_DIR", "Recipe", "apply_overrides", "load_recipe"]

#: Folder of the recipes shipped with the repository (``recipes/`` at the project root).
SHIPPED_DIR = Path(__file__).resolve().parents[2] / "recipes"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModalityConfig(_Strict):
    """Encoder of one modality.

    ``cache_features`` (default on): when the encoder is frozen and its input is not randomly
    augmented, compute its features once per dataset, keep them on disk and train only the
    head (:mod:`biomodal.train.feature_cache`); ``false`` always runs the encoder.
    """

    encoder: str
    params: dict[str, Any] = {}
    freeze: bool = False
    unfreeze_last: int | None = None
    lora: dict[str, Any] | None = None
    cache_features: bool = True


class DistillConfig(_Strict):
    """ALBEF momentum distillation: an EMA teacher's soft targets mixed in with weight ``alpha``."""

    alpha: float = Field(default=0.4, ge=0, le=1)
    momentum: float = Field(default=0.995, ge=0, lt=1)
    warmup_steps: int = Field(default=0, ge=0)


class ModelConfig(_Strict):
    """Shared embedding space and training options of the model.

    Attributes
    ----------
    embed_dim, head
        Size of the shared space and kind of projection head.
    distill
        Momentum distillation (ALBEF); ``None``: off.
    self_supervised
        CleanCLIP-style in-modality term: one weight for every modality or ``{modality:
        weight}``; each modality is contrasted with its augmented view ``<name>_view``,
        which the family's dataset provides. ``None``: off.
    ssl_temperature
        Temperature of that in-modality InfoNCE.
    """

    embed_dim: int = Field(default=128, ge=2)
    head: Literal["linear", "mlp"] = "linear"
    distill: DistillConfig | None = None
    self_supervised: float | dict[str, float] | None = None
    ssl_temperature: float = Field(default=0.1, gt=0)


class LossConfig(_Strict):
    """The contrastive objective (any name from ``biomodal.losses.list_losses()``).

    In a list of stages (``loss: [{name: bimixco, until_step: 300}, {name: softclip}]``) each
    stage but the last names the optimiser step it ends at (MindEye2 trains BiMixCo first,
    then SoftCLIP).
    """

    name: str = "clip"
    params: dict[str, Any] = {}
    until_step: int | None = Field(default=None, ge=1)


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


class ProtocolSpec(_Strict):
    """One evaluation protocol (a name from ``biomodal.eval.protocols.list_protocols()``)."""

    name: str
    params: dict[str, Any] = {}

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        return {"name": v} if isinstance(v, str) else v

    @model_validator(mode="after")
    def _typed_params(self) -> ProtocolSpec:
        from biomodal.eval.protocols import get_protocol

        info = get_protocol(self.name)  # ConfigError with did-you-mean
        parsed = info.parse(self.params)
        object.__setattr__(self, "params", parsed.model_dump(mode="json"))
        return self

    def parsed(self) -> Any:
        """Return the protocol's typed config."""
        from biomodal.eval.protocols import get_protocol

        return get_protocol(self.name).parse(self.params)


class EvalConfig(_Strict):
    """What the run reports: the protocols, on which held-out split, with or without plots.

    A recipe without ``protocols`` gets its family's default list (families also accept
    their own shorthand keys here, e.g. the spatial family's ``top_genes``).
    """

    protocols: list[ProtocolSpec] = []
    plots: bool = True
    split: Literal["test", "val"] = "test"


class OutputConfig(_Strict):
    """Run directory and the frozen-encoder feature cache.

    ``feature_cache``: folder of cached frozen-encoder features (default
    ``$BIOMODAL_CACHE_DIR/features`` or ``~/.cache/biomodal/features``); shared by runs, keyed
    by encoder weights and input, so seeds of one recipe compute the features once.
    """

    dir: str = "runs/{name}"
    feature_cache: str | None = None


def _default_data() -> FamilyConfig:
    return get_family(DEFAULT_FAMILY).config()


class Recipe(_Strict):
    """A complete, validated recipe.

    ``data.family`` picks the modality-family plugin (``spatial`` when absent, as in recipes
    written before families existed); it also supplies default ``modalities`` and
    ``eval.protocols`` when the recipe gives none.
    """

    name: str = "recipe"
    seed: int = 0
    data: SerializeAsAny[FamilyConfig] = Field(default_factory=_default_data)
    modalities: dict[str, ModalityConfig] = {}
    model: ModelConfig = ModelConfig()
    loss: LossConfig | list[LossConfig] = LossConfig()
    batch_correction: BatchCorrectionConfig = BatchCorrectionConfig()
    trainer: dict[str, Any] = Field(default_factory=dict, validate_default=True)
    eval: EvalConfig = EvalConfig()
    output: OutputConfig = OutputConfig()
    sweep: dict[str, list[str]] = {}

    @model_validator(mode="before")
    @classmethod
    def _family_defaults(cls, raw: Any) -> Any:
        if not isinstance(raw, dict):
            return raw
        raw = dict(raw)
        data = raw.get("data")
        if isinstance(data, FamilyConfig):
            family, data_raw = data.family, data.model_dump(mode="json")
        elif data is not None and not isinstance(data, dict):
            return raw  # field validation names `data` and the expected mapping
        else:
            data_raw = dict(data or {})
            family = data_raw.setdefault("family", DEFAULT_FAMILY)
            raw["data"] = data_raw
        try:
            plugin = get_family(str(family))
        except ConfigError:
            return raw  # the data validator reports the unknown family under data.family
        if not raw.get("modalities"):
            raw["modalities"] = plugin.default_modalities()
        ev = raw.get("eval")
        if isinstance(ev, EvalConfig) and ev.protocols:
            return raw  # already resolved (e.g. re-validation on assignment)
        if ev is not None and not isinstance(ev, (dict, EvalConfig)):
            return raw  # field validation names `eval` and the expected mapping
        ev = dict(ev.model_dump(mode="json") if isinstance(ev, EvalConfig) else (ev or {}))
        if not ev.get("protocols"):
            try:
                ev["protocols"] = plugin.default_protocols(ev, data_raw)
            except (TypeError, AttributeError) as exc:  # a shorthand key of the wrong type
                keys = ", ".join(f"eval.{k}" for k in ev if k not in EvalConfig.model_fields) or "eval"
                raise ValueError(f"{keys}: a value has the wrong type ({exc})") from None
        raw["eval"] = ev
        return raw

    @field_validator("data", mode="before")
    @classmethod
    def _family_config(cls, v: Any) -> Any:
        if isinstance(v, dict):
            try:
                plugin = get_family(str(v.get("family", DEFAULT_FAMILY)))
            except ConfigError as exc:
                raise ValueError(f"family: {exc}") from None
            return plugin.config.model_validate(v)
        return v

    @field_validator("loss")
    @classmethod
    def _stages(cls, v: LossConfig | list[LossConfig]) -> LossConfig | list[LossConfig]:
        if isinstance(v, list):
            if not v:
                raise ValueError("loss: give one loss or a non-empty list of stages")
            ends = [s.until_step for s in v[:-1]]
            if any(e is None for e in ends):
                raise ValueError("loss: every stage but the last needs until_step")
            if any(b <= a for a, b in itertools.pairwise(ends)):  # type: ignore[operator]
                raise ValueError(f"loss: until_step must increase from stage to stage, got {ends}")
            if v[-1].until_step is not None:
                raise ValueError("loss: the last stage runs to the end; drop its until_step")
        elif v.until_step is not None:
            raise ValueError("loss.until_step only makes sense in a list of stages")
        return v

    @field_validator("modalities")
    @classmethod
    def _known_modalities(cls, v: dict[str, ModalityConfig]) -> dict[str, ModalityConfig]:
        for name in v:
            if name not in MODALITIES:
                hint = did_you_mean(name, MODALITIES)
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


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping (YAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                line = key_node.start_mark.line + 1
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {key!r} (line {line}; first at line {seen[key]})",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


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
            raw = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)  # a SafeLoader subclass
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
        if raw is None:
            raise ConfigError(f"{path}: the recipe is empty; a recipe needs at least a trainer section")
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: a recipe must be a mapping of sections, got {type(raw).__name__}")
    raw = apply_overrides(raw, list(overrides or []))
    try:
        parsed = Recipe.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source, raw)) from None
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
    get_family(data.family).resolve_paths(data, root)
