"""M3CoL: multimodal mixup contrastive loss with shared relations, plus its fusion classifier."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import permutations
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from biomodal.errors import ConfigError, DataError
from biomodal.losses.base import ContrastiveLoss, LossOutput
from biomodal.losses.registry import register_loss

__all__ = ["M3CoLLoss", "m3co_pair_loss"]


def m3co_pair_loss(
    z_mix_src: Tensor, z_tgt: Tensor, perm: Tensor, lam: Tensor, scale: Tensor | float
) -> Tensor:
    r"""Return the M3Co term of one ordered pair, from already mixed source embeddings.

    ``z_mix_src[i]`` is the (normalised) mix of source rows ``i`` and ``perm[i]`` with weight
    ``lam[i]`` on row ``i``; ``z_tgt`` are the clean target embeddings. Returns
    :math:`\tfrac12(L_{\to} + L_{\leftarrow})` of :class:`M3CoLLoss` (a scalar).
    """
    n = z_tgt.shape[0]
    eye = torch.eye(n, dtype=z_tgt.dtype, device=z_tgt.device)
    lam = lam.to(z_tgt.dtype)
    p = lam[:, None] * eye + (1 - lam)[:, None] * eye[perm]  # P[i, j]: share of target j in mix i
    logits = scale * (z_mix_src @ z_tgt.T)
    forward = -(p * torch.log_softmax(logits, dim=1)).sum() / n
    backward = -(p.T * torch.log_softmax(logits.T, dim=1)).sum() / n
    return 0.5 * (forward + backward)


class _Classifier(nn.Sequential):
    def __init__(self, in_dim: int, hidden: int, n_classes: int, dropout: float) -> None:
        layers: list[nn.Module] = (
            [nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout)] if hidden else []
        )
        super().__init__(*layers, nn.Linear(hidden or in_dim, n_classes))


@register_loss(
    "m3col",
    family="mixup",
    needs="embeddings of >= 2 modalities (B, D); label= (B,) class codes (-1 unlabelled) for the classifier",
)
class M3CoLLoss(ContrastiveLoss):
    r"""M3CoL: the M3Co mixup contrastive term, and a fusion classifier trained jointly with it.

    Kumar, Singhal et al., 2024, "Harnessing Shared Relations via Multimodal Mixup Contrastive
    Learning for Multimodal Classification" (TMLR; code: RaghavSinghal10/M3CoL).

    **M3Co term.** For an ordered pair of modalities (source :math:`a`, target :math:`b`) with
    L2-normalised embeddings :math:`z^a, z^b` of the :math:`N` rows present in both, a random
    permutation :math:`\pi` and coefficients :math:`\lambda_i \sim \mathrm{Beta}(\beta, \beta)`
    (each row is mixed with probability ``mix_prob``; unmixed rows have :math:`\lambda_i = 1`)
    mix the source *within its modality*,

    .. math::

        \tilde z^a_i = \frac{\lambda_i z^a_i + (1-\lambda_i) z^a_{\pi(i)}}
                            {\lVert \lambda_i z^a_i + (1-\lambda_i) z^a_{\pi(i)} \rVert},

    and each mix is contrasted against the target modality with soft targets given by the
    mixing coefficients: the mix shares its relation with target :math:`i` in proportion
    :math:`\lambda_i` and with target :math:`\pi(i)` in proportion :math:`1-\lambda_i`,

    .. math::

        P_{ij} = \lambda_i [j = i] + (1-\lambda_i) [j = \pi(i)],\qquad
        S_{ij} = s\, \tilde z^a_i \cdot z^b_j,

        L_{a\to b} = \frac{1}{2N}\Big[-\sum_{i,j} P_{ij} \log \mathrm{softmax}_j S_{ij}
                   - \sum_{j,i} P_{ij} \log \mathrm{softmax}_i S_{ij}\Big].

    The contrastive loss sums :math:`L_{a\to b}` over ``pairs``: ``"cycle"`` (as the authors
    for three omics: :math:`1\to2, 2\to3, 3\to1`; both directions for two modalities),
    ``"all"`` (every ordered pair) or an explicit list. Without mixing (:math:`\lambda = 1`,
    and always in ``eval()`` mode, so validation losses are deterministic) the term is
    symmetric InfoNCE (CLIP).

    **Where the mixing happens.** In embedding space, as the authors' code does for every
    dataset (ROSMAP/BRCA and image-text: the encoder outputs are mixed, ``mixco_text``), so no
    input-space hook in the model is needed. Here the mixed embeddings are re-normalised
    because the model hands the loss L2-normalised projections.

    **Fusion classifier.** With ``n_classes`` (and ``modalities``, which fixes the order of the
    concatenation), an MLP on the concatenated embeddings (zeros for a modality a row lacks)
    and one MLP per modality (the paper's unimodal prediction modules) are trained with
    cross-entropy on rows whose ``label >= 0``:

    .. math::

        L = w_c \sum_{(a,b)} L_{a\to b} + \mathrm{CE}(f([z^1, \dots, z^M]), y)
            + w_u \sum_m \mathrm{CE}(f_m(z^m), y).

    The classifier's parameters belong to the loss, so the trainer optimises them with the
    loss's; ``label`` arrives as the batch key ``"label"`` (:attr:`extra_keys`). Without labels
    only :math:`w_c \sum L_{a\to b}` is returned. The authors switch from M3Co to SoftCLIP after
    a third of training; that schedule is a ``loss:`` list of stages, not part of this loss.

    Mixing and negatives stay within the local batch (the authors train full-batch); under
    ``torch.distributed`` each rank's term uses its own rows.

    Parameters
    ----------
    logit_scale, learn_logit_scale, max_logit_scale
        Similarity scale :math:`s` (default 10, i.e. the authors' temperature 0.1, fixed).
    modalities
        The modalities used (required with ``n_classes``).
    pairs
        ``"cycle"``, ``"all"`` or a list of ``[source, target]``.
    mix_beta, mix_prob
        Beta parameter of :math:`\lambda` and the share of mixed rows (authors: 0.15, 0.5).
    contrastive_weight
        :math:`w_c` (authors: 0.1).
    n_classes, embed_dim
        Classes of the fusion classifier and the embedding width (``model.embed_dim``).
    hidden, dropout
        Hidden width (0: linear classifier) and dropout of the classifiers.
    unimodal_weight
        :math:`w_u`; 0 drops the unimodal classifiers.
    """

    extra_keys: ClassVar[tuple[str, ...]] = ("label",)

    def __init__(
        self,
        logit_scale: float = 10.0,
        learn_logit_scale: bool = False,
        max_logit_scale: float = 100.0,
        modalities: Sequence[str] | None = None,
        pairs: str | Sequence[Sequence[str]] = "cycle",
        mix_beta: float = 0.15,
        mix_prob: float = 0.5,
        contrastive_weight: float = 0.1,
        n_classes: int | None = None,
        embed_dim: int | None = None,
        hidden: int = 64,
        dropout: float = 0.0,
        unimodal_weight: float = 1.0,
    ) -> None:
        super().__init__(logit_scale, learn_logit_scale, max_logit_scale, modalities)
        if not mix_beta > 0:
            raise ConfigError(f"m3col: mix_beta must be > 0, got {mix_beta!r}")
        if not 0 <= mix_prob <= 1:
            raise ConfigError(f"m3col: mix_prob must be in [0, 1], got {mix_prob!r}")
        if contrastive_weight < 0 or unimodal_weight < 0:
            raise ConfigError("m3col: contrastive_weight and unimodal_weight must be >= 0")
        if isinstance(pairs, str) and pairs not in ("cycle", "all"):
            raise ConfigError(
                f"m3col: pairs={pairs!r}; expected 'cycle', 'all' or a list of [source, target]"
            )
        self.pairs = pairs if isinstance(pairs, str) else [tuple(p) for p in pairs]
        self.mix_beta, self.mix_prob = float(mix_beta), float(mix_prob)
        self.contrastive_weight, self.unimodal_weight = float(contrastive_weight), float(unimodal_weight)
        self.n_classes = n_classes
        self.fusion: nn.Module | None = None
        self.unimodal = nn.ModuleDict()
        if n_classes is not None:
            if n_classes < 2 or not embed_dim or embed_dim < 1:
                raise ConfigError(f"m3col: n_classes={n_classes!r} needs >= 2 and embed_dim a positive width")
            if not modalities:
                raise ConfigError("m3col: the fusion classifier needs modalities= (the concatenation order)")
            self.embed_dim = int(embed_dim)
            self.fusion = _Classifier(len(self.modalities) * self.embed_dim, hidden, n_classes, dropout)
            if unimodal_weight > 0:
                self.unimodal = nn.ModuleDict(
                    {m: _Classifier(self.embed_dim, hidden, n_classes, dropout) for m in self.modalities}
                )

    # ------------------------------------------------------------------ pieces
    def pair_list(self, names: Sequence[str]) -> list[tuple[str, str]]:
        """Ordered ``(source, target)`` pairs contrasted for the modalities ``names``."""
        names = list(names)
        if self.pairs == "all":
            return list(permutations(names, 2))
        if self.pairs == "cycle":
            if len(names) == 2:
                return [(names[0], names[1]), (names[1], names[0])]
            return [(names[i], names[(i + 1) % len(names)]) for i in range(len(names))]
        bad = [p for p in self.pairs if len(p) != 2 or p[0] not in names or p[1] not in names or p[0] == p[1]]
        if bad:
            raise ConfigError(
                f"m3col: pairs {bad} are not [source, target] of distinct modalities in {names}"
            )
        return list(self.pairs)  # type: ignore[arg-type]

    def _mixing(self, n: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        if not self.training or n < 2 or self.mix_prob == 0:
            return torch.arange(n, device=device), torch.ones(n, dtype=dtype, device=device)
        perm = torch.randperm(n, device=device)
        lam = torch.distributions.Beta(self.mix_beta, self.mix_beta).sample((n,)).to(device, dtype)
        lam = torch.where(torch.rand(n, device=device) < self.mix_prob, lam, torch.ones_like(lam))
        return perm, lam

    def _given_mixing(
        self, src: str, rows: Tensor, mix_perm: Mapping[str, Tensor], mix_lambda: Any, dtype: torch.dtype
    ) -> tuple[Tensor, Tensor]:
        b = rows.shape[0]
        perm = torch.as_tensor(mix_perm[src], device=rows.device).long()
        lam_in = (mix_lambda or {}).get(src, 1.0) if isinstance(mix_lambda, Mapping) else mix_lambda
        lam = torch.as_tensor(1.0 if lam_in is None else lam_in, dtype=dtype, device=rows.device)
        lam = lam.expand(b) if lam.ndim == 0 else lam
        if perm.shape != (b,) or lam.shape != (b,) or (perm.numel() and (perm.min() < 0 or perm.max() >= b)):
            raise DataError(
                f"m3col: mix_perm[{src!r}] and mix_lambda must be ({b},) with indices in [0, {b})"
            )
        if bool((rows & ~rows[perm] & (lam < 1)).any()):
            raise DataError(f"m3col: a {src!r} row was mixed (lambda < 1) with a row excluded from its pair")
        new_index = torch.cumsum(rows.long(), 0) - 1
        return torch.where(lam < 1, new_index[perm], new_index)[rows], lam[rows]

    def contrastive(
        self,
        embs: Mapping[str, Tensor],
        masks: Mapping[str, Tensor | None],
        mix_perm: Mapping[str, Tensor] | None = None,
        mix_lambda: Any = None,
    ) -> dict[str, Tensor]:
        """``{"<source>-<target>": M3Co term}`` of every pair (see the class docstring)."""
        scale = self._scale(next(iter(embs.values())))
        out = {}
        for src, tgt in self.pair_list(list(embs)):
            za, zb = embs[src], embs[tgt]
            rows = torch.ones(za.shape[0], dtype=torch.bool, device=za.device)
            for m in (masks.get(src), masks.get(tgt)):
                if m is not None:
                    rows = rows & m.to(za.device)
            n = int(rows.sum())
            if n == 0:
                out[f"{src}-{tgt}"] = za.sum() * 0.0
                continue
            if mix_perm is not None and src in mix_perm:
                perm, lam = self._given_mixing(src, rows, mix_perm, mix_lambda, za.dtype)
            else:
                perm, lam = self._mixing(n, za.device, za.dtype)
            a, b = za[rows], zb[rows]
            mixed = F.normalize(lam[:, None] * a + (1 - lam)[:, None] * a[perm], dim=-1)
            out[f"{src}-{tgt}"] = m3co_pair_loss(mixed, b, perm, lam, scale)
        return out

    def logits(self, embs: Mapping[str, Tensor], masks: Mapping[str, Tensor | None] | None = None) -> Tensor:
        """Fusion-classifier logits ``(B, n_classes)``; a lacking modality enters as zeros."""
        if self.fusion is None:
            raise ConfigError("m3col: no fusion classifier (set n_classes, embed_dim and modalities)")
        parts = []
        for m in self.modalities:
            if m not in embs:
                raise DataError(f"m3col: the fusion classifier needs {m!r}; got {sorted(embs)}")
            z = embs[m]
            if z.shape[-1] != self.embed_dim:
                raise DataError(
                    f"m3col: {m!r} embeddings have width {z.shape[-1]}, classifier built for {self.embed_dim}"
                )
            mk = (masks or {}).get(m)
            parts.append(z if mk is None else torch.where(mk.to(z.device)[:, None], z, torch.zeros_like(z)))
        return self.fusion(torch.cat(parts, dim=1))

    @torch.no_grad()
    def predict_proba(self, embeddings: Mapping[str, Any]) -> Any:
        """Class probabilities ``(n, n_classes)`` (numpy) from embeddings (NaN rows: modality missing)."""
        import numpy as np

        was = self.training
        self.eval()
        try:
            device = next(self.parameters()).device
            embs, masks = {}, {}
            for m in self.modalities:
                z = torch.as_tensor(np.asarray(embeddings[m], np.float32), device=device)
                ok = torch.isfinite(z).all(dim=1)
                embs[m], masks[m] = torch.nan_to_num(z), ok
            return torch.softmax(self.logits(embs, masks), dim=1).cpu().numpy()
        finally:
            self.train(was)

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        embeddings: Mapping[str, Tensor],
        masks: Mapping[str, Tensor] | None = None,
        label: Tensor | None = None,
    ) -> LossOutput:
        """Compute the loss; ``label`` (batch key ``"label"``) trains the fusion classifier if any."""
        return self.compute(embeddings, masks, label)

    def compute(
        self,
        embeddings: Mapping[str, Tensor],
        masks: Mapping[str, Tensor] | None = None,
        label: Tensor | None = None,
        mix_perm: Mapping[str, Tensor] | None = None,
        mix_lambda: Mapping[str, Tensor] | Tensor | float | None = None,
    ) -> LossOutput:
        """Compute :meth:`forward`'s loss with the mixing fixed (tests, reproducible analyses).

        ``mix_perm[source]`` holds ``(B,)`` row indices and ``mix_lambda`` the coefficients (a
        mapping per source, or one value/tensor for all); rows with ``lambda = 1`` are unmixed.
        """
        embs, msk = self.parse(embeddings, masks)
        terms = self.contrastive(embs, msk, mix_perm, mix_lambda)
        con = torch.stack(list(terms.values())).sum()
        parts: dict[str, Tensor] = {**terms, "contrastive": con}
        total = self.contrastive_weight * con
        if self.fusion is not None and label is not None:
            y = torch.as_tensor(label, device=con.device).long().reshape(-1)
            n = next(iter(embs.values())).shape[0]
            if y.shape != (n,):
                raise DataError(f"m3col: label must have shape ({n},), got {tuple(y.shape)}")
            if bool((y >= self.n_classes).any()):  # type: ignore[operator]
                raise DataError(
                    f"m3col: label codes must be < n_classes={self.n_classes} (or -1: unlabelled)"
                )
            rows = y >= 0
            if bool(rows.any()):
                ce = F.cross_entropy(self.logits(embs, msk)[rows], y[rows])
                parts["fusion_ce"] = ce
                total = total + ce
                for m, head in self.unimodal.items():
                    keep = rows if msk.get(m) is None else rows & msk[m].to(rows.device)  # type: ignore[operator]
                    if bool(keep.any()):
                        ce_m = F.cross_entropy(head(embs[m][keep]), y[keep])
                        parts[f"{m}_ce"] = ce_m
                        total = total + self.unimodal_weight * ce_m
        return LossOutput(total, parts)

    def extra_repr(self) -> str:
        """Describe the configuration in ``repr``."""
        cls = f", n_classes={self.n_classes}" if self.fusion is not None else ""
        return (
            f"{super().extra_repr()}, pairs={self.pairs!r}, mix_beta={self.mix_beta}, "
            f"mix_prob={self.mix_prob}, contrastive_weight={self.contrastive_weight}{cls}"
        )
