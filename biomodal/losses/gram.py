"""GRAM: contrastive loss on the Gramian volume spanned by k modality vectors."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from biomodal.errors import ConfigError, DataError
from biomodal.losses.base import ContrastiveLoss, LossOutput
from biomodal.losses.distributed import GlobalBatch
from biomodal.losses.registry import register_loss

__all__ = ["GramLoss", "gram_volume"]


def gram_volume(anchor: Tensor, others: Sequence[Tensor], eps: float = 0.0) -> Tensor:
    r"""Volume :math:`\sqrt{|\det G|}` of the parallelotope of ``anchor[i]`` and ``others[*][j]``.

    Parameters
    ----------
    anchor
        ``(B, D)``.
    others
        ``k - 1`` tensors of shape ``(N, D)``.
    eps
        Added under the square root (keeps the gradient finite at zero volume).

    Returns
    -------
    Tensor
        ``(B, N)``: entry ``(i, j)`` is the volume of ``(anchor_i, others[0]_j, ..., others[-1]_j)``.
    """
    b, n, k = anchor.shape[0], others[0].shape[0], len(others) + 1
    rows = [[None] * k for _ in range(k)]
    rows[0][0] = (anchor * anchor).sum(-1)[:, None].expand(b, n)
    for p, o in enumerate(others, start=1):
        cross = anchor @ o.T
        rows[0][p] = rows[p][0] = cross
        for r in range(p, k):
            v = (o * others[r - 1]).sum(-1)[None, :].expand(b, n)
            rows[p][r] = rows[r][p] = v
    gram = torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)  # (B, N, k, k)
    return torch.sqrt(torch.linalg.det(gram).abs() + eps)


@register_loss("gram", family="n-way", needs="all modalities present per row (B, D); rows with gaps dropped")
class GramLoss(ContrastiveLoss):
    r"""GRAM contrastive loss on the Gramian volume.

    Cicchetti et al., 2025, "Gramian Multimodal Representation Learning and Alignment", ICLR.

    With anchor modality :math:`a` and the other ``k - 1 >= 1`` modalities :math:`m_1..m_{k-1}`,
    let :math:`V_{ij} = \sqrt{|\det G(a_i, m_{1,j}, \dots, m_{k-1,j})|}` be the volume of the
    parallelotope spanned by the anchor of row i and the other modalities of row j
    (:math:`G` their k x k Gram matrix). The volume is a dissimilarity, so the logits are
    :math:`-s V_{ij}` and, as in the GRAM code (data-to-anchor and anchor-to-data terms),

    .. math::

        L = \frac{1}{2N}\sum_i \Big[-\log\frac{e^{-sV_{ii}}}{\sum_j e^{-sV_{ij}}}
        -\log\frac{e^{-sV_{ii}}}{\sum_j e^{-sV_{ji}}}\Big].

    The volume equals the norm-weighted sine for k = 2 and is only a meaningful alignment
    measure for unit vectors: the inputs are used as given (normalise them in the model, as the
    GRAM code does). Rows with any missing modality are dropped. ``anchor`` defaults to the first
    modality. ``eps`` is added under the square root (0 reproduces the paper exactly).
    """

    def __init__(
        self,
        logit_scale: float = 1 / 0.07,
        learn_logit_scale: bool = True,
        max_logit_scale: float = 100.0,
        modalities: Sequence[str] | None = None,
        anchor: str | None = None,
        eps: float = 1e-12,
    ) -> None:
        super().__init__(logit_scale, learn_logit_scale, max_logit_scale, modalities)
        if eps < 0:
            raise ConfigError(f"eps must be >= 0, got {eps!r}")
        self.anchor = anchor
        self.eps = float(eps)

    def forward(
        self, embeddings: Mapping[str, Tensor], masks: Mapping[str, Tensor] | None = None
    ) -> LossOutput:
        """Compute the loss (``embeddings`` and ``masks`` as in :class:`~biomodal.losses.ClipLoss`)."""
        embs, msk = self.parse(embeddings, masks)
        names = list(embs)
        anchor = self.anchor or names[0]
        if anchor not in embs:
            raise DataError(f"anchor modality {anchor!r} is not among the embeddings {names}")
        others = [m for m in names if m != anchor]
        gb = GlobalBatch(embs, msk)
        sel = gb.select(names, need_global=gb.world > 1)
        scale = self._scale(embs[anchor])
        if sel.n_global == 0:
            zero = gb.anchor_zero()
            return LossOutput(zero, {"anchor_to_data": zero, "data_to_anchor": zero})
        t = sel.targets(gb.device)
        if gb.world == 1:
            logits = -scale * gram_volume(sel.local[anchor], [sel.local[o] for o in others], self.eps)
            a2d = F.cross_entropy(logits, t, reduction="sum")
            d2a = F.cross_entropy(logits.T, t, reduction="sum")
        else:
            vol = gram_volume(sel.local[anchor], [sel.glob[o] for o in others], self.eps)
            a2d = F.cross_entropy(-scale * vol, t, reduction="sum")
            vol_t = gram_volume(sel.glob[anchor], [sel.local[o] for o in others], self.eps)
            d2a = F.cross_entropy(-scale * vol_t.T, t, reduction="sum")
        parts = {
            "anchor_to_data": gb.finish(a2d, sel.n_global),
            "data_to_anchor": gb.finish(d2a, sel.n_global),
        }
        return LossOutput((parts["anchor_to_data"] + parts["data_to_anchor"]) / 2, parts)

    def extra_repr(self) -> str:
        """Describe the configuration in ``repr``."""
        return f"{super().extra_repr()}, anchor={self.anchor!r}, eps={self.eps}"
