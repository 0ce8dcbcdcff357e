"""CWCL: contrastive loss with continuous weights from a reference similarity."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from biomodal.errors import ConfigError, DataError
from biomodal.losses.base import ContrastiveLoss, LossOutput
from biomodal.losses.clip import modality_pairs
from biomodal.losses.distributed import GlobalBatch, Selection
from biomodal.losses.registry import register_loss

__all__ = ["CwclLoss", "reference_similarity"]


def reference_similarity(
    gb: GlobalBatch, sel: Selection, reference: Tensor, kind: str, normalize: bool
) -> Tensor:
    """Similarity of the local selected rows to the global selected rows from ``reference``.

    ``reference`` is either a similarity matrix ``(B_local, N_global)`` (``(B, B)`` in one
    process) or per-row reference embeddings ``(B_local, D')`` (gathered, optionally L2-normalised).
    ``kind="auto"`` takes a matrix whose shape is ``(B_local, N_global)`` as a similarity.
    """
    reference = torch.as_tensor(reference, device=gb.device)
    n_local, n_global = gb.shard.sizes[gb.shard.rank], gb.shard.n_global
    if reference.ndim != 2 or reference.shape[0] != n_local:
        raise DataError(
            f"reference must have shape ({n_local}, N_global or D'), got {tuple(reference.shape)}"
        )
    if kind == "auto":
        kind = "similarity" if reference.shape[1] == n_global else "embedding"
    if kind == "similarity":
        if reference.shape[1] != n_global:
            raise DataError(f"a reference similarity must have shape ({n_local}, {n_global})")
        sim = reference if sel.local_rows is None else reference[sel.local_rows]
        return sim if sel.global_rows is None else sim[:, sel.global_rows]
    if kind != "embedding":
        raise ConfigError(f"reference_kind must be 'auto', 'similarity' or 'embedding', got {kind!r}")
    r = F.normalize(reference, dim=1) if normalize else reference
    r_glob = gb.gather(r.detach() if not r.requires_grad else r, grad=r.requires_grad)
    r_loc = r if sel.local_rows is None else r[sel.local_rows]
    r_glob = r_glob if sel.global_rows is None else r_glob[sel.global_rows]
    return r_loc @ r_glob.T


_KINDS = ("auto", "similarity", "embedding")


def _check_kind(kind: str) -> str:
    if kind not in _KINDS:
        raise ConfigError(f"reference_kind must be one of {_KINDS}, got {kind!r}")
    return kind


@register_loss(
    "cwcl", family="pairwise", needs="paired embeddings (B, D) plus reference= similarity or embedding"
)
class CwclLoss(ContrastiveLoss):
    r"""Continuously weighted contrastive loss, CWCL.

    Srinivasa et al., 2023, "CWCL: Cross-Modal Transfer with Continuously Weighted Contrastive
    Loss", NeurIPS.

    Instead of one positive per row, every pair ``(i, j)`` is a positive to the degree
    :math:`w_{ij} = (1 + r_{ij}) / 2 \in [0, 1]`, where :math:`r_{ij}` is a similarity between
    samples i and j given by a reference (in the paper: the frozen pretrained modality's
    intra-modal cosine similarity). For modalities :math:`x, y` and scale :math:`s`,

    .. math::

        \ell_{x\to y} = -\frac1N \sum_i \frac{1}{\sum_j w_{ij}} \sum_j w_{ij}
        \log \frac{e^{s\, x_i\cdot y_j}}{\sum_k e^{s\, x_i\cdot y_k}}, \qquad
        L_{xy} = \tfrac12(\ell_{x\to y} + \ell_{y\to x}),

    averaged over modality pairs (all, or ``(anchor, other)``). Pass ``reference=`` to ``forward``
    as a ``(B, B)`` similarity in ``[-1, 1]`` (``(B_local, N_global)`` rows when distributed) or as
    ``(B, D')`` reference embeddings, which are L2-normalised here so that ``r`` is a cosine
    similarity; the weights carry no gradient unless the reference does. The same row weights
    ``w_ij`` serve both directions (they are symmetric for embedding references). The
    embeddings themselves are used as given. Each pair uses rows where both are present.

    In training, :class:`~biomodal.train.ContrastiveModel` passes the batch dict's
    ``"reference"`` entry (:attr:`extra_keys`), e.g. per-row reference embeddings produced by the
    dataset.

    Parameters
    ----------
    logit_scale, learn_logit_scale, max_logit_scale, modalities
        See :class:`~biomodal.losses.base.ContrastiveLoss`.
    anchor
        Pair every other modality with this one only.
    reference_kind
        ``"auto"`` (a ``(B_local, N_global)`` matrix is a similarity, anything else reference
        embeddings), ``"similarity"`` or ``"embedding"``; ``forward(reference_kind=...)``
        overrides it for one call.
    """

    extra_keys: ClassVar[tuple[str, ...]] = ("reference",)

    def __init__(
        self,
        logit_scale: float = 1 / 0.07,
        learn_logit_scale: bool = True,
        max_logit_scale: float = 100.0,
        modalities: Sequence[str] | None = None,
        anchor: str | None = None,
        reference_kind: str = "auto",
    ) -> None:
        super().__init__(logit_scale, learn_logit_scale, max_logit_scale, modalities)
        self.anchor = anchor
        self.reference_kind = _check_kind(reference_kind)

    def forward(
        self,
        embeddings: Mapping[str, Tensor],
        masks: Mapping[str, Tensor] | None = None,
        reference: Tensor | None = None,
        reference_kind: str | None = None,
    ) -> LossOutput:
        """Compute the loss; ``reference`` is required (see the class docstring)."""
        if reference is None:
            raise DataError(
                "cwcl needs reference= (a (B, B) similarity or (B, D') reference embeddings; in "
                "training the batch dict's 'reference' entry)"
            )
        kind = self.reference_kind if reference_kind is None else _check_kind(reference_kind)
        embs, msk = self.parse(embeddings, masks)
        gb = GlobalBatch(embs, msk)
        scale = self._scale(next(iter(embs.values())))
        parts: dict[str, Tensor] = {}
        for a, b in modality_pairs(list(embs), self.anchor):
            sel = gb.select([a, b])
            if sel.n_global == 0:
                parts[f"{a}-{b}"] = gb.anchor_zero()
                continue
            w = (1.0 + reference_similarity(gb, sel, reference, kind, normalize=True)) / 2
            w = w.to(scale.dtype)
            w = w / w.sum(dim=1, keepdim=True)
            total = 0.0
            for q, k in ((sel.local[a], sel.glob[b]), (sel.local[b], sel.glob[a])):
                logp = torch.log_softmax(scale * (q @ k.T), dim=1)
                total = total - (w * logp).sum()
            parts[f"{a}-{b}"] = gb.finish(total * 0.5, sel.n_global)  # type: ignore[arg-type]
        return LossOutput(torch.stack(list(parts.values())).mean(), parts)

    def distill_pairs(self, names: Sequence[str]) -> list[tuple[str, str]]:
        """Return the pairs this loss contrasts (all, or ``(anchor, other)``)."""
        return modality_pairs(list(names), self.anchor)

    def extra_repr(self) -> str:
        """Describe the configuration in ``repr``."""
        return f"{super().extra_repr()}, anchor={self.anchor!r}, reference_kind={self.reference_kind!r}"
