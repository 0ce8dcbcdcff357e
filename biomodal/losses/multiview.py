"""Multi-view contrastive losses MV-InfoNCE and MV-DHEL, treating each modality as a view."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from biomodal.losses.base import ContrastiveLoss, LossOutput
from biomodal.losses.distributed import GlobalBatch, Selection
from biomodal.losses.registry import register_loss

__all__ = ["MVDHELLoss", "MVInfoNCELoss"]


class _MultiViewLoss(ContrastiveLoss):
    def forward(
        self, embeddings: Mapping[str, Tensor], masks: Mapping[str, Tensor] | None = None
    ) -> LossOutput:
        """Compute the loss (``embeddings`` and ``masks`` as in :class:`~biomodal.losses.ClipLoss`)."""
        embs, msk = self.parse(embeddings, masks)
        names = list(embs)
        gb = GlobalBatch(embs, msk)
        sel = gb.select(names)
        if sel.n_global == 0:
            zero = gb.anchor_zero()
            return LossOutput(zero, {"alignment": zero, "uniformity": zero})
        scale = self._scale(embs[names[0]])
        pos, neg = self._terms(sel, names, scale)
        parts = {
            "alignment": gb.finish(-pos.sum(), sel.n_global),
            "uniformity": gb.finish(neg.sum(), sel.n_global),
        }
        return LossOutput(parts["alignment"] + parts["uniformity"], parts)

    def _terms(self, sel: Selection, names: list[str], scale: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError


def _self_mask(logits: Tensor, sel: Selection) -> Tensor:
    """Set the (local row k, global column offset + k) entries to -inf."""
    rows = torch.arange(logits.shape[0], device=logits.device)
    cols = sel.targets(logits.device)
    mask = torch.zeros_like(logits, dtype=torch.bool)
    mask[rows, cols] = True
    return logits.masked_fill(mask, float("-inf"))


def _positive_lse(sel: Selection, names: list[str], scale: Tensor, ordered: bool) -> Tensor:
    """Log sum over view pairs (a != b, or a < b) of exp(s z_i^a . z_i^b), per local row."""
    terms = []
    for ia, a in enumerate(names):
        for ib, b in enumerate(names):
            if ia < ib or (ordered and ia != ib):
                terms.append(scale * (sel.local[a] * sel.local[b]).sum(-1))
    return torch.logsumexp(torch.stack(terms, dim=-1), dim=-1)


@register_loss(
    "mv_infonce", family="multi-view", needs="all views present per row (B, D); rows with gaps dropped"
)
class MVInfoNCELoss(_MultiViewLoss):
    r"""MV-InfoNCE: one InfoNCE term per sample containing every view interaction at once.

    Koromilas et al., 2025, "A Principled Framework for Multi-View Contrastive Learning".

    With views :math:`z^a_i` (``a = 1..V`` modalities, ``i = 1..N`` rows) and scale :math:`s`,

    .. math::

        L = -\frac1N \sum_i \log \frac{\sum_{a \ne b} e^{s\, z^a_i\cdot z^b_i}}
        {\sum_a \sum_{(j,b) \ne (i,a)} e^{s\, z^a_i \cdot z^b_j}},

    i.e. positives are all ordered pairs of views of the same sample and the denominator of each
    sample sums over all its views against every other embedding of the batch (any view, any
    sample, except itself), as in the authors' ``MVINFONCE``. ``parts``: ``alignment`` (the
    negated log numerator) and ``uniformity`` (the log denominator). Inputs are used as given
    (the reference code L2-normalises inside the loss). Rows with any missing view are dropped.
    """

    def _terms(self, sel: Selection, names: list[str], scale: Tensor) -> tuple[Tensor, Tensor]:
        pos = _positive_lse(sel, names, scale, ordered=True)
        blocks = []
        for a in names:
            for b in names:
                logits = scale * (sel.local[a] @ sel.glob[b].T)
                blocks.append(_self_mask(logits, sel) if a == b else logits)
        neg = torch.logsumexp(torch.cat(blocks, dim=1), dim=1)
        return pos, neg


@register_loss(
    "mv_dhel", family="multi-view", needs="all views present per row (B, D); rows with gaps dropped"
)
class MVDHELLoss(_MultiViewLoss):
    r"""MV-DHEL: multi-view decoupled hyperspherical energy loss.

    Koromilas et al., 2025, "A Principled Framework for Multi-View Contrastive Learning".

    Alignment couples all views of a sample; uniformity is decoupled, computed within each view:

    .. math::

        L = \frac1N \sum_i \Big[-\log \sum_{a<b} e^{s\, z^a_i\cdot z^b_i}
        + \sum_a \log \sum_{j \ne i} e^{s\, z^a_i \cdot z^a_j}\Big],

    as the authors' ``MVDHEL`` (``-log(pos / prod_a neg_a)``); with two views it is DHEL
    (Koromilas et al., 2024). ``parts``: ``alignment`` and ``uniformity`` as above. Inputs are used
    as given (the reference code L2-normalises inside the loss; its default temperature is 0.2,
    i.e. ``logit_scale=5``). Rows with any missing view are dropped.
    """

    def __init__(
        self,
        logit_scale: float = 5.0,
        learn_logit_scale: bool = True,
        max_logit_scale: float = 100.0,
        modalities: Sequence[str] | None = None,
    ) -> None:
        super().__init__(logit_scale, learn_logit_scale, max_logit_scale, modalities)

    def _terms(self, sel: Selection, names: list[str], scale: Tensor) -> tuple[Tensor, Tensor]:
        pos = _positive_lse(sel, names, scale, ordered=False)
        neg = 0.0
        for a in names:
            logits = _self_mask(scale * (sel.local[a] @ sel.glob[a].T), sel)
            neg = neg + torch.logsumexp(logits, dim=1)
        return pos, neg  # type: ignore[return-value]
