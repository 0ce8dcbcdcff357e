"""The encoder registry: ``create_encoder(name, **cfg)`` and the metadata behind it.

Every encoder built here is an ``nn.Module`` with

* ``out_dim`` (int): width of the features returned by ``forward``;
* ``spec`` (:class:`EncoderSpec`): what the encoder expects as input (modality, input kind,
  shape hints, microns per pixel, normalisation) and the config that rebuilds it;
* ``forward(x) -> Tensor[B, out_dim]``. Encoders that take covariates declare them in
  ``spec.covariates`` (names from :data:`biomodal.modalities.COVARIATES`) and accept each as a
  keyword: ``spec.covariates == ("batch_code",)`` means ``forward(x, batch_code=None)`` with a
  ``LongTensor[B]`` of batch-effect codes (``-1`` or codes ``>= n_batches`` mean "unseen
  batch"); ``("subject",)`` means ``forward(x, subject=...)`` with subject codes.
  :class:`~biomodal.train.ContrastiveModel` passes exactly the declared covariates from the
  batch dict.

Names are either plain (``"cnn_small"``, ``"mlp"``, ``"uni"``) or prefixed families:
``"timm:<any timm model>"``, ``"hf:<local folder>"``, ``"torchvision:<resnet18|...>"``,
``"monai:<resnet18|...>"``. Importing this module registers every built-in but imports no
heavy library: timm, transformers, torchvision and MONAI are imported inside the builders.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from biomodal._registry import Registry
from biomodal.errors import ConfigError
from biomodal.modalities import COVARIATES, MODALITIES

__all__ = [
    "EncoderSpec",
    "create_encoder",
    "encoder_factory",
    "encoder_spec",
    "list_encoders",
    "register_encoder",
]

INPUT_KINDS = ("image", "volume", "vector", "tokens", "signal", "sequence")
#: keys that ``create_encoder`` accepts for every encoder and records in the spec
SPEC_OVERRIDES = ("modality", "mean", "std", "mpp")

_REGISTRY: Registry[nn.Module] = Registry("encoder")
#: prefix -> registry entry name of the family builder (``"timm"`` -> ``"timm:"``)
_FAMILIES: dict[str, str] = {}


@dataclasses.dataclass
class EncoderSpec:
    """What an encoder expects and how to rebuild it.

    Attributes
    ----------
    name
        Registry name the encoder was built from (``"cnn_small"``, ``"timm:resnet18"``).
    modality
        Default modality it encodes (one of :data:`biomodal.modalities.MODALITIES`).
    input_kind
        ``"image"`` (float ``[B, C, H, W]``), ``"volume"`` (``[B, C, D, H, W]``), ``"vector"``
        (float ``[B, F]``), ``"tokens"`` (dict of ``input_ids``/``attention_mask`` or a list of
        strings), ``"signal"`` or ``"sequence"``.
    input_shape
        Shape hints, e.g. ``{"tile_px": 224, "in_chans": 3}`` or ``{"in_features": 2000}``.
    mpp
        Microns per pixel the weights were trained at (``None``: no preference).
    mean, std
        Per-channel normalisation the input must have received (``None``: none expected).
    weights
        Where initial weights came from: ``None`` (random init), a local path, or a hub id.
    config
        Keyword arguments that rebuild the encoder: ``create_encoder(name, **config)``.
    covariates
        Extra ``forward`` keyword arguments the encoder takes, named as the batch-dict keys they
        come from, e.g. ``("batch_code",)`` or ``("subject",)`` (see
        :data:`biomodal.modalities.COVARIATES`).
    """

    name: str
    modality: str
    input_kind: str
    input_shape: dict[str, Any] = dataclasses.field(default_factory=dict)
    mpp: float | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    weights: str | None = None
    config: dict[str, Any] = dataclasses.field(default_factory=dict)
    covariates: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Plain-python dict (JSON/YAML serialisable when ``config`` is)."""
        out = dataclasses.asdict(self)
        for key in ("mean", "std", "covariates"):
            if out[key] is not None:
                out[key] = list(out[key])
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EncoderSpec:
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`ConfigError`."""
        fields = {f.name for f in dataclasses.fields(cls)}
        bad = sorted(set(data) - fields)
        if bad:
            raise ConfigError(f"EncoderSpec: unknown keys {bad}; expected a subset of {sorted(fields)}")
        data = dict(data)
        for key in ("mean", "std", "covariates"):
            if data.get(key) is not None:
                data[key] = tuple(data[key])
        return cls(**data)

    def build(self, *, load_weights: bool = True) -> nn.Module:
        """Rebuild the encoder from ``name`` and ``config``.

        Parameters
        ----------
        load_weights
            When False, drop ``pretrained``/``pretrained_path``/``weights`` from the config so
            the architecture is built without touching files or the network (use this before
            loading a biomodal checkpoint that contains the trained weights anyway).
        """
        cfg = dict(self.config)
        if not load_weights:
            for key in ("pretrained", "pretrained_path", "weights"):
                cfg.pop(key, None)
        return create_encoder(self.name, **cfg)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Apply ``(x - mean) / std`` over the channel axis 1 (identity when no mean/std)."""
        if self.mean is None or self.std is None:
            return x
        shape = (1, -1) + (1,) * (x.ndim - 2)
        mean = torch.as_tensor(self.mean, dtype=x.dtype, device=x.device).view(shape)
        std = torch.as_tensor(self.std, dtype=x.dtype, device=x.device).view(shape)
        return (x - mean) / std


def register_encoder(
    name: str,
    *,
    modality: str,
    input_kind: str,
    input_shape: dict[str, Any] | None = None,
    mpp: float | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    description: str = "",
    family: bool = False,
    heavy: bool = False,
    covariates: Sequence[str] = (),
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register an encoder factory (decorator).

    The factory receives the user's keyword config and returns an ``nn.Module`` with an
    ``out_dim`` attribute. It may set ``module.spec_updates`` (a dict of :class:`EncoderSpec`
    fields) to record facts only known after building (normalisation from timm's
    pretrained config, the weights source, resolved input shape, the covariates a given
    configuration takes, e.g. ``{"covariates": ("batch_code",)}`` only when ``n_batches`` is set).

    Parameters
    ----------
    name
        Registry name. With ``family=True`` it is a prefix (``"timm"``) and the factory
        receives the part after the colon as its first positional argument.
    modality, input_kind, input_shape, mpp, mean, std
        Defaults for the :class:`EncoderSpec`.
    description
        One line shown by :func:`describe_encoders`.
    family
        Register a prefix family (``"timm:<model>"``).
    heavy
        Large model (foundation presets); tests build it only on the meta device.
    covariates
        Default ``spec.covariates``: batch-dict keys the encoder's ``forward`` takes as keyword
        arguments (see :data:`biomodal.modalities.COVARIATES`).

    Examples
    --------
    >>> from torch import nn
    >>> @register_encoder("my_linear", modality="expression", input_kind="vector")
    ... def _build(in_features: int = 10, out_dim: int = 4):
    ...     m = nn.Linear(in_features, out_dim)
    ...     m.out_dim = out_dim
    ...     return m
    >>> create_encoder("my_linear", in_features=3).spec.input_kind
    'vector'
    """
    if modality not in MODALITIES:
        raise ConfigError(f"register_encoder({name!r}): modality {modality!r} not in {MODALITIES}")
    if input_kind not in INPUT_KINDS:
        raise ConfigError(f"register_encoder({name!r}): input_kind {input_kind!r} not in {INPUT_KINDS}")
    bad = [c for c in covariates if c not in COVARIATES]
    if bad:
        raise ConfigError(f"register_encoder({name!r}): covariates {bad} not in {COVARIATES}")
    key = f"{name}:" if family else name
    meta = dict(
        modality=modality,
        input_kind=input_kind,
        input_shape=dict(input_shape or {}),
        mpp=mpp,
        mean=tuple(mean) if mean is not None else None,
        std=tuple(std) if std is not None else None,
        description=description,
        family=family,
        heavy=heavy,
        covariates=tuple(covariates),
    )
    if family:
        _FAMILIES[name] = key
    return _REGISTRY.register(key, **meta)


def _split(name: str) -> tuple[str, str | None]:
    """Return ``(registry_key, target)``; target is the part after ``prefix:`` for families."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"encoder name must be a non-empty string, got {name!r}")
    prefix, sep, target = name.partition(":")
    if sep and prefix in _FAMILIES:
        if not target:
            raise ConfigError(f"encoder {name!r}: give a target after '{prefix}:', e.g. '{prefix}:resnet18'")
        return _FAMILIES[prefix], target
    if name in _REGISTRY:
        return name, None
    _REGISTRY.get(name)  # raises ConfigError with a did-you-mean hint
    raise AssertionError("unreachable")  # pragma: no cover


def _base_spec(name: str, meta: dict[str, Any]) -> EncoderSpec:
    return EncoderSpec(
        name=name,
        modality=meta["modality"],
        input_kind=meta["input_kind"],
        input_shape=dict(meta["input_shape"]),
        mpp=meta["mpp"],
        mean=meta["mean"],
        std=meta["std"],
        covariates=tuple(meta.get("covariates", ())),
    )


def create_encoder(name: str, **cfg: Any) -> nn.Module:
    """Build the encoder registered as ``name``.

    Parameters
    ----------
    name
        A name from :func:`list_encoders` or a family target (``"timm:vit_small_patch16_224"``,
        ``"hf:/models/minilm"``, ``"torchvision:resnet50"``, ``"monai:resnet18"``).
    **cfg
        Keyword config for the builder. ``modality``, ``mean``, ``std`` and ``mpp`` are accepted
        by every encoder and override the values recorded in ``spec``.

    Returns
    -------
    nn.Module
        Module with ``out_dim`` (int), ``spec`` (:class:`EncoderSpec`) and
        ``forward(x) -> Tensor[B, out_dim]``.

    Raises
    ------
    ConfigError
        Unknown name (with a did-you-mean hint), bad config keys or values.
    """
    key, target = _split(name)
    meta = _REGISTRY.meta(key)
    overrides = {k: cfg.pop(k) for k in SPEC_OVERRIDES if k in cfg}
    factory = _REGISTRY.get(key)
    try:
        module = factory(target, **cfg) if target is not None else factory(**cfg)
    except TypeError as exc:
        # unexpected keyword arguments are configuration errors, not crashes
        if "keyword argument" in str(exc) or "positional argument" in str(exc):
            raise ConfigError(f"encoder {name!r}: bad config {sorted(cfg)}: {exc}") from exc
        raise
    if not isinstance(getattr(module, "out_dim", None), int):
        raise ConfigError(f"encoder {name!r}: builder returned a module without an integer out_dim")
    spec = _base_spec(name, meta)
    for field, value in dict(getattr(module, "spec_updates", {}) or {}).items():
        setattr(spec, field, value)
    if "spec_updates" in module.__dict__:
        del module.__dict__["spec_updates"]
    spec.covariates = tuple(spec.covariates or ())
    bad = [c for c in spec.covariates if c not in COVARIATES]
    if bad:
        raise ConfigError(
            f"encoder {name!r}: builder declared covariates {bad}; expected names from {COVARIATES}"
        )
    for field, value in overrides.items():
        if field == "modality":
            if value not in MODALITIES:
                raise ConfigError(f"encoder {name!r}: modality {value!r} not in {MODALITIES}")
        elif field in ("mean", "std") and value is not None:
            value = tuple(float(v) for v in value)
        elif field == "mpp" and value is not None:
            value = float(value)
        setattr(spec, field, value)
    spec.config = {
        k: os.fspath(v) if isinstance(v, os.PathLike) else v for k, v in {**cfg, **overrides}.items()
    }
    module.spec = spec
    return module


def encoder_spec(name: str, **cfg: Any) -> EncoderSpec:
    """Registry metadata for ``name`` without building the encoder.

    For ``timm:<model>`` the normalisation and input size come from timm's pretrained config
    (imports timm, builds nothing); for ``hf:<folder>`` from the folder's
    ``preprocessor_config.json``/``config.json``. Values in ``cfg`` that the spec records
    (``modality``, ``mean``, ``std``, ``mpp``, ``in_features``, ``tile_px``...) are applied.
    """
    key, target = _split(name)
    meta = _REGISTRY.meta(key)
    spec = _base_spec(name, meta)
    factory = _REGISTRY.get(key)
    peek = getattr(factory, "peek_spec", None)
    if peek is not None:
        for field, value in peek(target, **cfg).items():
            setattr(spec, field, value)
    for k in list(cfg):
        if k in SPEC_OVERRIDES:
            value = cfg[k]
            setattr(spec, k, tuple(value) if k in ("mean", "std") and value is not None else value)
        elif k in spec.input_shape:
            spec.input_shape[k] = cfg[k]
    if spec.weights is None and cfg.get("pretrained_path") is not None:
        spec.weights = os.fspath(cfg["pretrained_path"])
    spec.config = dict(cfg)
    return spec


def encoder_factory(name: str) -> Callable[..., nn.Module]:
    """Return the builder registered for ``name`` (a family's builder for ``"timm:..."`` names).

    Callers inspect its signature to know which keyword arguments it takes (the recipe layer
    passes a modality's input spec, e.g. ``in_features``, only to builders that take it).
    """
    key, _ = _split(name)
    return _REGISTRY.get(key)


def list_encoders(
    modality: str | None = None, *, include_families: bool = True, include_heavy: bool = True
) -> list[str]:
    """List registered encoder names, sorted.

    Parameters
    ----------
    modality
        Keep only encoders whose default modality is this one.
    include_families
        Include prefix families as ``"timm:"``, ``"hf:"``... (they need a target after the colon).
    include_heavy
        Include large foundation-model presets (``"uni"``, ``"gigapath"``...).
    """
    out = []
    for key in _REGISTRY.names():
        meta = _REGISTRY.meta(key)
        if modality is not None and meta["modality"] != modality:
            continue
        if meta["family"] and not include_families:
            continue
        if meta["heavy"] and not include_heavy:
            continue
        out.append(key)
    return out


def describe_encoders() -> dict[str, str]:
    """``{name: one-line description}`` for every registered encoder."""
    return {k: _REGISTRY.meta(k)["description"] for k in _REGISTRY.names()}


# Register the built-ins (these modules import torch only; heavy backends load in builders).
from biomodal.nn import (  # noqa: E402, F401
    ecg,
    efficientnet,
    expression,
    fmri,
    foundation,
    hf,
    hf_clip,
    histology,
    tabular,
    text,
    timm_encoders,
    volume,
)
