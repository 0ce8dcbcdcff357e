"""Recipe model stage: encoders, heads, loss and optional batch adversary from a recipe."""

from __future__ import annotations

from typing import Any

from biomodal.errors import ConfigError
from biomodal.recipes.schema import Recipe


def build_model(recipe: Recipe, *, n_genes: int, n_batches: int) -> Any:
    """Build the :class:`~biomodal.train.ContrastiveModel` a recipe describes.

    Parameters
    ----------
    recipe
        The validated recipe.
    n_genes
        Size of the fitted gene panel (input of the expression encoder).
    n_batches
        Number of batch categories (for conditional normalisation and the adversary).
    """
    import torch

    from biomodal.losses import get_loss
    from biomodal.nn import BatchDiscriminator, create_encoder
    from biomodal.nn.finetune import apply_lora, freeze, unfreeze_last
    from biomodal.train import ContrastiveModel

    torch.manual_seed(recipe.seed)
    encoders = {}
    for name, cfg in recipe.modalities.items():
        params = dict(cfg.params)
        if name == "expression":
            params.setdefault("in_features", n_genes)
            if recipe.batch_correction.conditional_norm:
                params.setdefault("n_batches", n_batches)
        enc = create_encoder(cfg.encoder, **params)
        if cfg.freeze:
            freeze(enc)
        if cfg.unfreeze_last is not None:
            freeze(enc)
            unfreeze_last(enc, cfg.unfreeze_last)
        if cfg.lora:
            enc = apply_lora(enc, **cfg.lora)
        encoders[name] = enc
    loss = get_loss(recipe.loss.name, **recipe.loss.params)
    adv = recipe.batch_correction.adversarial
    adversary = None
    if adv.weight > 0:
        if n_batches < 2:
            raise ConfigError(
                f"batch_correction.adversarial needs >= 2 training batches of data.batch_key "
                f"{recipe.data.batch_key!r}; the training sections have {n_batches}"
            )
        start = adv.max_reversal if adv.schedule == "constant" else 0.0
        adversary = BatchDiscriminator(recipe.model.embed_dim, n_batches, hidden=(adv.hidden,), weight=start)
    return ContrastiveModel(
        encoders,
        loss,
        embed_dim=recipe.model.embed_dim,
        head=recipe.model.head,
        adversary=adversary,
        adversary_weight=adv.weight if adversary is not None else 1.0,
    )


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
