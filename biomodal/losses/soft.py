"""Soft-target contrastive losses: SoftCLIP (BLEEP / MindEye) and BiMixCo (MindEye)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from biomodal.errors import ConfigError, DataError
from biomodal.losses.base import ContrastiveLoss, LossOutput
from biomodal.losses.cwcl import _check_kind, reference_similarity
from biomodal.losses.distributed import GlobalBatch
from biomodal.losses.registry import register_loss
from biomodal.modalities import mask_key

__all__ = ["BiMixCoLoss", "SoftClipLoss"]


def _source_target(names: list[str], source: str | None, target: str | None) -> tuple[str, str]:
    if source is None and target is None:
        if len(names) != 2:
            raise DataError(f"set source= and target= when giving more than two modalities; got {names}")
        return names[0], names[1]
    source = source or next((n for n in names if n != target), None)
    target = target or next((n for n in names if n != source), None)
    for role, n in (("source", source), ("target", target)):
        if n not in names:
            raise DataError(f"{role} modality {n!r} is not among the embeddings {names}")
    if source == target:
        raise ConfigError(f"source and target must differ, got {source!r}")
    return source, target  # type: ignore[return-value]


def _directed_pair(
    loss: ContrastiveLoss, embeddings: Mapping[str, Tensor], masks: Mapping[str, Tensor] | None
) -> tuple[str, str, GlobalBatch, Any, Tensor, LossOutput | None]:
    """Parse inputs of a source -> target loss; the last item is a zero output when no row pairs."""
    embs, msk = loss.parse(embeddings, masks)
    src, tgt = _source_target(list(embs), loss.source, loss.target)
    gb = GlobalBatch(embs, msk)
    sel = gb.select([src, tgt])
    scale = loss._scale(embs[src])
    if sel.n_global == 0:
        zero = gb.anchor_zero()
        return src, tgt, gb, sel, scale, LossOutput(zero, {f"{src}-{tgt}": zero})
    return src, tgt, gb, sel, scale, None


def _soft_ce(logits: Tensor, targets: Tensor) -> Tensor:
    return -(targets * torch.log_softmax(logits, dim=1)).sum()


@register_loss("softclip", family="soft", needs="source and target embeddings (B, D); optional reference=")
class SoftClipLoss(ContrastiveLoss):
    r"""Contrastive loss with soft targets from the target modality's self-similarity.

    As BLEEP (Xie et al., 2023, "Spatially Resolved Gene Expression Prediction from H&E Histology
    Images via Bi-modal Contrastive Learning") and MindEye's SoftCLIP (Scotti et al., 2023,
    "Reconstructing the Mind's Eye"): with source :math:`x`, target :math:`y`, scale :math:`s` and
    target scale :math:`s_t`,

    .. math::

        P_{ij} = \mathrm{softmax}_j(s_t\, y_i\cdot y_j), \qquad
        L = \frac{1}{2N}\sum_i \Big[-\sum_j P_{ij} \log \mathrm{softmax}_j(s\, x_i\cdot y_j)
        -\sum_j P_{ij} \log \mathrm{softmax}_j(s\, y_i\cdot x_j)\Big].

    ``reference=`` in ``forward`` replaces :math:`y_i\cdot y_j` by a given similarity ``(B, B)``
    or by the dot products of reference embeddings ``(B, D')`` (used as given, not normalised).
    ``target_logit_scale=None`` uses ``logit_scale`` (one temperature, as MindEye's SoftCLIP).
    ``detach_targets`` stops gradients through :math:`P` (MindEye's targets are frozen anyway;
    BLEEP lets them flow, the default here). Rows where both are present are used.
    ``reference_kind`` (``"auto"``, ``"similarity"``, ``"embedding"``) reads ``reference`` as in
    :class:`~biomodal.losses.cwcl.CwclLoss`; in training the batch dict's ``"reference"`` entry is
    passed (:attr:`extra_keys`).
    """

    extra_keys: ClassVar[tuple[str, ...]] = ("reference",)

    def __init__(
        self,
        logit_scale: float = 1 / 0.07,
        learn_logit_scale: bool = True,
        max_logit_scale: float = 100.0,
        modalities: Sequence[str] | None = None,
        source: str | None = None,
        target: str | None = None,
        target_logit_scale: float | None = None,
        detach_targets: bool = False,
        reference_kind: str = "auto",
    ) -> None:
        super().__init__(logit_scale, learn_logit_scale, max_logit_scale, modalities)
        if target_logit_scale is not None and not target_logit_scale > 0:
            raise ConfigError(f"target_logit_scale must be positive or None, got {target_logit_scale!r}")
        self.source, self.target = source, target
        self.target_logit_scale = target_logit_scale
        self.detach_targets = detach_targets
        self.reference_kind = _check_kind(reference_kind)

    def distill_pairs(self, names: Sequence[str]) -> list[tuple[str, str]]:
        """Return the one ``(source, target)`` pair."""
        return [_source_target(list(names), self.source, self.target)]

    def forward(
        self,
        embeddings: Mapping[str, Tensor],
        masks: Mapping[str, Tensor] | None = None,
        reference: Tensor | None = None,
        reference_kind: str | None = None,
    ) -> LossOutput:
        """Compute the loss (``reference`` optional, see the class docstring)."""
        src, tgt, gb, sel, scale, empty = _directed_pair(self, embeddings, masks)
        if empty is not None:
            return empty
        x, y = sel.local[src], sel.local[tgt]
        if reference is None:
            sim = y @ sel.glob[tgt].T
        else:
            kind = self.reference_kind if reference_kind is None else _check_kind(reference_kind)
            sim = reference_similarity(gb, sel, reference, kind, normalize=False).to(scale.dtype)
        t_scale = scale if self.target_logit_scale is None else self.target_logit_scale
        p = torch.softmax(t_scale * sim, dim=1)
        if self.detach_targets:
            p = p.detach()
        total = _soft_ce(scale * (x @ sel.glob[tgt].T), p) + _soft_ce(scale * (y @ sel.glob[src].T), p)
        part = gb.finish(total * 0.5, sel.n_global)
        return LossOutput(part, {f"{src}-{tgt}": part})


@register_loss("bimixco", family="soft", needs="source/target embeddings (B, D), mix_perm= and mix_lambda=")
class BiMixCoLoss(ContrastiveLoss):
    r"""Bidirectional MixCo (MindEye, Scotti et al., 2023; MixCo: Kim et al., 2020).

    The data side mixes source inputs, :math:`\tilde u_i = \lambda_i u_i + (1-\lambda_i)
    u_{\pi(i)}`, and the source encoder embeds the mixed inputs into :math:`x_i`; targets
    :math:`y_j` are unmixed. The soft targets and loss are

    .. math::

        P_{ij} = \lambda_i [j = i] + (1-\lambda_i) [j = \pi(i)], \quad
        L = \frac{1}{2N}\Big[-\sum_{i,j} P_{ij} \log\mathrm{softmax}_j(s\, x_i\cdot y_j)
        -\sum_{j,i} P_{ij} \log\mathrm{softmax}_i(s\, y_j\cdot x_i)\Big].

    Usage in a trainer: draw ``perm = torch.randperm(B)`` and ``lam ~ Beta(a, a)`` per row (set
    ``lam = 1`` for rows not to mix), build the mixed source input ``lam * u + (1 - lam) * u[perm]``
    before the encoder, then call ``loss(emb, mix_perm=perm, mix_lambda=lam)`` with the
    embedding of the mixed source and of the clean target. ``mix_perm`` holds LOCAL row indices
    (mixing stays within a rank's batch). Without ``mix_perm`` the loss is the hard-target
    symmetric InfoNCE (CLIP). With masks, rows lacking either modality are excluded; a present
    row mixed (``lam < 1``) with an excluded row is a :class:`~biomodal.errors.DataError`.

    In training, :class:`~biomodal.train.ContrastiveModel` does the data side itself: before
    encoding it calls :meth:`mix_inputs`, which mixes the source modality's raw inputs as MindEye
    does (each row mixed with probability ``mix_prob``, ``lam ~ Beta(mix_beta, mix_beta)``) and
    puts ``mix_perm``/``mix_lambda`` into the batch (:attr:`extra_keys`), from where they reach
    ``forward``. Validation (eval mode) does not mix.

    Parameters
    ----------
    logit_scale, learn_logit_scale, max_logit_scale, modalities
        See :class:`~biomodal.losses.base.ContrastiveLoss`.
    source, target
        The mixed (source) and clean (target) modalities; with two modalities they default to
        the first and second.
    mix_prob
        Probability that a row is mixed in :meth:`mix_inputs` (MindEye: 0.5); 0 never mixes.
    mix_beta
        Concentration of the symmetric Beta distribution of ``lam`` (MindEye: 0.15).
    """

    extra_keys: ClassVar[tuple[str, ...]] = ("mix_perm", "mix_lambda")

    def __init__(
        self,
        logit_scale: float = 1 / 0.07,
        learn_logit_scale: bool = True,
        max_logit_scale: float = 100.0,
        modalities: Sequence[str] | None = None,
        source: str | None = None,
        target: str | None = None,
        mix_prob: float = 0.5,
        mix_beta: float = 0.15,
    ) -> None:
        super().__init__(logit_scale, learn_logit_scale, max_logit_scale, modalities)
        if not 0.0 <= mix_prob <= 1.0:
            raise ConfigError(f"bimixco: mix_prob must be in [0, 1], got {mix_prob!r}")
        if not mix_beta > 0:
            raise ConfigError(f"bimixco: mix_beta must be > 0, got {mix_beta!r}")
        self.source, self.target = source, target
        self.mix_prob, self.mix_beta = float(mix_prob), float(mix_beta)

    def mix_inputs(
        self, batch: Mapping[str, Any], modalities: Sequence[str]
    ) -> tuple[dict[str, Any], dict[str, Tensor]]:
        """Mix the source modality's raw inputs within the batch (MindEye's MixCo).

        Parameters
        ----------
        batch
            The (per-process) batch dict; the source entry must be a floating ``(B, ...)`` tensor.
        modalities
            The model's modality names, in order (to infer ``source``/``target`` like ``forward``).

        Returns
        -------
        tuple
            ``(batch with the source replaced by its mixed version, {"mix_perm": LongTensor[B],
            "mix_lambda": Tensor[B]})``. Only rows where source and target are present are mixed,
            and only with each other; unmixed rows have ``mix_lambda = 1``. Draws use the global
            torch RNG (CPU), so checkpoints and GradCache replay them exactly.
        """
        if self.mix_prob == 0.0:
            return dict(batch), {}
        names = [m for m in (self.modalities or modalities) if m in batch]
        src, tgt = _source_target(names, self.source, self.target)
        x = batch[src]
        if not isinstance(x, Tensor) or not x.is_floating_point() or x.ndim < 1:
            kind = f"{x.dtype} tensor" if isinstance(x, Tensor) else type(x).__name__
            raise DataError(
                f"bimixco mixes the raw inputs of {src!r}: expected a floating (B, ...) tensor, got {kind}"
            )
        n = x.shape[0]
        valid = torch.ones(n, dtype=torch.bool)
        for name in (src, tgt):
            m = batch.get(mask_key(name))
            if m is not None:
                valid &= torch.as_tensor(m).detach().cpu().bool().reshape(-1)
        rows = torch.nonzero(valid).flatten()
        perm = torch.arange(n)
        perm[rows] = rows[torch.randperm(rows.numel())]
        beta = torch.distributions.Beta(torch.tensor(self.mix_beta), torch.tensor(self.mix_beta))
        lam = beta.sample((n,))
        mixed = valid & (torch.rand(n) < self.mix_prob)
        lam = torch.where(mixed, lam, torch.ones_like(lam))
        shape = (n,) + (1,) * (x.ndim - 1)
        lx = lam.to(x.device, x.dtype).view(shape)
        px = perm.to(x.device)
        x_mixed = torch.where(mixed.to(x.device).view(shape), lx * x + (1 - lx) * x[px], x)
        return {**batch, src: x_mixed}, {"mix_perm": px, "mix_lambda": lam.to(x.device)}

    def forward(
        self,
        embeddings: Mapping[str, Tensor],
        masks: Mapping[str, Tensor] | None = None,
        mix_perm: Tensor | None = None,
        mix_lambda: Tensor | float | None = None,
    ) -> LossOutput:
        """Compute the loss (see the class docstring for ``mix_perm`` and ``mix_lambda``)."""
        src, tgt, gb, sel, scale, empty = _directed_pair(self, embeddings, masks)
        if empty is not None:
            return empty
        n_local = gb.shard.sizes[gb.shard.rank]
        if mix_perm is None:
            perm = torch.arange(n_local, device=gb.device)
            lam = torch.ones(n_local, dtype=scale.dtype, device=gb.device)
        else:
            perm = torch.as_tensor(mix_perm, device=gb.device).long()
            if perm.shape != (n_local,) or (perm.numel() and (perm.min() < 0 or perm.max() >= n_local)):
                raise DataError(f"mix_perm must hold {n_local} row indices in [0, {n_local})")
            lam = torch.as_tensor(
                1.0 if mix_lambda is None else mix_lambda, dtype=scale.dtype, device=gb.device
            )
            lam = lam.expand(n_local) if lam.ndim == 0 else lam
            if lam.shape != (n_local,):
                raise DataError(
                    f"mix_lambda must be a scalar or have shape ({n_local},), got {tuple(lam.shape)}"
                )
        perm_g = gb.gather(perm + gb.shard.offset)
        lam_g = gb.gather(lam.detach())
        gm = sel.global_rows
        if gm is not None:  # re-index into the selected rows
            new_index = torch.cumsum(gm.long(), 0) - 1
            bad = gm & ~gm[perm_g] & (lam_g < 1)
            if bool(bad.any()):
                raise DataError(
                    "bimixco: a present row was mixed (mix_lambda < 1) with a row whose modality is missing"
                )
            perm_g = torch.where(gm[perm_g], new_index[perm_g], new_index)[gm]
            lam_g = lam_g[gm]
        n = sel.n_global
        eye = torch.eye(n, dtype=scale.dtype, device=gb.device)
        p_full = lam_g[:, None] * eye + (1 - lam_g)[:, None] * eye[perm_g]  # (N, N), rows = mixed sources
        t = sel.targets(gb.device)
        x, y = sel.local[src], sel.local[tgt]
        total = _soft_ce(scale * (x @ sel.glob[tgt].T), p_full[t]) + _soft_ce(
            scale * (y @ sel.glob[src].T), p_full[:, t].T
        )
        part = gb.finish(total * 0.5, n)
        return LossOutput(part, {f"{src}-{tgt}": part})
