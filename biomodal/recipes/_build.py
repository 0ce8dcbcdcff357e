"""Recipe model stage: encoders, heads, loss and optional batch adversary from a recipe."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from biomodal.errors import ConfigError
from biomodal.recipes.schema import Recipe


def _accepts(factory: Any, key: str) -> bool:
    """Whether an encoder builder takes keyword ``key`` (explicitly or through ``**kwargs``)."""
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == key or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def build_loss(recipe: Recipe) -> Any:
    """Build the recipe's loss: one registered loss, or a schedule of stages."""
    from biomodal.losses import get_loss

    if not isinstance(recipe.loss, list):
        return get_loss(recipe.loss.name, **recipe.loss.params)
    from biomodal.losses import ScheduledLoss

    stages = [(get_loss(s.name, **s.params), s.until_step) for s in recipe.loss]
    return ScheduledLoss(stages, names=[s.name for s in recipe.loss])


def check_names(recipe: Recipe) -> None:
    """Fail fast, before any data are read, on an encoder or loss name no registry knows."""
    from biomodal.losses.registry import loss_info
    from biomodal.nn.registry import encoder_factory

    for name, cfg in recipe.modalities.items():
        try:
            encoder_factory(cfg.encoder)
        except ConfigError as exc:
            raise ConfigError(f"modalities.{name}.encoder: {exc}") from None
    stages = recipe.loss if isinstance(recipe.loss, list) else [recipe.loss]
    for i, stage in enumerate(stages):
        try:
            loss_info(stage.name)
        except ConfigError as exc:
            where = f"loss[{i}].name" if isinstance(recipe.loss, list) else "loss.name"
            raise ConfigError(f"{where}: {exc}") from None


def build_model(
    recipe: Recipe,
    *,
    input_specs: Mapping[str, Mapping[str, Any]],
    n_batches: int,
) -> Any:
    """Build the :class:`~biomodal.train.ContrastiveModel` a recipe describes.

    Parameters
    ----------
    recipe
        The validated recipe.
    input_specs
        ``{modality: {builder keyword: value}}`` from the family (``{"in_features": 213}``
        for a gene panel); each value is given to the modality's encoder builder when the
        builder takes that keyword and the recipe does not set it.
    n_batches
        Number of batch categories of the training data (for conditional normalisation, given
        to every builder taking ``n_batches``, and for the adversary).
    """
    import torch

    from biomodal.nn import BatchDiscriminator, create_encoder
    from biomodal.nn.finetune import apply_lora, freeze, unfreeze_last
    from biomodal.nn.registry import encoder_factory
    from biomodal.train import ContrastiveModel

    torch.manual_seed(recipe.seed)
    encoders = {}
    for name, cfg in recipe.modalities.items():
        params = dict(cfg.params)
        factory = encoder_factory(cfg.encoder)
        wanted = dict(input_specs.get(name, {}))
        if recipe.batch_correction.conditional_norm:
            wanted["n_batches"] = n_batches
        for key, value in wanted.items():
            if _accepts(factory, key):
                params.setdefault(key, value)
        enc = create_encoder(cfg.encoder, **params)
        if cfg.freeze:
            freeze(enc)
        if cfg.unfreeze_last is not None:
            freeze(enc)
            unfreeze_last(enc, cfg.unfreeze_last)
        if cfg.lora:
            enc = apply_lora(enc, **cfg.lora)
        encoders[name] = enc
    loss = build_loss(recipe)
    adv = recipe.batch_correction.adversarial
    adversary = None
    if adv.weight > 0:
        if n_batches < 2:
            raise ConfigError(
                f"batch_correction.adversarial needs >= 2 training batches of data.batch_key "
                f"{getattr(recipe.data, 'batch_key', None)!r}; the training data have {n_batches}"
            )
        start = adv.max_reversal if adv.schedule == "constant" else 0.0
        adversary = BatchDiscriminator(recipe.model.embed_dim, n_batches, hidden=(adv.hidden,), weight=start)
    m = recipe.model
    model = ContrastiveModel(
        encoders,
        loss,
        embed_dim=m.embed_dim,
        head=m.head,
        adversary=adversary,
        adversary_weight=adv.weight if adversary is not None else 1.0,
        distill=m.distill.model_dump() if m.distill is not None else None,
        self_supervised=m.self_supervised,
        ssl_temperature=m.ssl_temperature,
    )
    for name, cfg in recipe.modalities.items():
        if cfg.freeze:  # fully frozen: eval mode too, so BatchNorm statistics and dropout stay fixed
            model.freeze(name)
    return model


class ReversalSchedule:
    """Trainer callback ramping the adversary's gradient-reversal weight (DANN schedule)."""

    def __init__(self, max_weight: float, kind: str) -> None:
        self.max_weight, self.kind = float(max_weight), kind

    def _set(self, trainer: Any, step: int) -> None:
        from biomodal.nn.adversarial import grl_schedule

        adversary = getattr(trainer.model, "adversary", None)
        if adversary is not None:
            adversary.weight = grl_schedule(step, trainer.total_steps, self.max_weight, kind=self.kind)

    def on_train_start(self, trainer: Any) -> None:
        """Set the weight for the (possibly resumed) first step."""
        self._set(trainer, trainer.step)

    def on_step_end(self, trainer: Any, step: int, row: Any) -> None:
        """Advance the weight after each optimiser step."""
        self._set(trainer, step)
