"""Symmetric InfoNCE (CLIP / ALIGN) over any number of modalities."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import ClassVar

import torch
from torch import Tensor

from biomodal.errors import ConfigError, DataError
from biomodal.losses._chunked import infonce_rows
from biomodal.losses.base import ContrastiveLoss, LossOutput
from biomodal.losses.distributed import GlobalBatch
from biomodal.losses.registry import register_loss
from biomodal.modalities import BATCH_CODE

__all__ = ["ClipLoss", "modality_pairs"]


def modality_pairs(names: Sequence[str], anchor: str | None) -> list[tuple[str, str]]:
    """All unordered pairs of ``names``, or ``(anchor, other)`` pairs when ``anchor`` is given."""
    if anchor is None:
        return list(itertools.combinations(names, 2))
    if anchor not in names:
        raise DataError(f"anchor modality {anchor!r} is not among the embeddings {list(names)}")
    return [(anchor, m) for m in names if m != anchor]


@register_loss("clip", family="pairwise", needs="paired embeddings (B, D) per modality, L2-normalised")
class ClipLoss(ContrastiveLoss):
    r"""Symmetric InfoNCE of CLIP (Radford et al., 2021) and ALIGN (Jia et al., 2021).

    For a pair of modalities with embeddings :math:`x_i, y_i` (``i = 1..N``) and scale :math:`s`,

    .. math::

        \ell_{x\to y} = -\frac1N \sum_i \log \frac{e^{s\, x_i\cdot y_i}}{\sum_j w_{ij} e^{s\, x_i\cdot y_j}},
        \qquad L_{xy} = \tfrac12 (\ell_{x\to y} + \ell_{y\to x}),

    with :math:`w_{ij} = 1`, or, when ``batch_code=`` labels are given,
    :math:`w_{ij} = 1` for rows of the same batch and ``cross_batch_negative_weight`` otherwise
    (0 removes negatives from other batches, the positive is always kept). With more than two
    modalities the loss is the mean of :math:`L_{xy}` over all pairs, or over the pairs
    ``(anchor, other)`` when ``anchor`` is set; ``parts`` holds each pair's term (``"a-b"``).

    Inputs are used as given (not L2-normalised). Each pair uses only the rows where both
    modalities are present. ``chunk_size`` switches to a streamed kernel with a custom backward
    (online log-sum-exp) whose extra memory is O(chunk_size x N) in forward and backward.

    Parameters
    ----------
    logit_scale, learn_logit_scale, max_logit_scale, modalities
        See :class:`~biomodal.losses.base.ContrastiveLoss`.
    anchor
        Pair every other modality with this one only (ImageBind style).
    chunk_size
        Rows per block of the memory-bounded kernel (``None``: plain autograd).
    cross_batch_negative_weight
        Weight in ``[0, 1]`` of negatives from another batch label (``batch_code=`` in
        ``forward``, the batch dict's ``"batch_code"`` in training).
    """

    extra_keys: ClassVar[tuple[str, ...]] = (BATCH_CODE,)

    def __init__(
        self,
        logit_scale: float = 1 / 0.07,
        learn_logit_scale: bool = True,
        max_logit_scale: float = 100.0,
        modalities: Sequence[str] | None = None,
        anchor: str | None = None,
        chunk_size: int | None = None,
        cross_batch_negative_weight: float = 1.0,
    ) -> None:
        super().__init__(logit_scale, learn_logit_scale, max_logit_scale, modalities)
        if not 0.0 <= cross_batch_negative_weight <= 1.0:
            raise ConfigError(
                f"cross_batch_negative_weight must be in [0, 1], got {cross_batch_negative_weight!r}"
            )
        if chunk_size is not None and int(chunk_size) < 1:
            raise ConfigError(f"chunk_size must be a positive integer or None, got {chunk_size!r}")
        self.anchor = anchor
        self.chunk_size = None if chunk_size is None else int(chunk_size)
        self.cross_batch_negative_weight = float(cross_batch_negative_weight)

    def forward(
        self,
        embeddings: Mapping[str, Tensor],
        masks: Mapping[str, Tensor] | None = None,
        batch_code: Tensor | None = None,
    ) -> LossOutput:
        """Compute the loss.

        Parameters
        ----------
        embeddings
            ``{name: (B, D)}`` plus optional ``{name}_mask`` booleans.
        masks
            Presence masks by modality name (override those in ``embeddings``).
        batch_code
            Integer batch-effect code per row, ``(B,)``; used when
            ``cross_batch_negative_weight < 1``.
        """
        embs, msk = self.parse(embeddings, masks)
        gb = GlobalBatch(embs, msk)
        scale = self._scale(next(iter(embs.values())))
        w = self.cross_batch_negative_weight
        use_batch = batch_code is not None and w < 1.0
        if use_batch:
            batch = torch.as_tensor(batch_code, device=gb.device)
            if batch.shape != (gb.shard.sizes[gb.shard.rank],):
                raise DataError(
                    f"batch_code must have shape ({gb.shard.sizes[gb.shard.rank]},), got {tuple(batch.shape)}"
                )
            batch_glob = gb.gather(batch.long())
        parts: dict[str, Tensor] = {}
        for a, b in modality_pairs(list(embs), self.anchor):
            fast = gb.world == 1 and self.chunk_size is None
            sel = gb.select([a, b], need_global=not fast)
            if sel.n_global == 0:
                parts[f"{a}-{b}"] = gb.anchor_zero()
                continue
            qb = kb = None
            if use_batch:
                qb = batch if sel.local_rows is None else batch[sel.local_rows]
                kb = batch_glob if sel.global_rows is None else batch_glob[sel.global_rows]
            xa, xb = sel.local[a], sel.local[b]
            if fast:
                total = _symmetric_sum(xa, xb, scale, qb, w)
            else:
                t = sel.targets(gb.device)
                kw = {"chunk": self.chunk_size, "q_batch": qb, "k_batch": kb, "cross_batch_weight": w}
                total = infonce_rows(xa, sel.glob[b], scale, t, **kw)
                total = total + infonce_rows(xb, sel.glob[a], scale, t, **kw)
            parts[f"{a}-{b}"] = gb.finish(total * 0.5, sel.n_global)
        loss = torch.stack(list(parts.values())).mean()
        return LossOutput(loss, parts)

    def distill_pairs(self, names: Sequence[str]) -> list[tuple[str, str]]:
        """Return the pairs this loss contrasts (all, or ``(anchor, other)``)."""
        return modality_pairs(list(names), self.anchor)

    def extra_repr(self) -> str:
        """Describe the configuration in ``repr``."""
        return (
            f"{super().extra_repr()}, anchor={self.anchor!r}, chunk_size={self.chunk_size}, "
            f"cross_batch_negative_weight={self.cross_batch_negative_weight}"
        )


def _symmetric_sum(x: Tensor, y: Tensor, scale: Tensor, batch: Tensor | None, w: float) -> Tensor:
    """``sum_i CE(row i) + sum_i CE(column i)`` of one logits matrix (single process)."""
    logits = (scale * x) @ y.T
    if batch is not None:
        same = batch[:, None] == batch[None, :]
        logw = torch.log(torch.tensor(w, dtype=logits.dtype, device=logits.device))
        logits = logits + torch.where(same, torch.zeros_like(logw), logw)
    t = torch.arange(x.shape[0], device=x.device)
    ce = torch.nn.functional.cross_entropy
    return ce(logits, t, reduction="sum") + ce(logits.T, t, reduction="sum")
