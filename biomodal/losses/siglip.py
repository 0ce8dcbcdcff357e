"""Pairwise sigmoid loss of SigLIP, with a learnable bias and an O(B x chunk) memory mode."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from biomodal.errors import ConfigError
from biomodal.losses._chunked import sigmoid_rows
from biomodal.losses.base import ContrastiveLoss, LossOutput
from biomodal.losses.clip import modality_pairs
from biomodal.losses.distributed import GlobalBatch
from biomodal.losses.registry import register_loss

__all__ = ["SigLipLoss"]


@register_loss("siglip", family="pairwise", needs="paired embeddings (B, D) per modality, L2-normalised")
class SigLipLoss(ContrastiveLoss):
    r"""Pairwise sigmoid loss of SigLIP (Zhai et al., 2023, "Sigmoid Loss for Language Image Pre-Training").

    For a pair of modalities with embeddings :math:`x_i, y_j`, scale :math:`s` and bias :math:`b`,

    .. math::

        L_{xy} = -\frac1N \sum_{i=1}^N \sum_{j=1}^N \log \sigma\big(z_{ij}\,(s\, x_i\cdot y_j + b)\big),
        \qquad z_{ij} = 1 \text{ if } i=j \text{ else } -1,

    exactly as open_clip's ``SigLipLoss`` (sum over all pairs, divided by the number of rows).
    With more than two modalities the loss is the mean over pairs (all pairs, or
    ``(anchor, other)``); each pair uses only rows where both are present. Inputs are used as
    given (not L2-normalised). The defaults follow the paper: ``logit_scale=10``, ``logit_bias=-10``.

    Parameters
    ----------
    logit_scale, learn_logit_scale, max_logit_scale, modalities
        See :class:`~biomodal.losses.base.ContrastiveLoss`.
    logit_bias
        Initial bias :math:`b`.
    learn_logit_bias
        Learn the bias (default) or keep it fixed.
    anchor
        Pair every other modality with this one only.
    chunk_size
        Rows per block of the custom-backward kernel: O(chunk_size x N) memory in forward and
        backward (``None``: plain autograd, O(N^2)).
    """

    def __init__(
        self,
        logit_scale: float = 10.0,
        learn_logit_scale: bool = True,
        max_logit_scale: float = 100.0,
        modalities: Sequence[str] | None = None,
        logit_bias: float = -10.0,
        learn_logit_bias: bool = True,
        anchor: str | None = None,
        chunk_size: int | None = None,
    ) -> None:
        super().__init__(logit_scale, learn_logit_scale, max_logit_scale, modalities)
        if not math.isfinite(logit_bias):
            raise ConfigError(f"logit_bias must be finite, got {logit_bias!r}")
        if chunk_size is not None and int(chunk_size) < 1:
            raise ConfigError(f"chunk_size must be a positive integer or None, got {chunk_size!r}")
        bias = torch.tensor(float(logit_bias), dtype=torch.get_default_dtype())
        if learn_logit_bias:
            self.logit_bias = nn.Parameter(bias)
        else:
            self.register_buffer("logit_bias", bias)
        self.anchor = anchor
        self.chunk_size = None if chunk_size is None else int(chunk_size)

    def forward(
        self, embeddings: Mapping[str, Tensor], masks: Mapping[str, Tensor] | None = None
    ) -> LossOutput:
        """Compute the loss (``embeddings`` and ``masks`` as in :class:`~biomodal.losses.ClipLoss`)."""
        embs, msk = self.parse(embeddings, masks)
        gb = GlobalBatch(embs, msk)
        like = next(iter(embs.values()))
        scale, bias = self._scale(like), self.logit_bias.to(like.dtype)
        parts: dict[str, Tensor] = {}
        for a, b in modality_pairs(list(embs), self.anchor):
            sel = gb.select([a, b])
            if sel.n_global == 0:
                parts[f"{a}-{b}"] = gb.anchor_zero() + bias * 0.0
                continue
            t = sel.targets(gb.device)
            total = sigmoid_rows(sel.local[a], sel.glob[b], scale, bias, t, self.chunk_size)
            parts[f"{a}-{b}"] = gb.finish(total, sel.n_global)
        return LossOutput(torch.stack(list(parts.values())).mean(), parts)

    def extra_repr(self) -> str:
        """Describe the configuration in ``repr``."""
        return (
            f"{super().extra_repr()}, logit_bias={float(self.logit_bias):.4g}, anchor={self.anchor!r}, "
            f"chunk_size={self.chunk_size}"
        )
