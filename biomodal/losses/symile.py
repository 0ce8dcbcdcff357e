"""Symile: contrastive loss on the multilinear inner product of any number of modalities."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from biomodal.errors import ConfigError, DataError
from biomodal.losses.base import ContrastiveLoss, LossOutput
from biomodal.losses.distributed import GlobalBatch, shared_randperm
from biomodal.losses.registry import register_loss

__all__ = ["SymileLoss", "multilinear_inner_product"]


def multilinear_inner_product(*reps: Tensor) -> Tensor:
    r"""Row-wise MIP :math:`\sum_d \prod_m r^{(m)}_{d}` of equally shaped ``(B, D)`` tensors."""
    out = reps[0]
    for r in reps[1:]:
        out = out * r
    return out.sum(dim=-1)


@register_loss(
    "symile",
    family="n-way",
    needs="(B, D) per modality; rows with gaps dropped, or missing='learned' vectors (the paper's way)",
)
class SymileLoss(ContrastiveLoss):
    r"""Symile: contrastive loss on the multilinear inner product.

    Saporta et al., 2024, "Contrasting with Symile: Simple Model-Agnostic Representation
    Learning for Unlimited Modalities", NeurIPS.

    Scores a tuple of ``M >= 2`` modality vectors by the multilinear inner product (MIP)
    :math:`\mathrm{MIP}(a, b, c, \dots) = \sum_d a_d b_d c_d \cdots`. Each modality in turn is the
    anchor :math:`m`; with :math:`\bar r^{(-m)}` the element-wise product of the other modalities,

    .. math::

        \ell_m = -\frac1N \sum_i \log \frac{e^{s\,\mathrm{MIP}(r^{(m)}_i, \bar r^{(-m)}_i)}}
        {\sum_{c \in C_i} e^{s\,\mathrm{MIP}(r^{(m)}_i, c)}}, \qquad L = \frac1M \sum_m \ell_m.

    Candidates :math:`C_i` follow the reference implementation's two strategies:

    * ``negative_sampling="n"`` (O(N)): each non-anchor modality's rows are shuffled by an
      independent random permutation and multiplied, giving N candidate products; the i-th
      candidate of row i is replaced by the positive (so ``N - 1`` negatives per positive).
    * ``"n_squared"``: every combination of non-anchor rows, ``N^(M-1)`` candidates of which one
      is the positive (memory O(B x N^(M-1) ... ) so use it for small batches or ``M = 3``).

    Inputs are used as given (the Symile code normalises inside the model). Missing modalities
    (``<name>_mask`` False) are handled in one of two ways:

    * ``missing="drop"`` (default): rows where any modality is missing are dropped (the MIP
      needs all of them);
    * ``missing="learned"``: as in the paper's missing-data experiments (Symile-M3 and
      Symile-MIMIC), a missing modality is represented by a learned vector of its own (the
      paper's encoders map a missing input to a learned "missing" embedding; here it is one
      unit vector per modality, so ``modalities`` and ``embed_dim`` are required), and every
      row with at least two observed modalities takes part. Positives and negatives then
      include these vectors, so the model also learns from partially observed tuples.

    ``parts`` holds ``ell_m`` per
    anchor modality. Permutations are drawn on rank 0 and broadcast, so all ranks agree; pass
    ``generator=`` to ``forward`` for reproducible draws.
    """

    def __init__(
        self,
        logit_scale: float = 1 / 0.07,
        learn_logit_scale: bool = True,
        max_logit_scale: float = 100.0,
        modalities: Sequence[str] | None = None,
        negative_sampling: str = "n",
        missing: str = "drop",
        embed_dim: int | None = None,
    ) -> None:
        super().__init__(logit_scale, learn_logit_scale, max_logit_scale, modalities)
        if negative_sampling not in ("n", "n_squared"):
            raise ConfigError(f"negative_sampling must be 'n' or 'n_squared', got {negative_sampling!r}")
        if missing not in ("drop", "learned"):
            raise ConfigError(f"missing must be 'drop' or 'learned', got {missing!r}")
        self.negative_sampling = negative_sampling
        self.missing = missing
        self.missing_embed = None
        if missing == "learned":
            if not modalities or not embed_dim:
                raise ConfigError(
                    "symile missing='learned' needs modalities=[...] and embed_dim (the embedding width)"
                )
            gen = torch.Generator().manual_seed(0)
            self.missing_embed = torch.nn.ParameterDict(
                {m: torch.nn.Parameter(torch.randn(int(embed_dim), generator=gen)) for m in modalities}
            )

    def _fill_missing(
        self, embs: dict[str, Tensor], msk: dict[str, Tensor | None]
    ) -> tuple[dict[str, Tensor], dict[str, Tensor | None]]:
        """Replace missing rows by the learned vectors; keep rows with >= 2 observed modalities."""
        if self.missing_embed is None or all(m is None for m in msk.values()):
            return embs, msk
        first = next(iter(embs.values()))
        present = torch.stack(
            [m if m is not None else torch.ones(first.shape[0], dtype=torch.bool, device=first.device)
             for m in msk.values()]
        )  # fmt: skip
        keep = present.sum(0) >= 2
        out = {}
        for name, x in embs.items():
            m = msk[name]
            if m is None:
                out[name] = x
                continue
            width = self.missing_embed[name].shape[0]
            if x.shape[1] != width:
                raise DataError(f"symile: {name!r} embeddings are {x.shape[1]}-d, embed_dim is {width}")
            vec = F.normalize(self.missing_embed[name].to(x.dtype), dim=-1).expand_as(x)
            out[name] = torch.where(m[:, None], x, vec)
        return out, dict.fromkeys(embs, keep)

    def forward(
        self,
        embeddings: Mapping[str, Tensor],
        masks: Mapping[str, Tensor] | None = None,
        generator: torch.Generator | None = None,
    ) -> LossOutput:
        """Compute the loss; ``generator`` seeds the ``"n"`` permutations (CPU generator)."""
        embs, msk = self.parse(embeddings, masks)
        embs, msk = self._fill_missing(embs, msk)
        names = list(embs)
        gb = GlobalBatch(embs, msk)
        sel = gb.select(names)
        scale = self._scale(embs[names[0]])
        parts: dict[str, Tensor] = {}
        if sel.n_global == 0:
            zero = gb.anchor_zero()
            return LossOutput(zero, {m: zero for m in names})
        t = sel.targets(gb.device)
        for m in names:
            others = [o for o in names if o != m]
            q = sel.local[m]
            if self.negative_sampling == "n":
                prod = None
                for o in others:
                    perm = shared_randperm(sel.n_global, gb.device, generator)
                    r = sel.glob[o][perm]
                    prod = r if prod is None else prod * r
                logits = scale * (q @ prod.T)
                pos = scale * multilinear_inner_product(q, *(sel.local[o] for o in others))
                logits = logits.scatter(1, t[:, None], pos[:, None])
                target = t
            else:
                block = q
                for o in others[:-1]:  # (B, N, ..., D): all combinations but the last modality
                    block = block.unsqueeze(-2) * sel.glob[o]
                logits = scale * (block @ sel.glob[others[-1]].T).reshape(q.shape[0], -1)
                n = sel.n_global
                target = t * sum(n**p for p in range(len(others)))  # flat index of (i, i, ..., i)
            parts[m] = gb.finish(F.cross_entropy(logits, target, reduction="sum"), sel.n_global)
        return LossOutput(torch.stack(list(parts.values())).mean(), parts)

    def extra_repr(self) -> str:
        """Describe the configuration in ``repr``."""
        return (
            f"{super().extra_repr()}, negative_sampling={self.negative_sampling!r}, missing={self.missing!r}"
        )
