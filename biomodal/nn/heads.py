"""Projection heads mapping encoder features into the shared embedding space."""

from __future__ import annotations

import torch
from torch import nn

from biomodal.errors import ConfigError

__all__ = ["ProjectionHead"]

_KINDS = ("linear", "mlp", "residual")


class ProjectionHead(nn.Module):
    """Project ``[B, in_dim]`` features to ``[B, out_dim]``.

    Parameters
    ----------
    in_dim, out_dim
        Input and output widths.
    kind
        ``"linear"``: one Linear (CLIP). ``"mlp"``: Linear -> GELU -> Dropout -> Linear (SimCLR).
        ``"residual"``: ``p = Linear(x)``; ``LayerNorm(p + Dropout(Linear(GELU(p))))`` (the BLEEP /
        OpenAI-CLIP-tutorial head common in histology-expression work).
    hidden
        Hidden width of ``"mlp"`` (default ``max(in_dim, out_dim)``); unused otherwise.
    dropout
        Dropout probability (``"mlp"``, ``"residual"``; for ``"linear"`` applied to the input).

    Examples
    --------
    >>> import torch
    >>> head = ProjectionHead(512, 128, kind="mlp")
    >>> head(torch.randn(4, 512)).shape
    torch.Size([4, 128])
    """

    def __init__(
        self, in_dim: int, out_dim: int, kind: str = "linear", hidden: int | None = None, dropout: float = 0.0
    ) -> None:
        super().__init__()
        if kind not in _KINDS:
            raise ConfigError(f"ProjectionHead: kind={kind!r} not in {_KINDS}")
        if in_dim < 1 or out_dim < 1:
            raise ConfigError(f"ProjectionHead: in_dim={in_dim} and out_dim={out_dim} must be >= 1")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"ProjectionHead: dropout={dropout} must be in [0, 1)")
        self.in_dim, self.out_dim, self.kind = int(in_dim), int(out_dim), kind
        self.hidden = int(hidden or max(in_dim, out_dim)) if kind == "mlp" else None
        if kind == "linear":
            self.net: nn.Module = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, out_dim))
        elif kind == "mlp":
            self.net = nn.Sequential(
                nn.Linear(in_dim, self.hidden),
                nn.GELU(),
                nn.Dropout(dropout),
                nn.Linear(self.hidden, out_dim),
            )
        else:
            self.proj = nn.Linear(in_dim, out_dim)
            self.fc = nn.Linear(out_dim, out_dim)
            self.drop = nn.Dropout(dropout)
            self.norm = nn.LayerNorm(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Projected features ``[B, out_dim]``."""
        if x.shape[-1] != self.in_dim:
            raise ConfigError(f"ProjectionHead: expected features of width {self.in_dim}, got {x.shape[-1]}")
        if self.kind != "residual":
            return self.net(x)
        p = self.proj(x)
        return self.norm(p + self.drop(self.fc(nn.functional.gelu(p))))

    def extra_repr(self) -> str:
        """Summary shown in ``repr``."""
        hidden = f", hidden={self.hidden}" if self.hidden else ""
        return f"in_dim={self.in_dim}, out_dim={self.out_dim}, kind={self.kind!r}{hidden}"
