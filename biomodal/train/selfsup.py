"""In-modality self-supervised terms (CleanCLIP; Bansal et al., 2023, ICCV).

CleanCLIP adds to the cross-modal contrastive loss, for every modality, an InfoNCE between the
embedding of a sample and that of an augmented view of the same sample. Learning each
modality's representation on its own weakens spurious cross-modal shortcuts (in CleanCLIP:
backdoor triggers that co-occur with a caption) that the cross-modal loss alone rewards.

For modality ``m`` with weight ``w_m`` the model adds ``w_m * L_m``,

    L_m = 1/(2N) sum_i [CE_j(s z_i . v_j, i) + CE_j(s v_i . z_j, i)],

``z`` the embeddings of the inputs, ``v`` those of their views (same encoder and head), ``s = 1 /
temperature`` fixed, over the rows where ``m`` is present. The view is the batch entry
``<m>_view`` (an augmentation applied by the dataset's transform) or, when the batch has none,
``augment[m](x)`` applied by the model to the present rows of the batch entry.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from biomodal.errors import ConfigError, DataError
from biomodal.losses.distributed import GlobalBatch
from biomodal.modalities import VIEW_SUFFIX, mask_key

__all__ = ["VIEW_PREFIX", "SelfSupervised", "view_infonce"]

#: Prefix of the views' embeddings in :meth:`ContrastiveModel.loss_inputs`.
VIEW_PREFIX = "view/"


def view_infonce(z: Tensor, v: Tensor, mask: Tensor | None, logit_scale: float) -> Tensor:
    """Symmetric InfoNCE between rows of ``z`` and their views ``v`` (present rows only).

    Distributed runs gather both (with gradient) as every loss in :mod:`biomodal.losses`.
    """
    m = None if mask is None else torch.as_tensor(mask, device=z.device).bool()
    gb = GlobalBatch({"x": z, "view": v.to(z.dtype)}, {"x": m, "view": m})
    sel = gb.select(["x", "view"])
    if sel.n_global == 0:
        return gb.anchor_zero()
    t = sel.targets(z.device)
    total = F.cross_entropy(logit_scale * (sel.local["x"] @ sel.glob["view"].T), t, reduction="sum")
    total = total + F.cross_entropy(logit_scale * (sel.local["view"] @ sel.glob["x"].T), t, reduction="sum")
    return gb.finish(0.5 * total, sel.n_global)


class SelfSupervised:
    """Weights, view sources and temperature of the in-modality terms of a model.

    Parameters
    ----------
    weights
        One weight for every modality (a number) or ``{modality: weight}``; modalities with
        weight 0 are skipped.
    modalities
        The model's modality names.
    augment
        Optional ``{modality: callable}`` mapping a batch entry (present rows only) to its
        augmented view; used when the batch has no ``<modality>_view`` entry.
    temperature
        Fixed temperature of the InfoNCE (SimCLR/CleanCLIP-style, default 0.1).
    """

    def __init__(
        self,
        weights: float | Mapping[str, float],
        modalities: Sequence[str],
        augment: Mapping[str, Callable[[Any], Any]] | None = None,
        temperature: float = 0.1,
    ) -> None:
        if isinstance(weights, Mapping):
            unknown = sorted(set(weights) - set(modalities))
            if unknown:
                raise ConfigError(f"self_supervised names modalities without an encoder: {unknown}")
            items = dict(weights)
        elif isinstance(weights, (int, float)) and not isinstance(weights, bool):
            items = dict.fromkeys(modalities, weights)
        else:
            raise ConfigError(
                f"self_supervised={weights!r} is invalid; expected a weight or {{modality: weight}}"
            )
        for k, w in items.items():
            ok = isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) and w >= 0
            if not ok:
                raise ConfigError(f"self_supervised[{k!r}]={w!r} is invalid; expected a finite number >= 0")
        self.weights = {k: float(w) for k, w in items.items() if w > 0}
        augment = dict(augment or {})
        unknown = sorted(set(augment) - set(modalities))
        if unknown:
            raise ConfigError(f"augment names modalities without an encoder: {unknown}")
        bad = sorted(k for k, f in augment.items() if not callable(f))
        if bad:
            raise ConfigError(f"augment[{bad[0]!r}] must be a callable batch entry -> view")
        self.augment = augment
        if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
            raise ConfigError(f"ssl_temperature={temperature!r} is invalid; expected a positive number")
        self.temperature = float(temperature)

    def view_source(self, name: str, batch: Mapping[str, Any]) -> tuple[Any, Callable[[Any], Any] | None]:
        """``(input, transform)`` of modality ``name``'s view: the batch's view or an augmentation."""
        key = f"{name}{VIEW_SUFFIX}"
        if key in batch:
            return batch[key], None
        if name in self.augment:
            return batch[name], self.augment[name]
        raise DataError(
            f"self_supervised[{name!r}] needs an augmented view: a batch entry {key!r} (from the dataset's "
            f"transform) or augment={{{name!r}: callable}} on the model"
        )

    def terms(self, embeddings: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Unweighted InfoNCE of every weighted modality present in ``embeddings``."""
        out = {}
        for name in self.weights:
            vk = VIEW_PREFIX + name
            if name in embeddings and vk in embeddings:
                z = embeddings[name]
                out[name] = view_infonce(
                    z, embeddings[vk], embeddings.get(mask_key(name)), 1.0 / self.temperature
                )
        return out

    def __repr__(self) -> str:
        aug = sorted(self.augment)
        return f"SelfSupervised(weights={self.weights}, augment={aug}, temperature={self.temperature:g})"
