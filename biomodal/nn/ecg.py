"""ECG encoders: a 1-D ResNet and a small transformer over signal patches.

Both take a float signal ``[B, leads, samples]`` (millivolts, filtered and resampled to a
common rate by :mod:`biomodal.pp`) and an optional boolean lead mask ``[B, leads]`` (True: the
lead was recorded; what the readers return when a record lacks some of the 12 standard leads).
The mask comes either as the keyword ``lead_mask=`` or inside the modality entry, as a dict
``{"signal": Tensor, "lead_mask": Tensor}`` (what a dataset's collate produces). Absent leads
are zeroed before the first layer and the mask itself is an input (extra channels for the
ResNet, a learned embedding of the mask for the transformer), so the output never depends on
the values of absent leads and the model still knows which leads are there.

Any number of samples works (global average pooling; sinusoidal patch positions), so records
of different lengths can share one encoder.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from biomodal.errors import ConfigError, DataError
from biomodal.nn.registry import register_encoder
from biomodal.nn.timm_encoders import load_checked, load_state_dict_file

__all__ = ["ECGResNet1d", "ECGTransformer", "split_signal"]


def split_signal(
    x: torch.Tensor | Mapping[str, torch.Tensor], lead_mask: torch.Tensor | None, leads: int, where: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(signal with absent leads zeroed, float lead mask [B, leads])`` and check shapes.

    Parameters
    ----------
    x
        ``[B, leads, samples]`` or a dict with ``"signal"`` (and optionally ``"lead_mask"``).
    lead_mask
        ``[B, leads]`` boolean (True: present); wins over a mask inside ``x``.
    leads
        Expected number of leads.
    where
        Encoder name for error messages.
    """
    if isinstance(x, Mapping):
        if "signal" not in x:
            raise DataError(
                f"{where}: a dict input needs 'signal' (and optionally 'lead_mask'); got {sorted(x)}"
            )
        lead_mask = x.get("lead_mask") if lead_mask is None else lead_mask
        x = x["signal"]
    if not isinstance(x, torch.Tensor) or x.ndim != 3 or x.shape[1] != leads:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise DataError(f"{where}: expected a signal [B, {leads}, samples], got {shape}")
    if lead_mask is None:
        mask = torch.ones(x.shape[0], leads, dtype=x.dtype, device=x.device)
    else:
        if tuple(lead_mask.shape) != (x.shape[0], leads):
            raise DataError(
                f"{where}: lead_mask must be [{x.shape[0]}, {leads}], got {tuple(lead_mask.shape)}"
            )
        mask = lead_mask.to(device=x.device, dtype=x.dtype)
    x = torch.nan_to_num(x) * mask.unsqueeze(-1)
    return x, mask


class _Block1d(nn.Module):
    """Pre-activation-free basic residual block: conv-BN-ReLU-conv-BN + shortcut, ReLU."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, dropout: float) -> None:
        super().__init__()
        pad = kernel // 2
        self.conv1 = nn.Conv1d(c_in, c_out, kernel, stride=stride, padding=pad, bias=False)
        self.bn1 = nn.BatchNorm1d(c_out)
        self.conv2 = nn.Conv1d(c_out, c_out, kernel, padding=pad, bias=False)
        self.bn2 = nn.BatchNorm1d(c_out)
        self.drop = nn.Dropout(dropout)
        self.short: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.short = nn.Sequential(
                nn.Conv1d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm1d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual block output."""
        h = self.drop(torch.relu(self.bn1(self.conv1(x))))
        h = self.bn2(self.conv2(h))
        return torch.relu(h + self.short(x))


class ECGResNet1d(nn.Module):
    """1-D ResNet over ECG leads (the common PTB-XL baseline shape, e.g. Strodthoff et al. 2021).

    Stem ``Conv1d(2 * leads -> width, 15, stride 2)`` over the signal and the lead-mask channels,
    then ``len(blocks)`` stages of basic residual blocks (stage ``s`` has ``width * 2**s``
    channels, stride 2 from the second stage on), global average pooling and an optional linear
    projection.

    Parameters
    ----------
    leads
        Number of input leads (12 for standard ECGs).
    width
        Channels of the first stage.
    blocks
        Residual blocks per stage.
    kernel
        Kernel size of the residual convolutions (odd).
    dropout
        Dropout inside the blocks.
    out_dim
        Optional final linear projection width (default: the last stage's channels).
    """

    def __init__(
        self,
        leads: int = 12,
        width: int = 32,
        blocks: tuple[int, ...] = (1, 1, 1, 1),
        kernel: int = 7,
        dropout: float = 0.0,
        out_dim: int | None = None,
    ) -> None:
        super().__init__()
        if leads < 1 or width < 1 or not blocks or any(b < 1 for b in blocks):
            raise ConfigError(f"ecg_resnet1d: bad leads={leads}, width={width} or blocks={blocks}")
        if kernel % 2 == 0:
            raise ConfigError(f"ecg_resnet1d: kernel={kernel} must be odd")
        self.leads = int(leads)
        self.stem = nn.Sequential(
            nn.Conv1d(2 * leads, width, 15, stride=2, padding=7, bias=False),
            nn.BatchNorm1d(width),
            nn.ReLU(),
            nn.MaxPool1d(3, stride=2, padding=1),
        )
        layers: list[nn.Module] = []
        c = width
        for s, n in enumerate(blocks):
            c_out = width * 2**s
            for i in range(n):
                layers.append(_Block1d(c, c_out, kernel, 2 if (i == 0 and s > 0) else 1, dropout))
                c = c_out
        self.blocks = nn.Sequential(*layers)
        self.proj = nn.Linear(c, out_dim) if out_dim else nn.Identity()
        self.out_dim = int(out_dim or c)

    def forward(
        self, x: torch.Tensor | Mapping[str, torch.Tensor], lead_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Features ``[B, out_dim]`` of signals ``[B, leads, samples]`` (see the module docstring)."""
        sig, mask = split_signal(x, lead_mask, self.leads, "ecg_resnet1d")
        h = torch.cat([sig, mask.unsqueeze(-1).expand_as(sig)], dim=1)
        h = self.blocks(self.stem(h))
        return self.proj(h.mean(dim=-1))


def _sinusoid(n: int, dim: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    pos = torch.arange(n, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(1e4) / dim))
    pe = torch.zeros(n, dim, device=device)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return pe.to(dtype)


class ECGTransformer(nn.Module):
    """Small transformer over ECG patches (MoRE / ECG-FM style patch tokens), CLS pooling.

    The signal is cut into non-overlapping windows of ``patch`` samples (the last one padded
    with zeros); each window of all leads becomes one token ``Linear(leads * patch -> dim)`` plus
    a sinusoidal position and a learned embedding of the lead mask. A CLS token is prepended;
    its final state (after LayerNorm) is the record embedding.

    Parameters
    ----------
    leads
        Number of input leads.
    patch
        Samples per patch (50 = 0.5 s at 100 Hz).
    dim, depth, heads, mlp_ratio, dropout
        Transformer width, layers, heads, feed-forward expansion and dropout.
    out_dim
        Optional final linear projection width (default ``dim``).
    """

    def __init__(
        self,
        leads: int = 12,
        patch: int = 50,
        dim: int = 64,
        depth: int = 2,
        heads: int = 4,
        mlp_ratio: float = 2.0,
        dropout: float = 0.1,
        out_dim: int | None = None,
    ) -> None:
        super().__init__()
        if dim % heads or dim % 2:
            raise ConfigError(f"ecg_transformer: dim={dim} must be even and divisible by heads={heads}")
        if patch < 1 or leads < 1:
            raise ConfigError(f"ecg_transformer: patch={patch} and leads={leads} must be >= 1")
        self.leads, self.patch, self.dim = int(leads), int(patch), int(dim)
        self.embed = nn.Linear(leads * patch, dim)
        self.mask_embed = nn.Linear(leads, dim, bias=False)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(
                dim,
                heads,
                int(dim * mlp_ratio),
                dropout,
                activation="gelu",
                batch_first=True,
                norm_first=True,
            )
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, out_dim) if out_dim else nn.Identity()
        self.out_dim = int(out_dim or dim)

    def patches(self, sig: torch.Tensor) -> torch.Tensor:
        """``[B, n_patches, leads * patch]`` windows of a ``[B, leads, samples]`` signal."""
        b, leads, n = sig.shape
        pad = (-n) % self.patch
        if pad:
            sig = nn.functional.pad(sig, (0, pad))
        w = sig.reshape(b, leads, -1, self.patch)  # [B, leads, n_patches, patch]
        return w.permute(0, 2, 1, 3).reshape(b, w.shape[2], leads * self.patch)

    def forward(
        self, x: torch.Tensor | Mapping[str, torch.Tensor], lead_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Features ``[B, out_dim]`` of signals ``[B, leads, samples]`` (see the module docstring)."""
        sig, mask = split_signal(x, lead_mask, self.leads, "ecg_transformer")
        tok = self.embed(self.patches(sig))
        tok = (
            tok
            + _sinusoid(tok.shape[1], self.dim, tok.device, tok.dtype)
            + self.mask_embed(mask).unsqueeze(1)
        )
        tok = torch.cat([self.cls_token.expand(tok.shape[0], -1, -1), tok], dim=1)
        for block in self.blocks:
            tok = block(tok)
        return self.proj(self.norm(tok[:, 0]))


def _finish(
    model: nn.Module, leads: int, pretrained_path: str | os.PathLike | None, **shape: Any
) -> nn.Module:
    weights = None
    if pretrained_path is not None:
        load_checked(model, load_state_dict_file(pretrained_path), source=str(pretrained_path))
        weights = str(pretrained_path)
    model.spec_updates = {"input_shape": {"leads": int(leads), **shape}, "weights": weights}
    return model


@register_encoder(
    "ecg_resnet1d",
    modality="ecg",
    input_kind="signal",
    input_shape={"leads": 12},
    description="1-D ResNet over ECG leads [B, leads, samples] with an optional lead mask",
)
def _build_resnet1d(
    *,
    leads: int = 12,
    width: int = 32,
    blocks: tuple[int, ...] | list[int] = (1, 1, 1, 1),
    kernel: int = 7,
    dropout: float = 0.0,
    out_dim: int | None = None,
    pretrained_path: str | os.PathLike | None = None,
) -> ECGResNet1d:
    model = ECGResNet1d(int(leads), int(width), tuple(int(b) for b in blocks), int(kernel), dropout, out_dim)
    return _finish(model, leads, pretrained_path)


@register_encoder(
    "ecg_transformer",
    modality="ecg",
    input_kind="signal",
    input_shape={"leads": 12, "patch": 50},
    description="small transformer over ECG patches (all leads per token), lead-mask embedding, CLS pooling",
)
def _build_ecg_transformer(
    *,
    leads: int = 12,
    patch: int = 50,
    pretrained_path: str | os.PathLike | None = None,
    **kwargs: Any,
) -> ECGTransformer:
    model = ECGTransformer(int(leads), int(patch), **kwargs)
    return _finish(model, leads, pretrained_path, patch=int(patch))
