"""Gradient reversal and a batch discriminator for adversarial batch correction (DANN).

A :class:`BatchDiscriminator` predicts the batch of an embedding through a
:class:`GradientReversal` layer: the discriminator learns to classify batches while the encoder
upstream receives the *reversed* gradient, i.e. learns to make batches indistinguishable
(Ganin et al. 2016). Ramp the reversal weight with :func:`grl_schedule`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from biomodal.errors import ConfigError

__all__ = ["BatchDiscriminator", "GradientReversal", "grad_reverse", "grl_schedule"]


class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: float) -> torch.Tensor:
        ctx.weight = float(weight)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.weight * grad, None


def grad_reverse(x: torch.Tensor, weight: float = 1.0) -> torch.Tensor:
    """Identity in the forward pass; multiplies the gradient by ``-weight`` in the backward pass."""
    return _GradReverse.apply(x, weight)


class GradientReversal(nn.Module):
    """Gradient reversal layer.

    Parameters
    ----------
    weight
        Reversal strength (``lambda``); change ``.weight`` during training, e.g. with
        :func:`grl_schedule`. ``0`` blocks the gradient entirely.
    """

    def __init__(self, weight: float = 1.0) -> None:
        super().__init__()
        if weight < 0:
            raise ConfigError(f"GradientReversal: weight={weight} must be >= 0")
        self.weight = float(weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``x`` unchanged; the gradient flowing back is ``-weight * grad``."""
        return grad_reverse(x, self.weight)

    def extra_repr(self) -> str:
        """Summary shown in ``repr``."""
        return f"weight={self.weight:g}"


def grl_schedule(step: int, total: int, max_weight: float = 1.0, kind: str = "dann") -> float:
    """Reversal weight at ``step`` of ``total``.

    Parameters
    ----------
    step, total
        Current step and total number of steps (progress ``p = clip(step / total, 0, 1)``).
    max_weight
        Weight reached at the end.
    kind
        ``"dann"``: ``max_weight * (2 / (1 + exp(-10 p)) - 1)`` (Ganin et al. 2016);
        ``"linear"``: ``max_weight * p``; ``"constant"``: ``max_weight``.
    """
    if total <= 0:
        raise ConfigError(f"grl_schedule: total={total} must be > 0")
    p = min(max(step / total, 0.0), 1.0)
    if kind == "dann":
        return float(max_weight * (2.0 / (1.0 + math.exp(-10.0 * p)) - 1.0))
    if kind == "linear":
        return float(max_weight * p)
    if kind == "constant":
        return float(max_weight)
    raise ConfigError(f"grl_schedule: kind={kind!r} not in ('dann', 'linear', 'constant')")


class BatchDiscriminator(nn.Module):
    """MLP predicting batch labels from embeddings, behind a gradient reversal layer.

    Parameters
    ----------
    in_dim
        Embedding width.
    n_batches
        Number of batch classes.
    hidden
        Hidden widths of the MLP (``()`` gives a linear classifier).
    dropout
        Dropout after each hidden layer.
    weight
        Initial reversal weight (see :attr:`weight`).

    Examples
    --------
    >>> import torch
    >>> disc = BatchDiscriminator(16, n_batches=3)
    >>> z = torch.randn(8, 16, requires_grad=True)
    >>> loss = disc.loss(z, torch.tensor([0, 1, 2, 0, 1, 2, 0, -1]))
    >>> loss.backward()  # z.grad pushes z towards *confusing* the discriminator
    """

    def __init__(
        self,
        in_dim: int,
        n_batches: int,
        hidden: Sequence[int] = (256,),
        dropout: float = 0.1,
        weight: float = 1.0,
    ) -> None:
        super().__init__()
        if n_batches < 2:
            raise ConfigError(f"BatchDiscriminator: n_batches={n_batches} must be >= 2")
        self.in_dim, self.n_batches = int(in_dim), int(n_batches)
        self.grl = GradientReversal(weight)
        layers: list[nn.Module] = []
        prev = in_dim
        for width in hidden:
            layers += [nn.Linear(prev, width), nn.ReLU(), nn.Dropout(dropout)]
            prev = width
        layers.append(nn.Linear(prev, n_batches))
        self.net = nn.Sequential(*layers)

    @property
    def weight(self) -> float:
        """Current gradient reversal weight."""
        return self.grl.weight

    @weight.setter
    def weight(self, value: float) -> None:
        self.grl.weight = float(value)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Batch logits ``[B, n_batches]`` (gradient into ``z`` is reversed)."""
        return self.net(self.grl(z))

    def loss(self, z: torch.Tensor, batch_code: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the batch prediction; codes ``< 0`` or ``>= n_batches`` are ignored."""
        target = batch_code.long().clone()
        target[(target < 0) | (target >= self.n_batches)] = -100
        if bool((target == -100).all()):
            return self(z).sum() * 0.0
        return nn.functional.cross_entropy(self(z), target, ignore_index=-100)
