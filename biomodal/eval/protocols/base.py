"""The protocol contract: a typed config, an evaluation context and a registry.

An evaluation protocol is one module in :mod:`biomodal.eval.protocols` that registers a
function ``fn(ctx, cfg) -> ProtocolResult`` with :func:`register_protocol`, together with a
pydantic config class (its parameters, validated when a recipe is loaded), the metrics
section it writes (``"retrieval"``, ``"expression"``...), optional headline columns for sweep
tables, an optional Markdown renderer and, for protocols that can drive early stopping, a
validation function and the name of the metric it monitors.

Protocols see embeddings and data only through an :class:`EvalContext`, so they know no
modality family: the family supplies targets (expression values, labels), raw-input baseline
features and coordinates; the runner supplies the embeddings of the trained and untrained
models. Everything heavy is imported inside the protocol functions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict

from biomodal._registry import Registry
from biomodal.errors import ConfigError, DataError

__all__ = [
    "EvalContext",
    "ProtocolConfig",
    "ProtocolInfo",
    "ProtocolResult",
    "Target",
    "get_protocol",
    "list_protocols",
    "register_protocol",
]


class ProtocolConfig(BaseModel):
    """Base class of protocol parameters: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


@dataclass
class Target:
    """A per-item target matrix of every split (e.g. spot expression), with column names.

    Attributes
    ----------
    values
        ``{split: (n_items, n_columns) float array}``: what predictions are scored against.
    names
        Column names (gene symbols, lead names...).
    rank_values
        Optional ``(n_train_items, n_columns)`` training-split values whose per-column variance
        ranks the columns when a protocol scores the "most variable" ones (e.g. expression
        before z-scoring, whose variance is not 1 for every gene); ``None``: ``values["train"]``.
    info
        Optional facts about how the values were made (``{"expression_post_hoc":
        ...}``); protocols that score this target copy them into their metrics.
    """

    values: dict[str, Any]
    names: list[str]
    rank_values: Any | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def ranking(self) -> Any:
        """Return the training-split values that rank columns by variance (``rank_values`` or train)."""
        return self.values["train"] if self.rank_values is None else self.rank_values

    def __repr__(self) -> str:
        shapes = ", ".join(f"{s}={getattr(v, 'shape', '?')}" for s, v in self.values.items())
        ranked = "; ranked on separate values" if self.rank_values is not None else ""
        return f"Target({len(self.names)} columns; {shapes}{ranked})"


@dataclass
class ProtocolResult:
    """What a protocol returns: JSON-ready metrics plus in-memory artifacts for its plots."""

    metrics: dict[str, Any]
    artifacts: dict[str, Any] = field(default_factory=dict)


@dataclass
class EvalContext:
    """Everything a protocol may read, for the training split and one held-out split.

    Attributes
    ----------
    split
        The evaluated split (``"test"`` or ``"val"``); ``"train"`` is the fitting split.
    embeddings
        ``{split: {modality: (n, d) float32}}`` of the trained model (``split`` and ``"train"``).
    obs
        ``{split: DataFrame}`` of per-item metadata (sections, donors, labels, batches).
    modalities
        The modalities of the model, in order.
    targets
        ``{name: Target}`` supplied by the family (``"expression"`` for spatial recipes).
    coords
        ``{split: (n, 2) array}`` of item coordinates where the family has them.
    batch_key
        The ``obs`` column holding batch-effect categories (``data.batch_key``).
    label_keys
        ``obs`` columns with biological labels, in priority order.
    group_key, group_label
        ``obs`` column of the unit items are drawn from (a section, a subject) and its name
        in metric keys (``"section"``).
    post_hoc
        Post-hoc embedding correction named by the recipe (``"none"``, ``"harmony"``...).
    features
        ``{name: fn(split, modality) -> array}`` of baseline features: ``"untrained"`` (the
        same architecture at initialisation, from the runner) and family-specific raw-input
        features (``"colour_histogram"`` of tiles...). Call :meth:`feature`, which caches.
    unit
        What one item is called in reports (``"spots"``, ``"records"``, ``"subjects"``).
    loss
        Name of the loss the model was trained with (the last stage of a schedule), for
        protocols whose score depends on it (``k_candidate``: multilinear for Symile).
    encode
        ``fn(modality, inputs) -> (n, d) array``: the trained model's embeddings of raw inputs
        (prompts of ``zero_shot``); ``None`` when the runner provides no model.
    encode_untrained
        The same for the untrained model (the ``untrained`` baseline of ``zero_shot``).
    """

    split: str
    embeddings: dict[str, dict[str, Any]]
    obs: dict[str, Any]
    modalities: tuple[str, ...]
    targets: dict[str, Target] = field(default_factory=dict)
    coords: dict[str, Any] = field(default_factory=dict)
    batch_key: str | None = None
    label_keys: list[str] = field(default_factory=list)
    group_key: str | None = None
    group_label: str = "group"
    post_hoc: str = "none"
    features: dict[str, Callable[[str, str], Any]] = field(default_factory=dict)
    unit: str = "items"
    loss: str | None = None
    encode: Callable[[str, Any], Any] | None = None
    encode_untrained: Callable[[str, Any], Any] | None = None
    _cache: dict[tuple[str, str, str], Any] = field(default_factory=dict, repr=False)

    def emb(self, split: str, modality: str) -> Any:
        """Embedding matrix of ``modality`` on ``split``; a clear error when it is absent."""
        try:
            return self.embeddings[split][modality]
        except KeyError:
            have = {s: sorted(e) for s, e in self.embeddings.items()}
            raise DataError(f"no {modality!r} embeddings for split {split!r}; available: {have}") from None

    def feature(self, name: str, split: str, modality: str) -> Any:
        """Baseline feature ``name`` of ``modality`` on ``split`` (computed once, then cached)."""
        if name not in self.features:
            raise ConfigError(f"baseline {name!r} is not available here; available: {sorted(self.features)}")
        key = (name, split, modality)
        if key not in self._cache:
            self._cache[key] = self.features[name](split, modality)
        return self._cache[key]

    def target(self, name: str) -> Target:
        """Return the target ``name``; a :class:`ConfigError` names the available ones otherwise."""
        if name not in self.targets:
            raise ConfigError(
                f"this recipe's data provide no target {name!r}; available: {sorted(self.targets) or 'none'}"
            )
        return self.targets[name]

    def check_modalities(self, names: Sequence[str], where: str) -> None:
        """Raise :class:`ConfigError` when a configured modality is not one of the model's."""
        bad = [n for n in names if n not in self.modalities]
        if bad:
            raise ConfigError(f"{where}: modalities {bad} are not in the model ({list(self.modalities)})")


@dataclass
class ProtocolInfo:
    """A registry entry: the function and what the runner needs to know about it."""

    name: str
    fn: Callable[[EvalContext, Any], ProtocolResult]
    config: type[ProtocolConfig]
    section: str
    validate: Callable[[EvalContext, Any], dict[str, float]] | None = None
    monitor: str | Callable[[Any], str] | None = None
    headline: Callable[[Any, Mapping[str, Any]], list[tuple[str, str]]] | None = None
    markdown: Callable[[Mapping[str, Any]], list[str]] | None = None
    needs_untrained: bool = False

    def monitor_for(self, cfg: Any) -> str | None:
        """Return the validation metric this protocol's early stopping follows under ``cfg``."""
        return self.monitor(cfg) if callable(self.monitor) else self.monitor

    def parse(self, params: Mapping[str, Any] | None) -> ProtocolConfig:
        """Validate ``params`` into this protocol's config (pydantic errors propagate)."""
        return self.config.model_validate(dict(params or {}))


_PROTOCOLS: Registry[ProtocolInfo] = Registry("evaluation protocol")


def register_protocol(
    name: str,
    *,
    config: type[ProtocolConfig],
    section: str | None = None,
    validate: Callable[[EvalContext, Any], dict[str, float]] | None = None,
    monitor: str | Callable[[Any], str] | None = None,
    headline: Callable[[Any, Mapping[str, Any]], list[tuple[str, str]]] | None = None,
    markdown: Callable[[Mapping[str, Any]], list[str]] | None = None,
    needs_untrained: bool = False,
) -> Callable[[Callable[..., ProtocolResult]], Callable[..., ProtocolResult]]:
    """Register an evaluation protocol (decorator).

    Parameters
    ----------
    name
        Name used in a recipe's ``eval.protocols``.
    config
        Pydantic config class of its parameters.
    section
        Top-level key of ``metrics.json`` its metrics go to (default: ``name``); protocols
        sharing a section (HEST and kNN expression prediction) merge, and a key written twice
        is an error.
    validate, monitor
        ``validate(ctx, cfg) -> {"val/...": float}`` run on the validation split during
        training, and the key of that dict early stopping and ``best.pt`` follow (a string
        or ``fn(cfg) -> str``).
    headline
        ``headline(cfg, metrics) -> [(dotted key, column label)]`` for sweep tables.
    markdown
        ``markdown(section_metrics) -> lines`` for ``metrics.md``.
    needs_untrained
        Whether the protocol reads the ``"untrained"`` baseline feature (the runner then keeps
        a copy of the model at initialisation).
    """

    def deco(fn: Callable[..., ProtocolResult]) -> Callable[..., ProtocolResult]:
        info = ProtocolInfo(
            name, fn, config, section or name, validate, monitor, headline, markdown, needs_untrained
        )
        _PROTOCOLS.register(name)(lambda: info)
        return fn

    return deco


def get_protocol(name: str) -> ProtocolInfo:
    """Return the registry entry of protocol ``name`` (did-you-mean error when unknown)."""
    return _PROTOCOLS.create(name)


def list_protocols() -> list[str]:
    """Sorted names of the registered protocols."""
    return _PROTOCOLS.names()
