"""Recipe model stage: encoders, heads, loss and optional batch adversary from a recipe."""

from __future__ import annotations

from typing import Any

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
    adv_cfg = recipe.batch_correction.adversarial
    adversary = None
    if adv_cfg.weight > 0:
        adversary = BatchDiscriminator(
            recipe.model.embed_dim, n_batches, hidden=adv_cfg.hidden, weight=adv_cfg.weight
        )
    return ContrastiveModel(
        encoders,
        loss,
        embed_dim=recipe.model.embed_dim,
        head=recipe.model.head,
        adversary=adversary,
        adversary_modalities=tuple(m for m in adv_cfg.modalities if m in encoders),
        adversary_schedule=adv_cfg.schedule,
    )
