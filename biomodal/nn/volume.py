"""3-D volumes as a 2-D slice encoder plus slice pooling (RadCLIP): ``volume_slices``.

RadCLIP embeds a CT or MR volume by encoding every slice with a 2-D image encoder and pooling
the slice embeddings: slice embeddings + a position encoding over the slice index -> multi-head
self-attention -> one pooled embedding (a learned query attending over the slices). Mean
pooling over the slices is the comparison. Both are mask-aware: a volume with fewer slices is
padded and passes ``n_slices`` (or a ``slice_mask``), and padded slices never reach the output.

Input: ``[B, C, D, H, W]`` (``C`` = 1 for CT/MR; repeated to the slice encoder's ``in_chans``)
or a dict ``{"volume": [B, C, D, H, W], "n_slices": LongTensor[B]}`` (or ``"slice_mask"``:
bool ``[B, D]``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from biomodal.errors import ConfigError, DataError
from biomodal.nn.registry import create_encoder, register_encoder

__all__ = ["SlicePooling", "VolumeSliceEncoder"]


def _sinusoid(n: int, dim: int) -> Tensor:
    pos = torch.arange(n, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(n, dim)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div)[:, : dim // 2]
    return pe


class SlicePooling(nn.Module):
    """Pool ``[B, D, F]`` slice embeddings into ``[B, F]``: attention (RadCLIP) or mean.

    Parameters
    ----------
    dim
        Slice embedding width.
    pooling
        ``"attention"``: slices + position encoding -> ``layers`` transformer layers -> a learned
        query attends over them; ``"mean"``: the mean of the present slices.
    heads, layers, max_slices, dropout
        Of the attention pooling (``max_slices``: length of the learned position table).
    """

    def __init__(
        self, dim: int, pooling: str = "attention", heads: int = 4, layers: int = 1, max_slices: int = 256,
        dropout: float = 0.0,
    ) -> None:  # fmt: skip
        super().__init__()
        if pooling not in ("attention", "mean"):
            raise ConfigError(f"volume pooling={pooling!r}; expected 'attention' or 'mean'")
        if pooling == "attention" and dim % heads:
            raise ConfigError(f"slice embedding width {dim} is not divisible by heads={heads}")
        self.pooling, self.max_slices = pooling, int(max_slices)
        if pooling == "attention":
            self.pos = nn.Parameter(_sinusoid(self.max_slices, dim).clone())  # learned, sinusoid init
            layer = nn.TransformerEncoderLayer(
                dim, heads, 2 * dim, dropout, batch_first=True, norm_first=True
            )
            self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
            self.query = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
            self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
            self.norm = nn.LayerNorm(dim)

    def forward(self, z: Tensor, mask: Tensor | None = None) -> Tensor:
        """Pool ``z`` ``[B, D, F]``; ``mask`` bool ``[B, D]`` marks present slices (``None``: all)."""
        b, d, _ = z.shape
        if mask is None:
            mask = torch.ones(b, d, dtype=torch.bool, device=z.device)
        if not bool(mask.any(dim=1).all()):
            raise DataError("volume_slices: a volume has no slice (n_slices 0 or an all-False slice_mask)")
        if self.pooling == "mean":
            w = mask.to(z.dtype).unsqueeze(-1)
            return (z * w).sum(1) / w.sum(1)
        if d > self.max_slices:
            raise DataError(f"volume_slices: {d} slices exceed max_slices={self.max_slices}")
        h = self.encoder(z + self.pos[:d], src_key_padding_mask=~mask)
        q = self.query.expand(b, -1, -1)
        out, _ = self.attn(q, h, h, key_padding_mask=~mask, need_weights=False)
        return self.norm(out[:, 0])


class VolumeSliceEncoder(nn.Module):
    """Encode each slice of ``[B, C, D, H, W]`` with a 2-D encoder, then pool over slices."""

    def __init__(self, slice_encoder: nn.Module, pool: SlicePooling, in_chans: int) -> None:
        super().__init__()
        self.slices, self.pool = slice_encoder, pool
        self.in_chans = int(in_chans)
        self.out_dim = int(slice_encoder.out_dim)

    def forward(self, x: Any) -> Tensor:
        """Embed volumes: a tensor ``[B, C, D, H, W]`` or a dict with ``n_slices``/``slice_mask``."""
        mask = None
        if isinstance(x, dict):
            vol = x["volume"]
            if "slice_mask" in x:
                mask = x["slice_mask"].bool()
            elif "n_slices" in x:
                n = torch.as_tensor(x["n_slices"], device=vol.device).reshape(-1, 1)
                mask = torch.arange(vol.shape[2], device=vol.device)[None, :] < n
        else:
            vol = x
        if vol.ndim != 5:
            raise DataError(f"volume_slices expects [B, C, D, H, W]; got shape {tuple(vol.shape)}")
        b, c, d, h, w = vol.shape
        flat = vol.permute(0, 2, 1, 3, 4).reshape(b * d, c, h, w)
        if c != self.in_chans:
            if c != 1:
                raise DataError(f"volume_slices: {c} channels, the slice encoder takes {self.in_chans}")
            flat = flat.expand(-1, self.in_chans, -1, -1)
        if mask is not None:  # padded slices are never encoded
            keep = mask.reshape(-1)
            z = flat.new_zeros(b * d, self.out_dim)
            z[keep] = self.slices(flat[keep]).to(z.dtype)
        else:
            z = self.slices(flat)
        return self.pool(z.reshape(b, d, self.out_dim), mask)


@register_encoder(
    "volume_slices",
    modality="volume",
    input_kind="volume",
    input_shape={"in_chans": 1},
    description="2-D slice encoder + slice pooling (RadCLIP attention over slices, or mean) for 3-D volumes",
)
def _build_volume_slices(
    *,
    slice_encoder: str = "cnn_small",
    slice_params: dict[str, Any] | None = None,
    pooling: str = "attention",
    heads: int = 4,
    layers: int = 1,
    max_slices: int = 256,
    dropout: float = 0.0,
    in_chans: int = 1,
) -> VolumeSliceEncoder:
    enc = create_encoder(slice_encoder, **dict(slice_params or {}))
    want = int(getattr(getattr(enc, "spec", None), "input_shape", {}).get("in_chans", in_chans) or in_chans)
    pool = SlicePooling(enc.out_dim, pooling, heads, layers, max_slices, dropout)
    model = VolumeSliceEncoder(enc, pool, want)
    model.spec_updates = {"input_shape": {"in_chans": in_chans, "slice_encoder": slice_encoder}}
    return model  # volumes arrive windowed to [0, 1] (biomodal.pp.window_volume): no ImageNet statistics
