"""Recipe evaluation stage: run the recipe's protocols on the held-out split, write their plots.

Generic: the family supplies datasets, targets and baseline features through
:class:`~biomodal.recipes.families.PreparedData`; the protocols (``eval.protocols``) decide
what is measured. The validation function of early stopping is built from the same
protocols, so the validation and final figures come from one implementation.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from biomodal.errors import ConfigError
from biomodal.recipes.schema import Recipe

log = logging.getLogger("biomodal")

__all__ = ["evaluate", "make_context", "resolve_protocols", "validation"]


def resolve_protocols(recipe: Recipe) -> list[tuple[Any, Any]]:
    """``[(ProtocolInfo, typed config)]`` of the recipe's ``eval.protocols``, in order."""
    from biomodal.eval.protocols import get_protocol

    return [(get_protocol(p.name), p.parsed()) for p in recipe.eval.protocols]


def make_context(
    recipe: Recipe,
    model: Any,
    prepared: Any,
    split: str,
    *,
    untrained: Any | None = None,
    splits: tuple[str, ...] | None = None,
) -> Any:
    """Embed ``splits`` (default: ``train`` and ``split``) and wrap everything a protocol reads."""
    from biomodal.eval import embed
    from biomodal.eval.protocols import EvalContext

    if split not in prepared.eval_datasets:
        have = sorted(prepared.eval_datasets)
        raise ConfigError(f"eval.split {split!r}: the recipe's data have no such split (have {have})")
    splits = splits or ("train", split)
    eds = prepared.eval_datasets
    mods = list(model.modalities)
    covs = eval_covariates(model)
    features: dict[str, Callable[[str, str], Any]] = dict(prepared.features)
    if untrained is not None:
        features["untrained"] = _memo(
            lambda s, m: embed(untrained, eds[s], modalities=[m], progress=False, covariates=covs)[m]
        )
    # encoder features before the head (HEST probes encoders, not 64-d normalised head outputs)
    for key, net in (("trained_encoder", model), ("untrained_encoder", untrained)):
        if net is not None and hasattr(net, "encoders"):
            features[key] = _memo(_encoder_fn(net, eds, covs))
    embeddings = {s: embed(model, eds[s], modalities=mods, progress=False, covariates=covs) for s in splits}
    predict = getattr(getattr(model, "loss", None), "predict_proba", None)
    if callable(predict):  # a loss with a trained classifier (M3CoL's fusion head) predicts labels
        features["predictions"] = lambda s, _m: predict(embeddings[s])
    return EvalContext(
        split=split,
        embeddings=embeddings,
        obs={s: eds[s].obs for s in eds},
        modalities=tuple(mods),
        targets=dict(prepared.targets),
        coords=dict(prepared.coords),
        batch_key=getattr(recipe.data, "batch_key", None),
        label_keys=list(prepared.label_keys),
        group_key=prepared.group_key,
        group_label=prepared.group_label,
        post_hoc=recipe.batch_correction.post_hoc,
        features=features,
        unit=prepared.unit,
        loss=_final_loss(recipe),
        encode=_encoder_of(model),
        encode_untrained=_encoder_of(untrained) if untrained is not None else None,
    )


def _memo(fn: Callable[[str, str], Any]) -> Callable[[str, str], Any]:
    """Cache ``fn(split, modality)``: several protocols ask for the same baseline features."""
    cache: dict[tuple[str, str], Any] = {}

    def wrapped(split: str, modality: str) -> Any:
        if (split, modality) not in cache:
            cache[(split, modality)] = fn(split, modality)
        return cache[(split, modality)]

    return wrapped


def _encoder_fn(net: Any, eds: Any, covs: tuple[str, ...]) -> Callable[[str, str], Any]:
    def fn(split: str, modality: str) -> Any:
        from biomodal.eval.backbone import encoder_features

        return encoder_features(net, eds[split], [modality], covariates=covs)[modality]

    return fn


def _final_loss(recipe: Recipe) -> str | None:
    """Name of the loss the model finished training with (last stage of a schedule)."""
    loss = recipe.loss
    stage = loss[-1] if isinstance(loss, list) else loss
    return getattr(stage, "name", None)


def _encoder_of(model: Any) -> Callable[[str, Any], Any] | None:
    """``fn(modality, inputs) -> float32 array``: the model's embeddings, eval mode, no gradients."""
    if not callable(getattr(model, "encode", None)):
        return None

    def fn(modality: str, inputs: Any) -> Any:
        import numpy as np
        import torch

        was = model.training
        device = next((p.device for p in model.parameters()), None)
        if device is not None and isinstance(inputs, torch.Tensor):
            inputs = inputs.to(device)  # text (a list of str) is tokenised by the encoder itself
        model.eval()
        try:
            with torch.inference_mode():
                return np.asarray(model.encode(modality, inputs).float().cpu().numpy(), dtype=np.float32)
        finally:
            model.train(was)

    return fn


def eval_covariates(model: Any) -> tuple[str, ...]:
    """Covariates the model's encoders declare that evaluation passes on: all but ``batch_code``.

    A subject code selects a subject's own adapter (part of the input's meaning); a batch-effect
    code is deliberately withheld at evaluation, so no method sees held-out batch labels.
    """
    from biomodal.modalities import BATCH_CODE

    declared = getattr(model, "covariates", {}) or {}
    return tuple(sorted({c for names in declared.values() for c in names if c != BATCH_CODE}))


def validation(recipe: Recipe, prepared: Any) -> tuple[Callable[[Any], dict[str, float]] | None, str | None]:
    """Return the validation function and monitored metric of the first protocol that validates.

    Returns ``(None, None)`` when the data have no validation split or no protocol validates.
    """
    if "val" not in prepared.eval_datasets:
        return None, None
    chosen = next(((i, c) for i, c in resolve_protocols(recipe) if i.validate is not None), None)
    if chosen is None:
        return None, None
    info, cfg = chosen

    def fn(model: Any) -> dict[str, float]:
        ctx = make_context(recipe, model, prepared, "val", splits=("val",))
        return info.validate(ctx, cfg)

    return fn, info.monitor_for(cfg)


def _merge(metrics: dict[str, Any], section: str, values: dict[str, Any], protocol: str) -> None:
    node = metrics.setdefault(section, {})
    clash = sorted(set(node) & set(values))
    if clash:
        raise ConfigError(
            f"eval.protocols: {protocol!r} writes {section}.{clash[0]} that another protocol wrote"
        )
    node.update(values)


def evaluate(
    recipe: Recipe,
    model: Any,
    prepared: Any,
    run_dir: Path,
    *,
    untrained: Any | None = None,
) -> dict[str, Any]:
    """Run every protocol of the recipe on the held-out split; write plots when asked.

    Parameters
    ----------
    recipe
        The recipe (``eval.protocols``, ``eval.split``, ``eval.plots``).
    model
        The trained :class:`~biomodal.train.ContrastiveModel`.
    prepared
        The family's :class:`~biomodal.recipes.families.PreparedData`.
    run_dir
        Where ``plots/`` go.
    untrained
        The same architecture at initialisation (the ``untrained`` baseline feature).

    Returns
    -------
    dict
        ``split``, ``n_train``, ``n_test``, ``unit``, ``protocols`` (names that completed),
        one section per protocol (``retrieval``, ``expression``, ``probe``, ``batch``...) and
        ``errors`` (``{protocol: message}``) for protocols that failed; the others still run.
    """
    split = recipe.eval.split
    ctx = make_context(recipe, model, prepared, split, untrained=untrained)
    eds = prepared.eval_datasets
    metrics: dict[str, Any] = {"split": split, "n_train": len(eds["train"]), "n_test": len(eds[split]),
                               "unit": prepared.unit}  # fmt: skip
    plots = Path(run_dir) / "plots"
    done = []
    for info, cfg in resolve_protocols(recipe):
        try:
            res = info.fn(ctx, cfg)
        except MemoryError:
            raise
        except Exception as exc:  # one protocol's failure never throws away the others' figures
            log.exception("protocol %s failed", info.name)
            metrics.setdefault("errors", {})[info.name] = f"{type(exc).__name__}: {exc}"
            continue
        done.append(info.name)
        if res.metrics:
            _merge(metrics, info.section, res.metrics, info.name)
        if recipe.eval.plots:
            from biomodal.pl.protocols import plot_protocol

            plot_protocol(info.name, ctx, cfg, res, plots)
    metrics["protocols"] = done
    if recipe.eval.plots:
        from biomodal import pl
        from biomodal.pl.protocols import plot_embeddings

        plots.mkdir(parents=True, exist_ok=True)
        if (Path(run_dir) / "metrics.csv").is_file():
            pl.training_curves(Path(run_dir) / "metrics.csv", plots / "training_curves.png")
        plot_embeddings(ctx, plots)
    return metrics
