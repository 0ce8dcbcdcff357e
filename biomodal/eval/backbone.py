"""Encoder features before the projection head: the baseline HEST-style probes need.

A contrastive model embeds through encoder -> head -> L2 normalisation. HEST-Benchmark probes
the *encoder's* features (hundreds to thousands of dimensions); probing only the 64-128-d
normalised head output makes PCA-256 a no-op and changes the ridge penalty. :class:`EncoderView`
wraps a model so :func:`biomodal.eval.embed` returns the encoder's own features (the encoder's
recorded input normalisation still applied), for the trained model and for the same
architecture at initialisation alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from biomodal.errors import DataError
from biomodal.nn.pixels import prepare_pixels

__all__ = ["EncoderView", "encoder_features"]


class EncoderView(nn.Module):
    """A model whose ``encode(name, x)`` returns the encoder's features, before the head.

    Parameters
    ----------
    model
        An object with ``encoders`` (``{modality: nn.Module}``, e.g. a
        :class:`~biomodal.train.ContrastiveModel`) and ``modalities``.
    """

    def __init__(self, model: Any) -> None:
        super().__init__()
        if not hasattr(model, "encoders"):
            raise DataError(f"EncoderView needs a model with .encoders, got {type(model).__name__}")
        self.model = model
        self.training = bool(getattr(model, "training", False))  # embed() restores this mode afterwards

    @property
    def modalities(self) -> tuple[str, ...]:
        """The wrapped model's modalities."""
        return tuple(self.model.modalities)

    def encode(self, name: str, x: Any, **covariates: Any) -> torch.Tensor:
        """Return the encoder features of modality ``name`` as ``(B, D)`` (no head, no L2 norm)."""
        if name not in self.model.encoders:
            raise DataError(f"model has no encoder for {name!r}; modalities are {list(self.modalities)}")
        enc = self.model.encoders[name]
        spec = getattr(enc, "spec", None)
        x = prepare_pixels(x, spec)
        wanted = {k: v for k, v in covariates.items() if spec is not None and k in spec.covariates}
        out = enc(x, **wanted)
        return out.flatten(1) if out.ndim > 2 else out

    def encode_features(self, name: str, features: torch.Tensor) -> torch.Tensor:
        """Return cached features of the (frozen) encoder as they are: they are its features."""
        if name not in self.model.encoders:
            raise DataError(f"model has no encoder for {name!r}; modalities are {list(self.modalities)}")
        return features.flatten(1) if features.ndim > 2 else features

    def __repr__(self) -> str:
        return f"EncoderView({type(self.model).__name__}, modalities={list(self.modalities)})"


def encoder_features(
    model: Any, dataset: Any, modalities: Sequence[str], **embed_kw: Any
) -> dict[str, np.ndarray]:
    """``{modality: (n, D) float32}`` encoder features of every item of ``dataset`` (before the head).

    ``embed_kw`` go to :func:`biomodal.eval.embed` (``batch_size``, ``device``, ``progress``...).
    """
    from biomodal.eval import embed

    embed_kw.setdefault("progress", False)
    out = embed(EncoderView(model), dataset, modalities=list(modalities), **embed_kw)
    return {m: np.asarray(out[m], dtype=np.float32) for m in modalities}
