"""Image encoders trainable from scratch (``cnn_small``, ``vit_tiny``) and ResNet families.

``cnn_small`` and ``vit_tiny`` are plain PyTorch, CPU friendly at 64-112 px tiles.
``torchvision:<resnet18|resnet34|resnet50|resnet101|resnet152>`` and
``monai:<resnet10|resnet18|resnet34|resnet50>`` import their library inside the builder.
All take float images ``[B, C, H, W]`` already normalised with ``spec.mean``/``spec.std``
(MONAI with ``spatial_dims=3``: volumes ``[B, C, D, H, W]``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from biomodal._lazy import import_optional
from biomodal.errors import ConfigError
from biomodal.nn.registry import register_encoder
from biomodal.nn.timm_encoders import IMAGENET_MEAN, IMAGENET_STD, load_checked, load_state_dict_file

__all__ = ["SmallCNN", "TinyViT"]

_TV_RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
_MONAI_RESNETS = ("resnet10", "resnet18", "resnet34", "resnet50")


def _norm2d(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(min(8, channels), channels)
    raise ConfigError(f"cnn_small: norm={kind!r} not in ('batch', 'group')")


class SmallCNN(nn.Module):
    """A small VGG-style conv net: per block two 3x3 convs + norm + ReLU, then 2x downsampling.

    Parameters
    ----------
    in_chans
        Input channels.
    channels
        Width of each block; ``len(channels)`` blocks halve the resolution each.
    norm
        ``"batch"`` (BatchNorm) or ``"group"`` (GroupNorm, batch-size independent).
    out_dim
        Add a final linear projection to this width (``None``: ``channels[-1]``).
    dropout
        Dropout before the optional projection.
    """

    def __init__(
        self,
        in_chans: int = 3,
        channels: tuple[int, ...] = (32, 64, 128, 256),
        norm: str = "batch",
        out_dim: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        blocks = []
        prev = in_chans
        for width in channels:
            blocks.append(
                nn.Sequential(
                    nn.Conv2d(prev, width, 3, padding=1, bias=False),
                    _norm2d(norm, width),
                    nn.ReLU(inplace=True),
                    nn.Conv2d(width, width, 3, padding=1, bias=False),
                    _norm2d(norm, width),
                    nn.ReLU(inplace=True),
                    nn.MaxPool2d(2),
                )
            )
            prev = width
        self.blocks = nn.Sequential(*blocks)
        self.drop = nn.Dropout(dropout)
        self.proj = nn.Linear(prev, out_dim) if out_dim else nn.Identity()
        self.out_dim = int(out_dim or prev)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Features ``[B, out_dim]`` from images ``[B, C, H, W]`` (global average pooled)."""
        feats = self.blocks(x).mean(dim=(2, 3))
        return self.proj(self.drop(feats))


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        if dim % heads:
            raise ConfigError(f"vit_tiny: dim={dim} is not divisible by heads={heads}")
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = _Attention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TinyViT(nn.Module):
    """A small pre-norm Vision Transformer with a class token (plain PyTorch).

    Attention uses fused ``qkv``/``proj`` linears named like timm's, so
    :func:`biomodal.nn.finetune.apply_lora` and ``unfreeze_last`` treat it like a timm ViT.
    Position embeddings are interpolated (bicubic) when the input size differs from ``img_size``.

    Parameters
    ----------
    img_size, patch_size, in_chans
        Tile size the position embeddings are made for, patch size, input channels.
    dim, depth, heads, mlp_ratio, dropout
        Transformer width, number of blocks, attention heads, MLP expansion, dropout.
    pool
        ``"cls"`` (class token) or ``"mean"`` (mean of patch tokens).
    """

    def __init__(
        self,
        img_size: int = 112,
        patch_size: int = 16,
        in_chans: int = 3,
        dim: int = 192,
        depth: int = 4,
        heads: int = 3,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        pool: str = "cls",
    ) -> None:
        super().__init__()
        if img_size % patch_size:
            raise ConfigError(f"vit_tiny: img_size={img_size} is not a multiple of patch_size={patch_size}")
        if pool not in ("cls", "mean"):
            raise ConfigError(f"vit_tiny: pool={pool!r} not in ('cls', 'mean')")
        self.patch_size = patch_size
        self.grid = img_size // patch_size
        self.pool = pool
        self.patch_embed = nn.Conv2d(in_chans, dim, patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, self.grid * self.grid + 1, dim) * 0.02)
        self.blocks = nn.ModuleList(_Block(dim, heads, mlp_ratio, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.out_dim = dim

    def _pos(self, h: int, w: int) -> torch.Tensor:
        if h == w == self.grid:
            return self.pos_embed
        cls, grid = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        d = grid.shape[-1]
        grid = grid.reshape(1, self.grid, self.grid, d).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False)
        return torch.cat([cls, grid.permute(0, 2, 3, 1).reshape(1, h * w, d)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Features ``[B, dim]`` from images ``[B, C, H, W]`` (H, W multiples of the patch size)."""
        if x.shape[-1] % self.patch_size or x.shape[-2] % self.patch_size:
            raise ConfigError(
                f"vit_tiny: image size {tuple(x.shape[-2:])} is not a multiple of {self.patch_size}"
            )
        tokens = self.patch_embed(x)
        h, w = tokens.shape[-2:]
        tokens = tokens.flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), tokens], dim=1) + self._pos(h, w)
        for block in self.blocks:
            tokens = block(tokens)
        tokens = self.norm(tokens)
        return tokens[:, 0] if self.pool == "cls" else tokens[:, 1:].mean(dim=1)


def _maybe_load(
    module: nn.Module,
    pretrained_path: str | os.PathLike | None,
    strict: bool = True,
    ignore: tuple[str, ...] = (),
) -> str | None:
    if pretrained_path is None:
        return None
    state = load_state_dict_file(pretrained_path)
    load_checked(module, state, source=str(pretrained_path), strict=strict, ignore_prefixes=ignore)
    return str(Path(pretrained_path).expanduser().resolve())


@register_encoder(
    "cnn_small",
    modality="histology",
    input_kind="image",
    input_shape={"tile_px": 112, "in_chans": 3},
    description="small conv net trained from scratch (CPU friendly, 64-112 px tiles)",
)
def _build_cnn_small(
    *,
    in_chans: int = 3,
    channels: tuple[int, ...] | list[int] = (32, 64, 128, 256),
    norm: str = "batch",
    out_dim: int | None = None,
    dropout: float = 0.0,
    tile_px: int = 112,
    pretrained_path: str | os.PathLike | None = None,
) -> SmallCNN:
    model = SmallCNN(in_chans, tuple(int(c) for c in channels), norm, out_dim, dropout)
    weights = _maybe_load(model, pretrained_path)
    model.spec_updates = {"input_shape": {"tile_px": tile_px, "in_chans": in_chans}, "weights": weights}
    return model


@register_encoder(
    "vit_tiny",
    modality="histology",
    input_kind="image",
    input_shape={"tile_px": 112, "in_chans": 3},
    description="small ViT (dim 192, 4 blocks, patch 16) trained from scratch, plain PyTorch",
)
def _build_vit_tiny(
    *,
    img_size: int = 112,
    patch_size: int = 16,
    in_chans: int = 3,
    dim: int = 192,
    depth: int = 4,
    heads: int = 3,
    mlp_ratio: float = 4.0,
    dropout: float = 0.0,
    pool: str = "cls",
    pretrained_path: str | os.PathLike | None = None,
) -> TinyViT:
    model = TinyViT(img_size, patch_size, in_chans, dim, depth, heads, mlp_ratio, dropout, pool)
    weights = _maybe_load(model, pretrained_path)
    model.spec_updates = {"input_shape": {"tile_px": img_size, "in_chans": in_chans}, "weights": weights}
    return model


class _FeatureWrapper(nn.Module):
    """Hold a backbone whose classifier was removed; flatten its output to ``[B, out_dim]``."""

    def __init__(self, model: nn.Module, out_dim: int) -> None:
        super().__init__()
        self.model = model
        self.out_dim = int(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Features ``[B, out_dim]``."""
        return self.model(x).flatten(1)


@register_encoder(
    "torchvision",
    family=True,
    modality="histology",
    input_kind="image",
    input_shape={"tile_px": 224, "in_chans": 3},
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    description=f"torchvision ResNets {_TV_RESNETS}; weights=None, local path or enum name",
)
def _build_torchvision(
    arch: str,
    *,
    weights: str | os.PathLike | None = None,
    in_chans: int = 3,
    strict: bool = True,
) -> _FeatureWrapper:
    """Build a torchvision ResNet without its classifier.

    ``weights``: ``None`` (random), a local state-dict path, or a torchvision enum name such as
    ``"IMAGENET1K_V2"``/``"DEFAULT"`` (downloads; needs network).
    """
    if arch not in _TV_RESNETS:
        raise ConfigError(f"unknown torchvision encoder {arch!r}; available: {', '.join(_TV_RESNETS)}")
    models = import_optional("torchvision.models", "histology", package="torchvision")
    source: str | None = None
    is_path = weights is not None and (os.sep in str(weights) or Path(str(weights)).suffix != "")
    if weights is not None and not is_path:
        model = getattr(models, arch)(weights=str(weights))  # online torchvision weights
        source = f"torchvision:{arch}.{weights}"
    else:
        model = getattr(models, arch)(weights=None)
    if in_chans != 3:
        model.conv1 = nn.Conv2d(in_chans, 64, kernel_size=7, stride=2, padding=3, bias=False)
    width = model.fc.in_features
    model.fc = nn.Identity()
    if is_path:
        source = _maybe_load(model, weights, strict=strict, ignore=("fc.",))
    enc = _FeatureWrapper(model, width)
    enc.spec_updates = {"input_shape": {"tile_px": 224, "in_chans": in_chans}, "weights": source}
    return enc


@register_encoder(
    "monai",
    family=True,
    modality="histology",
    input_kind="image",
    input_shape={"in_chans": 3},
    description=f"MONAI ResNets {_MONAI_RESNETS}, 2-D or 3-D (spatial_dims=3 for volumes)",
)
def _build_monai(
    arch: str,
    *,
    spatial_dims: int = 2,
    in_chans: int = 3,
    pretrained_path: str | os.PathLike | None = None,
    strict: bool = True,
) -> _FeatureWrapper:
    if arch not in _MONAI_RESNETS:
        raise ConfigError(f"unknown monai encoder {arch!r}; available: {', '.join(_MONAI_RESNETS)}")
    if spatial_dims not in (2, 3):
        raise ConfigError(f"monai:{arch}: spatial_dims={spatial_dims} must be 2 or 3")
    nets = import_optional("monai.networks.nets", "clinical", package="monai")
    model = getattr(nets, arch)(spatial_dims=spatial_dims, n_input_channels=in_chans, feed_forward=False)
    with torch.no_grad():
        shape = (1, in_chans) + (32,) * spatial_dims
        was = model.training
        model.eval()
        width = model(torch.zeros(shape)).flatten(1).shape[1]
        model.train(was)
    weights = _maybe_load(model, pretrained_path, strict=strict, ignore=("fc.",))
    enc = _FeatureWrapper(model, width)
    updates: dict[str, Any] = {
        "input_shape": {"in_chans": in_chans, "spatial_dims": spatial_dims},
        "weights": weights,
    }
    if spatial_dims == 3:
        updates.update(input_kind="volume", modality="volume")
    enc.spec_updates = updates
    return enc
