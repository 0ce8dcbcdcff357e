"""CLIP plus alignment and (cross-modal) uniformity terms."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from biomodal.errors import ConfigError
from biomodal.losses.base import LossOutput
from biomodal.losses.clip import ClipLoss, modality_pairs
from biomodal.losses.distributed import GlobalBatch, Selection, log_mean_exp_global
from biomodal.losses.registry import register_loss

__all__ = ["ClipUniformityLoss"]


def _log_mean_exp_sqdist(gb: GlobalBatch, sel: Selection, a: str, b: str, t: float) -> Tensor:
    """``log mean_{i != j} exp(-t ||a_i - b_j||^2)`` over the selected rows (exact when distributed)."""
    x, y = sel.local[a], sel.glob[b]
    sq = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2 * (x @ y.T)
    e = -t * sq.clamp_min(0)
    rows = torch.arange(x.shape[0], device=x.device)
    e = e.index_put((rows, sel.targets(x.device)), e.new_tensor(float("-inf")))
    n = sel.n_global
    return log_mean_exp_global(gb, torch.logsumexp(e.flatten(), 0), float(n * (n - 1)))


@register_loss("clip_uniformity", family="pairwise", needs="paired embeddings (B, D), L2-normalised")
class ClipUniformityLoss(ClipLoss):
    r"""CLIP plus alignment, uniformity and cross-modal uniformity.

    Following Fahim et al. (2024, "It's Not a Modality Gap: Characterizing and Addressing the
    Contrastive Gap"), who add the alignment and uniformity objectives of Wang & Isola (2020,
    "Understanding Contrastive Representation Learning through Alignment and Uniformity on the
    Hypersphere") to the CLIP loss, and a uniformity term across modalities:

    .. math::

        L = w_c L_{\mathrm{CLIP}} + w_a \overline{L_{\mathrm{align}}} + w_u \overline{L_{\mathrm{unif}}}
        + w_x \overline{L_{\mathrm{xunif}}},

    with, for modalities :math:`x, y`,

    .. math::

        L_{\mathrm{align}}^{xy} = \frac1N \sum_i \lVert x_i - y_i\rVert^{\alpha}, \quad
        L_{\mathrm{unif}}^{x} = \log \frac{1}{N(N-1)} \sum_{i\ne j} e^{-t\lVert x_i - x_j\rVert^2}, \quad
        L_{\mathrm{xunif}}^{xy} = \log \frac{1}{N(N-1)} \sum_{i\ne j} e^{-t\lVert x_i - y_j\rVert^2}.

    Alignment and cross-uniformity are averaged over modality pairs (those of the CLIP term),
    uniformity over modalities. ``parts`` holds ``clip``, each pair (``"a-b"``), ``align``,
    ``uniform`` and ``cross_uniform`` (unweighted). Uniformity of a modality uses the rows where
    it is present; pair terms rows where both are. Inputs are used as given: the terms assume
    unit vectors. ``t = 2`` and ``alpha = 2`` as Wang & Isola.

    Parameters
    ----------
    clip_weight, align_weight, uniform_weight, cross_uniform_weight
        The weights :math:`w_c, w_a, w_u, w_x` (all 1 by default).
    uniformity_t, align_alpha
        :math:`t` and :math:`\alpha`.
    logit_scale, learn_logit_scale, max_logit_scale, modalities
        As for :class:`~biomodal.losses.clip.ClipLoss`.
    anchor, chunk_size, cross_batch_negative_weight
        As for :class:`~biomodal.losses.clip.ClipLoss`.
    """

    def __init__(
        self,
        logit_scale: float = 1 / 0.07,
        learn_logit_scale: bool = True,
        max_logit_scale: float = 100.0,
        modalities: Sequence[str] | None = None,
        anchor: str | None = None,
        chunk_size: int | None = None,
        cross_batch_negative_weight: float = 1.0,
        clip_weight: float = 1.0,
        align_weight: float = 1.0,
        uniform_weight: float = 1.0,
        cross_uniform_weight: float = 1.0,
        uniformity_t: float = 2.0,
        align_alpha: float = 2.0,
    ) -> None:
        super().__init__(
            logit_scale,
            learn_logit_scale,
            max_logit_scale,
            modalities,
            anchor,
            chunk_size,
            cross_batch_negative_weight,
        )
        for key, v in (("clip_weight", clip_weight), ("align_weight", align_weight),
                       ("uniform_weight", uniform_weight), ("cross_uniform_weight", cross_uniform_weight),
                       ("uniformity_t", uniformity_t), ("align_alpha", align_alpha)):  # fmt: skip
            if not v >= 0:
                raise ConfigError(f"{key} must be >= 0, got {v!r}")
        self.weights = {"clip": clip_weight, "align": align_weight, "uniform": uniform_weight,
                        "cross_uniform": cross_uniform_weight}  # fmt: skip
        self.uniformity_t = float(uniformity_t)
        self.align_alpha = float(align_alpha)

    def forward(
        self,
        embeddings: Mapping[str, Tensor],
        masks: Mapping[str, Tensor] | None = None,
        batch_code: Tensor | None = None,
    ) -> LossOutput:
        """Compute the loss (arguments as :meth:`biomodal.losses.clip.ClipLoss.forward`)."""
        clip = super().forward(embeddings, masks, batch_code)
        embs, msk = self.parse(embeddings, masks)
        gb = GlobalBatch(embs, msk)
        t = self.uniformity_t
        align, xunif, unif = [], [], []
        for a, b in modality_pairs(list(embs), self.anchor):
            sel = gb.select([a, b])
            if sel.n_global == 0:
                continue
            d = (sel.local[a] - sel.local[b]).norm(dim=1).pow(self.align_alpha).sum()
            align.append(gb.finish(d, sel.n_global))
            xunif.append(_log_mean_exp_sqdist(gb, sel, a, b, t))
        for m in embs:
            sel = gb.select([m])
            if sel.n_global > 1:
                unif.append(_log_mean_exp_sqdist(gb, sel, m, m, t))
        zero = gb.anchor_zero()
        parts = {"clip": clip.loss, **clip.parts}
        for key, vals in (("align", align), ("uniform", unif), ("cross_uniform", xunif)):
            parts[key] = torch.stack(vals).mean() if vals else zero
        loss = sum(self.weights[k] * parts[k] for k in self.weights)
        return LossOutput(loss, parts)  # type: ignore[arg-type]

    def extra_repr(self) -> str:
        """Describe the configuration in ``repr``."""
        w = ", ".join(f"{k}_weight={v}" for k, v in self.weights.items())
        return (
            f"{super().extra_repr()}, {w}, uniformity_t={self.uniformity_t}, align_alpha={self.align_alpha}"
        )
